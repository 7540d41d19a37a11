"""Style LoRA zoos, style metrics, the style-image-conditioned generator, interpolation and the slider app."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.core.train_loop import LoopConfig
from workbench.generator.latent_diffusion import PDiffConfig
from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig
from workbench.systems.cond_pdiff.style.evaluation import (
    ContinuousStyles,
    continuous_generalisation,
    interpolate_style_latent,
    interpolation_frame,
    monotonic_fraction,
    style_evaluation,
    style_trajectory,
    summary,
)
from workbench.systems.cond_pdiff.style.features import gram_distance, psnr, ssim
from workbench.systems.cond_pdiff.style.images import ALGORITHMIC_STYLES, style_image, style_target
from workbench.systems.cond_pdiff.style.network import StyleNetConfig
from workbench.systems.cond_pdiff.style.zoo import StyleZoo, StyleZooConfig, collect_style_zoo
from workbench.zoo.protocol import check_zoo

TINY = StyleZooConfig(name="tiny", styles=("sepia", "negative", "gram:stripes"), base=StyleNetConfig(channels=8, depth=4),
                      n_digits=40, n_eval=2, base_steps=40, steps=12, keep_last=4, lr=0.01, content_weight=0.005,
                      gram_weight=1.0)


def _gen_config(normaliser="position"):
    return CondPDiffConfig(pdiff=PDiffConfig(normaliser=normaliser, autoencoder="pca", pca_components=4,
                                             latent_channels=1, unet_channels=8, unet_mults=(1, 2),
                                             diffusion_train=LoopConfig(steps=20, batch_size=8, lr=1e-3)),
                           condition="style_image", cond_dropout=0.1)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return collect_style_zoo(TINY, tmp_path_factory.mktemp("styles") / "zoo", progress=False)


@pytest.fixture(scope="module")
def gen(zoo):
    return CondPDiff(_gen_config()).fit(zoo, progress=False)


# -- filters and metrics ---------------------------------------------------------------------------------------
def test_algorithmic_targets_are_exact_images_in_range():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for name in ALGORITHMIC_STYLES:
        y = style_target(name, x)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1, name
    assert torch.allclose(style_target("negative", style_target("negative", x)), x)
    assert len(torch.unique(style_target("posterise", x))) <= 4
    px = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(style_target("sepia", px).flatten(),
                          torch.tensor([0.393 * .5 + .769 * .4 + .189 * .3, 0.349 * .5 + .686 * .4 + .168 * .3,
                                        0.272 * .5 + .534 * .4 + .131 * .3]))
    with pytest.raises(ValueError, match="no algorithmic target"):
        style_target("gram:stripes", x)


@settings(max_examples=15, deadline=None)
@given(st.floats(0.01, 0.3), st.integers(0, 10_000))
def test_psnr_and_ssim_fall_with_noise(sigma, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 16, 16, generator=g)
    noisy = x + sigma * torch.randn(x.shape, generator=g)
    noisier = x + 2 * sigma * torch.randn(x.shape, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert (psnr(x, x) > 90).all()
    assert (psnr(x, noisy) > psnr(x, noisier)).all()
    assert (ssim(x, noisy) > ssim(x, noisier)).all()


def test_gram_distance_zero_to_itself_and_per_image_references(zoo):
    f = zoo.features()
    x = zoo.eval_content
    assert torch.allclose(gram_distance(f, x, x), torch.zeros(len(x)), atol=1e-5)
    one = gram_distance(f, x, style_image("gram:stripes", 32))
    assert one.shape == (len(x),) and (one > 0.1).all()


def test_config_round_trip_and_clear_errors():
    assert StyleZooConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown styles"):
        StyleZooConfig(styles=("sepia", "vangogh"))
    with pytest.raises(ValueError, match="keep_last"):
        StyleZooConfig(steps=5, keep_last=10)
    with pytest.raises(ValueError, match="unknown style zoo keys"):
        StyleZooConfig.from_dict({**TINY.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="shared_init"):
        StyleZooConfig(train_a=False, shared_init=False)


# -- the zoo -----------------------------------------------------------------------------------------------------
def test_zoo_layout_no_lora_and_apply(zoo):
    assert zoo.styles == list(TINY.styles) and len(zoo) == 3 * TINY.keep_last
    v = zoo.vectors()
    assert v.shape == (3 * TINY.keep_last, zoo.spec.numel) and torch.isfinite(v).all()
    # no-LoRA reproduces the base network exactly: B factors are zero, biases are the base biases
    from workbench.core.io import load_tensors
    from workbench.systems.cond_pdiff.style.network import StyleNet

    base = StyleNet(TINY.base)
    base.load_state_dict(load_tensors(zoo.root / "base.safetensors"))
    with torch.no_grad():
        expect = base(zoo.eval_content).clamp(0, 1)
    assert torch.allclose(zoo.apply(zoo.no_lora())[0], expect, atol=1e-6)
    # a fine-tuned sepia LoRA is closer to the sepia target than the base network
    t = zoo.target("sepia")
    assert psnr(zoo.apply(zoo.vectors(["sepia"])[-1:])[0], t).mean() > psnr(expect, t).mean()
    imgs = zoo.apply(v[:3])
    assert imgs.shape == (3, TINY.n_eval, 3, TINY.patch, TINY.patch)
    assert zoo.condition_images(["sepia", "gram:stripes"]).shape == (2, 3, TINY.patch, TINY.patch)
    with pytest.raises(ValueError, match="content images"):
        zoo.style_distance("sepia", imgs[0], zoo.eval_content[:1])


def test_collection_resumes_and_refuses_other_configs(zoo, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(zoo.root, root)
    before = StyleZoo(root).vectors(["negative"])
    (root / "styles" / "negative.safetensors").unlink()  # as if interrupted before this style finished
    again = collect_style_zoo(TINY, root, progress=False)
    assert torch.allclose(again.vectors(["negative"]), before, atol=1e-6)  # seeded: the same checkpoints
    assert torch.equal(again.vectors(["sepia"]), zoo.vectors(["sepia"]))
    with pytest.raises(ValueError, match="different configuration"):
        collect_style_zoo(StyleZooConfig(**{**TINY.__dict__, "steps": 13}), root, progress=False)
    with pytest.raises(FileNotFoundError, match="collect_style_zoo"):
        StyleZoo(tmp_path / "nothing")


# -- the conditional generator -----------------------------------------------------------------------------------
def test_style_image_generator_samples_saves_and_loads(zoo, gen, tmp_path):
    v = gen.sample("sepia", 3, seed=1, steps=10)
    assert v.shape == (3, zoo.spec.numel) and torch.isfinite(v).all()
    assert gen.seen_conditions.shape == (3, 1280)
    # the stored reference image of a seen style is its own nearest seen style
    v2, near = gen.sample_image(zoo.reference("negative"), 2, steps=10)
    assert near == "negative" and v2.shape == (2, zoo.spec.numel)
    with pytest.raises(ValueError, match="sample_image"):
        gen.sample("posterise", 1)
    gen.save(tmp_path / "g")
    back = CondPDiff.load(tmp_path / "g")
    assert torch.allclose(back.sample("sepia", 3, seed=1, steps=10), v, atol=1e-5)
    with pytest.raises(ValueError, match="image-conditioned"):
        CondPDiff(CondPDiffConfig(condition="one_hot")).sample_image(zoo.reference("sepia"))
    with pytest.raises(ValueError, match="RGB images"):
        gen.image_encoder.encode(torch.rand(2, 1, 8, 8))


def test_evaluation_table_and_summary(zoo, gen):
    res = style_evaluation(zoo, gen, n_samples=2, n_original=2, steps=10)
    assert set(res.table["method"]) == {"original", "soup", "generated", "no_lora"}
    assert res.wide("style_distance").shape == (3, 4)
    s = summary(res)
    assert set(s) == {"style_distance", "ssim_content", "psnr_content", "psnr_to_target"}
    # Gram styles have no exact target: PSNR to target is averaged over the algorithmic styles only
    assert np.isnan(res.table.loc[res.table["style"] == "gram:stripes", "psnr_to_target"]).all()
    assert np.isfinite(s["psnr_to_target"]["generated"])
    # no-LoRA keeps the content best (it is the identity-trained base network)
    assert s["ssim_content"]["no_lora"] > s["ssim_content"]["original"]


# -- interpolation -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normaliser", ["position", "task"])
def test_latent_interpolation_ends_are_reconstructions(zoo, normaliser):
    g = CondPDiff(_gen_config(normaliser)).fit(zoo, progress=False)
    a, b = zoo.vectors(["sepia"])[-1], zoo.vectors(["negative"])[-1]
    path = interpolate_style_latent(g, a, b, [0.0, 0.5, 1.0], ("sepia", "negative"))
    rec = torch.cat([g.decode(g.encode(v[None], s), s) for v, s in ((a, "sepia"), (b, "negative"))])
    assert torch.allclose(path[0], rec[0], atol=1e-4) and torch.allclose(path[2], rec[1], atol=1e-4)
    if normaliser == "task":
        with pytest.raises(ValueError, match="names"):
            interpolate_style_latent(g, a, b, [0.5])


def test_monotonic_fraction_counts_curves():
    lam = np.linspace(0, 1, 5)
    rows = [{"space": "weight", "pair": "a → b", "content": 0, "lambda": x, "d_first": x, "d_second": 1 - x}
            for x in lam]
    rows += [{"space": "weight", "pair": "a → b", "content": 1, "lambda": x, "d_first": x, "d_second": abs(x - .5)}
             for x in lam]
    rows += [{"space": "latent", "pair": "a → b", "content": 0, "lambda": x, "d_first": x + 1e-4 * np.sin(9 * x),
              "d_second": 1 - x} for x in lam]
    frame = pd.DataFrame(rows)
    m = monotonic_fraction(frame)
    assert m["weight"] == 0.5 and m["latent"] == 1.0  # jitter under the tolerance does not break a curve
    frame["e_first"], frame["e_second"] = frame["lambda"], 1 - frame["lambda"]
    assert (monotonic_fraction(frame, reference="ends") == 1.0).all()
    per_pair = monotonic_fraction(frame, by=("space", "pair"))
    assert per_pair.loc[("weight", "a → b")] == 0.5


def test_interpolation_frame_and_trajectory(zoo, gen):
    ends = {s: zoo.vectors([s])[-1] for s in zoo.styles}
    frame, images = interpolation_frame(zoo, gen, [("sepia", "negative")], ends, [0.0, 0.5, 1.0])
    assert len(frame) == 2 * 3 * TINY.n_eval and images[("sepia → negative", "weight")].shape[:2] == (3, TINY.n_eval)
    w = frame[frame["space"] == "weight"].groupby("lambda")[["d_first", "d_second"]].mean()
    assert w["d_first"].iloc[0] < w["d_first"].iloc[-1] and w["d_second"].iloc[0] > w["d_second"].iloc[-1]
    e = frame[frame["space"] == "weight"].groupby("lambda")[["e_first", "e_second"]].mean()
    assert e["e_first"].iloc[0] < 1e-5 and e["e_second"].iloc[-1] < 1e-5  # the ends are their own references
    traj, oxy, per_step = style_trajectory(zoo, gen, "sepia", n=2, steps=10, every=3)
    assert set(traj["seed"]) == {0, 1} and oxy.shape == (TINY.keep_last, 2) and per_step.index[-1] == 10


def test_continuous_styles_and_generalisation(zoo):
    cs = ContinuousStyles(zoo, ("sepia", "negative"), [0.0, 0.5, 1.0], per_lambda=3, heldout=[0.5])
    check_zoo(cs)  # the zoo interface, explicitly (no attribute forwarding)
    assert [(c.name, c.seen) for c in cs.conditions] == [("λ=0.00", True), ("λ=1.00", True), ("λ=0.50", False)]
    assert torch.equal(cs.conditions[2].image, cs.condition_images(["λ=0.50"])[0])
    assert torch.equal(cs.vectors(), cs.vectors(["λ=0.00", "λ=1.00"]))
    # the soup is the float64 weight average
    assert torch.equal(cs.soup("λ=0.50"), zoo.vectors(["sepia"])[-3:].mul(0.5).add(
        zoo.vectors(["negative"])[-3:].mul(0.5)).double().mean(0).float())
    assert torch.allclose(cs.vectors(["λ=0.00"]), zoo.vectors(["sepia"])[-3:])
    assert torch.allclose(cs.vectors(["λ=1.00"]), zoo.vectors(["negative"])[-3:])
    table, _ = continuous_generalisation(zoo, _gen_config(), pair=("sepia", "negative"),
                                         lambdas=[0.0, 0.25, 0.5, 0.75, 1.0], heldout=[0.5], per_lambda=3,
                                         n_samples=2, steps=10)
    assert list(table["split"]).count("held out") == 1
    assert table.loc[0.5, "nearest_train_lambda"] == 0.25 and (table["nearest_train"] >= 0).all()
    with pytest.raises(ValueError, match="not on the grid"):
        continuous_generalisation(zoo, _gen_config(), pair=("sepia", "negative"), lambdas=[0.0, 1.0],
                                  heldout=[0.3])


# -- the slider app, headless ---------------------------------------------------------------------------------------
def test_style_interpolation_app_redraws_headlessly(zoo, gen):
    from workbench.app.widgets import StyleInterpolationApp

    app = StyleInterpolationApp(gen, zoo, first="sepia", second="negative")
    app.lam.value = 0.0  # observers fire run(): compute + draw into the Output, no frontend needed
    t0 = app.table.copy()
    app.lam.value = 1.0
    t1 = app.table
    assert app.images.shape == (3, 3, TINY.patch, TINY.patch)
    assert np.allclose(t0.iloc[1].to_numpy(), t0.iloc[0].to_numpy())  # λ = 0 is the first end
    assert np.allclose(t1.iloc[1].to_numpy(), t1.iloc[2].to_numpy())  # λ = 1 is the second end
    app.mode.value = "latent"
    app.content.value = 1
    app.second.value = "gram:stripes"
    assert "distance to gram:stripes" in app.table.columns
    assert app.figure().data[0].type == "image"
    assert len(app.out.outputs) == 2 and "gram:stripes" in app.status.value
    assert not app.lam.continuous_update and not app.content.continuous_update  # update on release
