import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.evaluation.evaluate import EvalResult
from workbench.evaluation.memorisation import (
    embed,
    interpolate_weights,
    iou_summary,
    max_iou_to,
    nearest_neighbours,
    novelty_frame,
    novelty_matched_accuracy,
    pairwise_distances,
    wrong_iou,
)


def _res(wrong_rows, acc=None):
    w = torch.tensor(wrong_rows, dtype=torch.bool)
    targets = torch.zeros(w.shape[1], dtype=torch.long)
    preds = w.long()  # predicting 1 where wrong, 0 (the target) where right
    a = np.asarray(acc if acc is not None else 100 * (1 - w.float().mean(1)).numpy(), dtype=float)
    return EvalResult(a, np.zeros(len(a)), preds, targets)


@given(st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=5),
       st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_wrong_iou_matches_set_arithmetic(a, b):
    m = wrong_iou(_res(a), _res(b))
    for i, ra in enumerate(a):
        for j, rb in enumerate(b):
            sa = {k for k, v in enumerate(ra) if v}
            sb = {k for k, v in enumerate(rb) if v}
            expected = len(sa & sb) / len(sa | sb) if sa | sb else 1.0
            assert m[i, j].item() == pytest.approx(expected)


def test_nearest_other_original_and_summary():
    orig = _res([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]])
    gen = _res([[1, 1, 0, 0], [0, 1, 1, 0]])
    nn = max_iou_to(orig, orig, exclude_self=True)
    assert nn.tolist() == [1.0, 1.0, 0.0]
    s = iou_summary(orig, {"generated": gen})
    assert s.loc["generated", "max_iou_to_original_median"] == pytest.approx((1.0 + 1 / 3) / 2)
    assert s.loc["original", "iou_within"] == pytest.approx((1 + 0 + 0) * 2 / 6)


def test_exact_distances_where_matmul_mode_fails():
    base = torch.randn(1, 500, dtype=torch.float64) * 100
    close = base + 1e-7 * torch.randn(3, 500, dtype=torch.float64)
    d = pairwise_distances(close.float(), close.float())
    exact = torch.sqrt(((close.float().double()[:, None] - close.float().double()[None]) ** 2).sum(-1))
    assert torch.allclose(d, exact)
    dist, idx = nearest_neighbours(close, close, exclude_self=True)
    assert (dist > 0).all() and (idx != torch.arange(3)).all()
    cos = pairwise_distances(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "cosine")
    assert cos.tolist() == [[0.0, 1.0]]


def test_novelty_frame_and_matched_accuracy():
    ov = torch.randn(3, 5)
    orig = _res([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], acc=[50, 50, 50])
    gen = _res([[1, 0, 0, 0], [1, 1, 0, 0]], acc=[75, 50])
    f = novelty_frame(ov, orig, {"generated": (torch.randn(2, 5), gen)})
    assert set(f["method"]) == {"original", "generated"} and len(f) == 5
    table, thr = novelty_matched_accuracy(f)
    assert thr == 1.0
    table, _ = novelty_matched_accuracy(f, threshold=0.6)
    assert table.loc["generated", "n_novel"] == 1 and table.loc["generated", "novel_mean_accuracy"] == 75


def test_interpolation_endpoints_and_embeddings():
    v1, v2 = torch.zeros(4), torch.ones(4)
    v = interpolate_weights(v1, v2, [0.0, 0.25, 1.0])
    assert torch.equal(v[0], v1) and torch.equal(v[2], v2) and torch.allclose(v[1], torch.full((4,), 0.25))
    groups = {"a": torch.randn(20, 6), "b": torch.randn(10, 6) + 3}
    for method in ("pca", "tsne"):
        e = embed(groups, method=method, seed=0)
        assert list(e["group"].value_counts().sort_index()) == [20, 10] and np.isfinite(e[["x", "y"]]).all().all()
    assert embed(groups, method="tsne", seed=0).equals(embed(groups, method="tsne", seed=0))
    with pytest.raises(ValueError, match="unknown embedding"):
        embed(groups, method="mds")


@pytest.fixture(scope="module")
def ci_pdiff(tmp_path_factory):
    from workbench.app.presets import load_preset
    from workbench.generator.latent_diffusion import fit_or_load
    from workbench.zoo import collect

    root = tmp_path_factory.mktemp("analysis")
    p = load_preset("ci")
    zoo = collect(p.zoo("mlp_dense"), root / "zoo", progress=False)
    return zoo, fit_or_load(zoo, p.pdiff_config(), root / "gen", progress=False), p, root


def test_memorisation_analysis_and_reading(ci_pdiff):
    from workbench.evaluation.memorisation import memorisation_analysis, reading

    zoo, gen, _, _ = ci_pdiff
    a = memorisation_analysis(zoo, gen, n_samples=12, seed=0)
    assert set(a.iou.index) == {"original", "generated", "noise", "gaussian", "finetuned"}
    assert 0.0 <= a.iou["iou_within"].min() and a.iou["iou_within"].max() <= 1.0
    text = reading(a)
    assert "median max-IoU" in text and "L2" in text
    assert a.l2_nearest_median["original"] > 0  # exact distances: adjacent checkpoints are not at distance 0


def test_interpolation_widget_headless(ci_pdiff):
    from workbench.app.widgets import InterpolationApp

    zoo, gen, _, _ = ci_pdiff
    app = InterpolationApp(zoo, zoo.vectors()[0], zoo.vectors()[-1], generator=gen, n_examples=5)
    app.lam.value = 0.0  # the slider's observer runs the callback
    assert app.accuracy == pytest.approx(zoo.accuracies()[0])
    app.mode.value = "latent"
    t = app.run()
    assert list(t.columns) == ["label", "prediction", "correct"] and len(t) == 5
    # the accuracy-vs-λ curve with the current λ marked, and the test digits with their predictions
    fig = app.figure()
    assert len(fig.data[0].x) == 21 and fig.data[0].y[0] == pytest.approx(app.curve("latent")[0])  # the space shown
    assert list(fig.data[1].x) == [app.lam.value] and fig.data[1].y[0] == pytest.approx(app.accuracy)
    assert app.digits().data[0].type == "image" and len(app.out.outputs) == 3
    assert app.curve("weights")[0] == pytest.approx(zoo.accuracies()[0])  # λ = 0 is the first member
    assert not app.lam.continuous_update  # evaluates on release, not on every drag step


def test_ablation_tables(ci_pdiff):
    from workbench.systems.pdiff.ablations import noise_generation_ablation, training_size_ablation

    zoo, _, p, root = ci_pdiff
    k = training_size_ablation(zoo, p.pdiff_config(), ks=(1, 10), n_samples=4, steps=(5, 5),
                               cache_dir=root / "abl")
    assert list(k.index) == [1, 10] and {"generated_mean", "max_iou_to_original_median"} <= set(k.columns)
    again = training_size_ablation(zoo, p.pdiff_config(), ks=(1, 10), n_samples=4, steps=(5, 5),
                                   cache_dir=root / "abl")
    pd.testing.assert_frame_equal(k, again)  # cached generators give the same table
    n = noise_generation_ablation(zoo, p.pdiff_config(), n_samples=4, steps=(5, 5), cache_dir=root / "abl")
    assert list(n.index) == ["none", "input only", "latent only", "both"]
    assert n.loc["none", "input_noise"] == 0 and n.loc["both", "latent_noise"] == 0.1
