"""The experiment functions of Cond P-Diff (notebook 05 / ``bench cond``) and of the style setting (notebook 06 /
``bench style``): the seed reaches every stream, seed 0 leaves the preset's configs as they are, and the preset
helpers give both callers the same inputs."""

from dataclasses import replace

import golden
import pytest
import torch

from workbench.app.presets import load_preset
from workbench.core.config import offset_seed
from workbench.core.paths import seeded_path
from workbench.core.train_loop import LoopConfig
from workbench.generator.latent_diffusion import PDiffConfig
from workbench.systems.cond_pdiff.evaluation import cond_evaluation, summary
from workbench.systems.cond_pdiff.experiment import cond_experiment, seeded_config
from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig


def test_seed_zero_leaves_configs_and_directories_alone(tmp_path):
    cfg = load_preset("ci").cond_config()
    zcfg = golden.TINY_LORA
    assert seeded_config(cfg, 0) is cfg and offset_seed(zcfg, 0) is zcfg and seeded_path(tmp_path / "z", 0) == \
        tmp_path / "z"
    s = seeded_config(cfg, 3)
    assert s.pdiff.diffusion_train.seed == cfg.pdiff.diffusion_train.seed + 3
    assert s.pdiff.ae_train.seed == cfg.pdiff.ae_train.seed + 3
    assert replace(s, pdiff=cfg.pdiff) == cfg  # nothing else moves
    assert offset_seed(zcfg, 3).seed == zcfg.seed + 3 and offset_seed(zcfg, 3).data_seed == zcfg.data_seed
    assert seeded_path(tmp_path / "z", 3) == tmp_path / "z_seed3"


def test_preset_inputs_are_the_benchmark_and_notebook_inputs():
    p = load_preset("ci")
    inputs = p.cond_inputs()
    assert inputs["zoo_config"] == p.lora_zoo("lora_digits") and inputs["config"] == p.cond_config()
    assert inputs["n_samples"] == p.generator_settings("cond_pdiff")["n_samples"] and inputs["ablation"]
    assert p.cond_inputs(p.bench["cond"])["n_samples"] == p.bench["cond"]["n_samples"]
    st = p.style_inputs()
    assert st["config"] == p.style_config() and st["settings"] is p.generator_settings("style")


TINY_COND = CondPDiffConfig(pdiff=PDiffConfig(normaliser="task", autoencoder="pca", pca_components=8,
                                              latent_channels=1, unet_channels=16,
                                              diffusion_train=LoopConfig(steps=40, batch_size=16, lr=2e-3)))


@pytest.mark.slow
def test_cond_experiment_equals_the_pipeline_and_seeds_move_it(tmp_path):
    cache = tmp_path / "cache"
    ex = cond_experiment(golden.TINY_LORA, TINY_COND, tmp_path / "zoo", tmp_path / "gen", n_samples=3,
                         cache_dir=cache)
    assert set(ex["seconds"]) == {"zoo", "fit", "evaluate", "total"} and ex["guidance"] is None
    # the same figures as the pipeline written out by hand (and the saved generator loads back unchanged)
    gen = CondPDiff.load(tmp_path / "gen", cache_dir=cache)
    assert summary(cond_evaluation(ex["zoo"], gen, n_samples=3)) == ex["summary"]
    again = cond_experiment(golden.TINY_LORA, TINY_COND, tmp_path / "zoo", tmp_path / "gen", n_samples=3,
                            cache_dir=cache)
    assert again["summary"] == ex["summary"]
    other = cond_experiment(golden.TINY_LORA, TINY_COND, tmp_path / "zoo", tmp_path / "gen", n_samples=3,
                            seed=1, cache_dir=cache)
    assert (tmp_path / "zoo_seed1").is_dir() and (tmp_path / "gen_seed1" / "cond_pdiff.json").exists()
    assert not torch.equal(other["zoo"].vectors(["even"]), ex["zoo"].vectors(["even"]))  # the zoo stream
    assert other["config"].pdiff.diffusion_train.seed == 1  # the training stream
    assert other["summary"] != ex["summary"]


@pytest.mark.slow
def test_ablation_fits_each_distinct_config_once_and_a_rerun_loads_everything(tmp_path, monkeypatch):
    from workbench.systems.cond_pdiff.evaluation import cond_ablation
    from workbench.systems.cond_pdiff.experiment import collect_task_zoo

    zoo = collect_task_zoo(golden.TINY_LORA, tmp_path / "zoo")
    per_task = len(zoo.vectors([zoo.conditions[0].name]))
    fits = []
    real_fit = CondPDiff.fit
    monkeypatch.setattr(CondPDiff, "fit", lambda self, *a, **k: fits.append(self.config) or real_fit(self, *a, **k))
    variants = {"default": {}, "same again": {"condition": TINY_COND.condition},
                f"last {per_task}": {"checkpoints": per_task}, "one-hot": {"condition": "one_hot"}}
    kw = {"n_samples": 2, "steps": 20, "cache_dir": tmp_path / "cache", "directory": tmp_path / "ab"}
    first = cond_ablation(zoo, TINY_COND, variants, **kw)
    assert len(fits) == 2  # the default, "same again" and "all checkpoints" are one configuration
    assert first.loc["default"].equals(first.loc["same again"]) and first.loc["default"].equals(
        first.loc[f"last {per_task}"])
    assert not first.loc["default"].equals(first.loc["one-hot"])
    assert len(list((tmp_path / "ab").glob("*/summary.json"))) == 2
    second = cond_ablation(zoo, TINY_COND, variants, **kw)
    assert len(fits) == 2  # loaded: nothing refitted, nothing re-evaluated
    assert second.equals(first)
    third = cond_ablation(zoo, TINY_COND, variants, **{**kw, "n_samples": 3})  # another setting: re-evaluated,
    assert len(fits) == 2 and not third.equals(first)  # but the saved generators are loaded


@pytest.mark.slow
def test_cached_evaluation_loads_what_it_computed_and_recomputes_a_damaged_one(tmp_path, monkeypatch):
    from workbench.systems.cond_pdiff import evaluation as cev
    from workbench.systems.cond_pdiff.experiment import collect_task_zoo

    zoo = collect_task_zoo(golden.TINY_LORA, tmp_path / "zoo")
    gen = CondPDiff(TINY_COND, cache_dir=tmp_path / "cache").fit(zoo, progress=False)
    calls = []
    real = cev.cond_evaluation
    monkeypatch.setattr(cev, "cond_evaluation", lambda *a, **k: calls.append(1) or real(*a, **k))
    d = tmp_path / "evaluation"
    first = cev.cached_cond_evaluation(d, zoo, gen, n_samples=2)
    again = cev.cached_cond_evaluation(d, zoo, gen, n_samples=2)
    assert len(calls) == 1
    assert again.seen.equals(first.seen) and list(again.samples) == list(first.samples)
    assert all(torch.equal(again.samples[k], first.samples[k]) for k in first.samples)
    assert summary(again) == summary(first)
    cev.cached_cond_evaluation(d, zoo, gen, n_samples=3)  # another setting: computed
    assert len(calls) == 2
    (d / "results.safetensors").write_bytes(b"damaged")
    healed = cev.cached_cond_evaluation(d, zoo, gen, n_samples=3)
    assert len(calls) == 3 and len(healed.samples) == len(first.samples)
