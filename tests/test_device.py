"""One reading of ``device`` everywhere: "auto", None, torch devices, and clear errors for the rest."""

import pytest
import torch

from workbench.core.device import resolve_device
from workbench.core.params import ParamSpec
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.generator.latent_diffusion import PDiff
from workbench.nn.architectures import ArchConfig, build_model
from workbench.systems.rpg.generator import RPG


def test_auto_is_cuda_when_present_else_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device(" AUTO ").type == want
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "", "cuda:x"])
def test_a_bad_device_names_the_fix(bad):
    with pytest.raises(ValueError, match=r"device .* is not a torch device: use 'auto'"):
        resolve_device(bad)
    with pytest.raises(ValueError, match=r"^--device"):
        resolve_device(bad, name="--device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_cuda_is_refused_up_front():
    with pytest.raises(ValueError, match="torch sees no CUDA device here.*'auto'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="no CUDA"):
        PDiff(device="cuda:0")


def test_every_stage_accepts_auto():
    dev = resolve_device("auto")
    assert PDiff(device="auto").device == dev
    assert RPG(device="auto").device == dev
    model = build_model(ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=10), seed=0)
    assert MemberEvaluator(model, ParamSpec.select(model, ("fc3.*",)), device="auto").device == dev


def test_zoo_collection_takes_a_device_and_checks_it_first(tmp_path):
    from workbench.zoo import DataConfig, TrainConfig, ZooConfig, collect

    cfg = ZooConfig(name="dev", protocol="dense_subset", data=DataConfig(name="mnist5k", n_train=300, n_test=100),
                    arch=ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10),
                    train=TrainConfig(epochs=1), n_members=3, chunk_size=3, select=("fc3.*",))
    plain = collect(cfg, tmp_path / "plain", progress=False)
    auto = collect(cfg, tmp_path / "auto", progress=False, device="auto")
    if not torch.cuda.is_available():  # "auto" is the CPU here: the very same bytes
        assert torch.equal(plain.vectors(), auto.vectors())
        with pytest.raises(ValueError, match="asks for CUDA"):
            collect(cfg, tmp_path / "cuda", progress=False, device="cuda")
        assert not (tmp_path / "cuda").exists()  # refused before anything was written


def test_precision_is_checked_and_off_on_the_cpu(monkeypatch):
    from workbench.core.device import training_precision

    cpu = torch.device("cpu")
    assert training_precision(None, cpu) is None and training_precision("auto", cpu) is None
    assert training_precision("bf16", cpu) is torch.bfloat16 and training_precision("fp32", cpu) is None
    monkeypatch.setenv("WORKBENCH_PRECISION", "fp16")
    with pytest.raises(ValueError, match="must be one of"):
        training_precision(None, cpu)
