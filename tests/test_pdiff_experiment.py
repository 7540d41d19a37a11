"""The p-diff experiments shared by notebooks 02–04 and the benchmarks: seeds, resuming, the zoo interface."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.app.robustness.fixtures import DENSE, SEEDS
from workbench.core.params import ParamSpec
from workbench.core.train_loop import LoopConfig
from workbench.evaluation.tables import evaluation_table
from workbench.generator.latent_diffusion import PDiff, PDiffConfig
from workbench.nn.architectures import build_model
from workbench.systems.pdiff.experiment import (
    pdiff_experiment,
    sampler_arguments,
    seeded_name,
    seeded_pdiff_config,
    seeded_zoo_config,
    seeds_experiment,
)
from workbench.zoo.protocol import Condition

TINY = PDiffConfig(ae_channels=(8, 8), latent_channels=2, unet_channels=8, unet_mults=(1, 2),
                   ae_train=LoopConfig(steps=20, batch_size=6), diffusion_train=LoopConfig(steps=20, batch_size=6))


def test_seed_zero_changes_nothing_and_other_seeds_move_every_stream():
    assert seeded_zoo_config(DENSE, 0) is DENSE and seeded_pdiff_config(TINY, 0) is TINY
    assert seeded_name("mlp_dense", 0) == "mlp_dense" and seeded_name("mlp_dense", 2) == "mlp_dense_seed2"
    assert seeded_zoo_config(DENSE, 1).seed == DENSE.seed + 1
    moved = seeded_pdiff_config(TINY, 3)
    assert (moved.ae_train.seed, moved.diffusion_train.seed) == (TINY.ae_train.seed + 3, TINY.diffusion_train.seed + 3)
    # independent seeds: the members of two runs never share an initialisation seed
    members = [set(range(c.seed, c.seed + c.n_members)) for c in (seeded_zoo_config(SEEDS, s) for s in range(3))]
    assert not (members[0] & members[1]) and not (members[1] & members[2])


def test_sampler_names():
    assert sampler_arguments("ddpm") == {"sampler": "ddpm"}
    assert sampler_arguments("ddim-20") == {"sampler": "ddim", "steps": 20}
    assert sampler_arguments("ddim") == {"sampler": "ddim", "steps": None}
    for bad in ("ddpm-10", "ddim-x", "euler"):
        with pytest.raises(ValueError, match="unknown sampler"):
            sampler_arguments(bad)


class ArrayZoo:
    """A zoo of one's own: nothing but the members of the interface (no root, no config, no len)."""

    def __init__(self, vectors: torch.Tensor, model: torch.nn.Module, spec: ParamSpec) -> None:
        self._vectors, self._model, self.spec = vectors, model, spec

    @property
    def conditions(self) -> list[Condition]:
        return [Condition("mine")]

    def model(self) -> torch.nn.Module:
        return self._model

    def vectors(self, condition=None) -> torch.Tensor:
        return self._vectors

    def data(self, condition=None):
        raise NotImplementedError

    def accuracies(self, condition=None, split="test") -> np.ndarray:
        return np.zeros(len(self._vectors))


def test_fit_takes_any_zoo_of_the_interface_or_a_tensor():
    model = build_model(DENSE.arch, seed=0)
    spec = ParamSpec.select(model, ("fc3.*",))
    vectors = spec.flatten(model.state_dict())[None] + 0.01 * torch.randn(8, spec.numel, generator=torch.Generator()
                                                                         .manual_seed(0))
    from_zoo = PDiff(TINY).fit(ArrayZoo(vectors, model, spec), progress=False)
    from_tensor = PDiff(TINY).fit(vectors, progress=False)
    torch.testing.assert_close(from_zoo.sample(3, seed=1), from_tensor.sample(3, seed=1), rtol=0, atol=0)
    whole = ParamSpec.select(model)
    members = torch.stack([whole.flatten(build_model(DENSE.arch, seed=s).state_dict()) for s in range(4)])
    aligned = PDiff(replace(TINY, align="weight_matching", autoencoder="pca", denoiser="mlp", mlp_hidden=16)).fit(
        ArrayZoo(members, model, whole), progress=False)
    assert aligned.alignment is not None  # the zoo's model gave alignment its architecture


def test_fit_names_what_a_non_zoo_lacks():
    with pytest.raises(TypeError, match=r"zoo interface.*missing \['spec', 'conditions', 'model', 'data'"):
        PDiff(TINY).fit(type("Half", (), {"vectors": lambda self: torch.zeros(4, 3)})(), progress=False)
    with pytest.raises(TypeError, match="zoo interface"):
        evaluation_table(object(), {})


