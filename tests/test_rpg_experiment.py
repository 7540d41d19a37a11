"""RPG's experiments on the ci preset: every figure of ``bench rpg`` is produced, a second run loads instead of
training, and the scale curve measures both generators in budgeted children (p-diff failing cleanly)."""

import math

import pandas as pd
import pytest
import torch

from workbench.app.bench import BENCHMARKS
from workbench.app.presets import load_preset
from workbench.app.widgets import TaskCodeApp
from workbench.core import train_loop
from workbench.generator.latent_diffusion import PDiffConfig
from workbench.systems.rpg.experiment import (
    PDIFF_ALIGNED,
    RPG_NO_STATES,
    RPG_STATES,
    rpg_experiment,
    rpg_reading,
    seeds_overview,
)
from workbench.systems.rpg.generator import RPGConfig
from workbench.systems.rpg.scale import scale_curve, synthetic_spec, write_synthetic_zoo

KEYS = ["seeds_original_mean", "seeds_generated_mean", "seeds_generated_no_permutation_state_mean",
        "seeds_selected_by_train_test_acc", "seeds_iou_generated_to_nearest_original_median",
        "seeds_iou_original_to_nearest_other_median", "unseen_codes", "unseen_generated_mean", "unseen_trained_mean",
        "unseen_nearest_code_mean", "unseen_regressor_mean", "seen_generated_mean", "seen_trained_mean"]


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rpg")
    inputs = load_preset("ci").rpg_inputs()
    return root, inputs, rpg_experiment(**inputs, run_dir=root, parts=("seeds", "tasks"))


def test_every_figure_is_there(ci_run):
    _, inputs, res = ci_run
    s = res.summary
    for k in KEYS:
        assert k in s and math.isfinite(s[k]), k
    assert s["unseen_codes"] == inputs["task_zoo"].n_unseen
    t = res.seeds.result.table
    for name in (RPG_STATES, RPG_NO_STATES, PDIFF_ALIGNED):
        assert f"generated ({name})" in t.index
        assert name in res.seeds.aligned_novelty.index
    assert res.seeds.aligned_novelty.loc["original", "ratio_to_originals"] == 1.0
    assert set(res.tasks.table["seen"]) == {True, False}
    assert (res.tasks.table["nearest_code_hamming"] >= 1).all()  # never the code itself
    assert "rpg" in BENCHMARKS


def test_notebook_03s_mlp_seeds_zoo_is_the_second_setting(ci_run):
    _, inputs, res = ci_run
    assert list(res.other_seeds) == ["mlp_seeds"] == list(inputs["other_seeds"])
    run = res.other_seeds["mlp_seeds"]
    assert len(run.zoo) == inputs["other_seeds"]["mlp_seeds"]["zoo"].n_members
    for name in (RPG_STATES, RPG_NO_STATES, PDIFF_ALIGNED):
        assert f"generated ({name})" in run.result.table.index
    over = seeds_overview(res)
    assert list(over.index) == [res.seeds.key, "mlp_seeds"]
    assert over.loc["mlp_seeds", "params"] == run.zoo.spec.numel
    assert over.loc["mlp_seeds", "original_mean"] == res.summary["other_seeds"]["mlp_seeds"]["original_mean"]
    assert any("mlp_seeds" in line for line in rpg_reading(res))
    # each zoo's generators in its own folder: the two aligned p-diff generators must not overwrite each other
    assert run.generators[PDIFF_ALIGNED] is not res.seeds.generators[PDIFF_ALIGNED]


def test_a_second_run_loads_everything(ci_run, monkeypatch):
    root, inputs, res = ci_run

    def refuse(*a, **k):
        raise AssertionError("a resumed experiment must not train")

    monkeypatch.setattr(train_loop, "train_module", refuse)
    monkeypatch.setattr("workbench.systems.rpg.generator.train_module", refuse)
    again = rpg_experiment(**inputs, run_dir=root, parts=("seeds", "tasks"))
    pd.testing.assert_frame_equal(again.tasks.table, res.tasks.table)
    assert again.summary["seeds_generated_mean"] == res.summary["seeds_generated_mean"]


def test_synthetic_spec_has_the_size_asked_for():
    for p in (2, 17, 1000, 10_001, 123_457):
        assert synthetic_spec(p).numel == p


