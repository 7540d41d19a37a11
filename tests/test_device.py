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