@pytest.mark.slow
def test_pdiff_experiment_resumes_and_seeds_move_samples(tmp_path):
    """Notebook and benchmark: the same function; a resumed run (generator loaded) gives the same figures."""
    kw = dict(n_samples=5, samplers=("ddim-10",), evaluate=False)
    first = pdiff_experiment("tiny", DENSE, TINY, tmp_path, **kw)
    again = pdiff_experiment("tiny", DENSE, TINY, tmp_path, **kw)
    assert first.directory == tmp_path / "generators" / "pdiff" / "tiny" and (first.directory / "pdiff.json").exists()
    assert torch.equal(first.samples["ddim-10"], again.samples["ddim-10"])
    np.testing.assert_array_equal(first.reconstruction.accuracy, again.reconstruction.accuracy)
    other = pdiff_experiment("tiny", DENSE, TINY, tmp_path, seed=1, **kw)
    assert other.zoo.root == tmp_path / "zoos" / "tiny_seed1" and other.zoo.config.seed == DENSE.seed + 1
    assert not torch.equal(other.zoo.vectors(), first.zoo.vectors())
    assert not torch.equal(other.samples["ddim-10"], first.samples["ddim-10"])
    # draw: the first n of a larger batch
    drawn = pdiff_experiment("tiny", DENSE, TINY, tmp_path, draw=7, **kw)
    assert len(drawn.samples["ddim-10"]) == 5


def test_a_second_experiment_loads_samples_and_every_evaluation(tmp_path, monkeypatch):
    """The report's second run: nothing changed, so samples, the table and every (train, test) result are loaded;
    another setting or a damaged results file computes them again."""
    from workbench.systems.pdiff import experiment as exp

    calls = []
    real = exp.evaluation_table
    monkeypatch.setattr(exp, "evaluation_table", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(n_samples=4, samplers=("ddim-10",))
    first = pdiff_experiment("tiny", DENSE, TINY, tmp_path, **kw)
    again = pdiff_experiment("tiny", DENSE, TINY, tmp_path, **kw)
    assert len(calls) == 1
    assert again.table.equals(first.table) and list(again.results) == list(first.results)
    for m in first.results:
        for a, b in zip(first.results[m], again.results[m]):
            np.testing.assert_array_equal(a.accuracy, b.accuracy)
            np.testing.assert_array_equal(a.loss, b.loss)
            assert torch.equal(a.predictions, b.predictions) and torch.equal(a.targets, b.targets)
    assert torch.equal(first.samples["ddim-10"], again.samples["ddim-10"])
    np.testing.assert_array_equal(first.reconstruction.accuracy, again.reconstruction.accuracy)
    assert again.seconds["evaluate"] == first.seconds["evaluate"]  # the measured time is kept, not the load's
    pdiff_experiment("tiny", DENSE, TINY, tmp_path, n_samples=3, samplers=("ddim-10",))
    assert len(calls) == 2
    (first.directory / "experiment" / "results.safetensors").write_bytes(b"\0damaged")
    healed = pdiff_experiment("tiny", DENSE, TINY, tmp_path, n_samples=3, samplers=("ddim-10",))
    assert len(calls) == 3 and len(healed.samples["ddim-10"]) == 3


@pytest.mark.slow
def test_a_second_seeds_experiment_loads_samples_and_evaluations(tmp_path, monkeypatch):
    from workbench.systems.pdiff import experiment as exp

    calls = []
    real = exp.seeds_evaluation
    monkeypatch.setattr(exp, "seeds_evaluation", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = replace(TINY, align="weight_matching", autoencoder="pca", denoiser="mlp", mlp_hidden=16)
    first = seeds_experiment("seeds", SEEDS, cfg, tmp_path, n_samples=4, sampler="ddim", steps=5)
    again = seeds_experiment("seeds", SEEDS, cfg, tmp_path, n_samples=4, sampler="ddim", steps=5)
    assert len(calls) == 1
    for name in ("table", "novelty", "barriers", "curves"):
        a, b = getattr(first.result, name), getattr(again.result, name)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, check_index_type=False)
    assert torch.equal(first.result.aligned, again.result.aligned)
    assert all(torch.equal(first.samples[k], again.samples[k]) for k in first.samples)
    assert list(again.result.results) == list(first.result.results)
    seeds_experiment("seeds", SEEDS, cfg, tmp_path, n_samples=3, sampler="ddim", steps=5)
    assert len(calls) == 2