def test_scale_curve_measures_both_and_pdiff_fails_cleanly(tmp_path):
    rpg = RPGConfig.from_dict({"token_size": 32, "window": 16, "sample_steps": 2,
                               "sequence": {"kind": "gru", "d_model": 16, "n_layers": 1},
                               "denoiser_hidden": 16, "denoiser_depth": 1})
    pdiff = PDiffConfig.from_dict({"ae_channels": [8, 8], "unet_channels": 8})
    # Measured here (MiB beyond the child's baseline): p-diff 183 at 2k and 1,903 at 1M, RPG 166 at 2k and 193 at 1M;
    # a 600 MiB budget sits ~3x from each, so the test does not hang on one machine's allocator or thread count
    curve = scale_curve([2_000, 1_000_000], rpg, pdiff, tmp_path, n_members=3, steps=1, budget_mb=600, timeout_s=300,
                        threads=1)
    r = curve.set_index(["generator", "params"])
    errors = dict(zip(curve["generator"] + "@" + curve["params"].astype(str), curve["error"]))
    assert r.loc[("rpg", 2_000), "ok"] and r.loc[("rpg", 1_000_000), "ok"], errors
    assert r.loc[("pdiff", 2_000), "ok"], errors
    assert not r.loc[("pdiff", 1_000_000), "ok"] and r.loc[("pdiff", 1_000_000), "exceeded_budget"], errors
    assert r.loc[("rpg", 1_000_000), "peak_rss_mb"] > 0
    assert not list(tmp_path.glob("*.npy"))  # the synthetic zoos are removed after use


def test_synthetic_zoo_is_streamed_to_disk(tmp_path):
    spec = synthetic_spec(5000)
    src = write_synthetic_zoo(tmp_path / "z.npy", spec, 3, seed=1)
    v = src.read([0, 1, 2], 0, spec.numel)
    assert v.shape == (3, 5000) and torch.isfinite(v).all()
    assert (v[0] - v[1]).abs().max() < v[0].abs().max()  # members are perturbations of one base


def test_ablations_reading_and_the_task_code_widget(ci_run):
    root, inputs, res = ci_run
    full = rpg_experiment(**inputs, run_dir=root, parts=("tasks", "ablations"))
    a = full.ablations
    assert list(a.index) == ["full recipe", *inputs["ablations"]["variants"]]
    assert a["unseen_generated_mean"].between(0, 100).all()
    lines = rpg_reading(res)
    assert any("Unseen task codes" in line for line in lines) and any("independent seeds" in line for line in lines)
    app = TaskCodeApp(full.tasks, n=2)
    app.widget()
    assert app.result["code"] == full.tasks.zoo.names[full.tasks.zoo.unseen_ids()[0]]
    assert app.result["status"] == "held out" and app.table.shape[0] == 10
    assert "trained on this code" in app.result["accuracy"].index
    for d, b in enumerate(app.bits):  # a code no zoo member has: no "trained" column, still a nearest code
        b.value = d in (0, 3, 4)
    assert "another code" in app.status.value  # the figure is marked stale until the button runs
    app.run()
    assert app.result["code"] == "1001100000" and app.result["status"] in ("new", "seen", "held out")
    assert app.result["hamming"] >= 0
    for b in app.bits:
        b.value = False
    app.run()
    assert app.error is not None and "every digit the same class" in app.error


def test_capacity_study_fits_both_variants_per_k(tmp_path):
    inputs = load_preset("ci").rpg_inputs()
    res = rpg_experiment(**inputs, run_dir=tmp_path, parts=("capacity",))
    c = res.capacity
    assert list(c.index) == inputs["capacity"]["ks"]
    assert (c["numbers_to_store"] == c.index * res.summary["capacity"][1]["numbers_to_store"]).all()
    # the shared network is the same for every K; only the table of K learned states grows
    assert c["generator_params"].nunique() == 1 and (c["generator_params"] > 0).all()
    assert (c["state_params"] == c.index * inputs["config"].sequence.d_model).all()
    for col in ("original_mean", "states_mean", "no_states_mean"):
        assert c[col].between(0, 100).all()
    assert (c["states_rel_l2_to_own_seed"] > 0).all()
    assert any(line.startswith("Seeds one generator holds") for line in rpg_reading(res))
    with pytest.raises(ValueError, match="K=99 seeds"):
        rpg_experiment(**{**inputs, "capacity": {"ks": [99], "steps": 1}}, run_dir=tmp_path, parts=("capacity",))
