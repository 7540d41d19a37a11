"""The LoRA engine on a tiny two-layer network (no peft, seconds): the loss callback is what is optimised, only
the trainable tensors move, the last checkpoints are kept, and the collection resumes exactly and refuses tampered
files."""

import json

import pandas as pd
import pytest
import torch
import torch.nn as nn

from workbench.core.io import CorruptFileError, load_tensors, save_tensors
from workbench.core.params import ParamSpec
from workbench.zoo.lora.engine import collect_conditions, finetune, head_name, start_zoo

CONDITIONS = ("up", "down", "flat")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _spec(model: nn.Module) -> ParamSpec:
    return ParamSpec.select(model, ["2.*"])  # the head is what a member stores


def test_finetune_minimises_the_callback_and_moves_only_trainable_tensors():
    model, target = _net(), torch.tensor([5.0, -3.0])
    spec, before = _spec(model), {k: v.clone() for k, v in _net().state_dict().items()}
    seen_steps, seen_states, all_losses = [], [], []

    def loss_fn(m: nn.Module, step: int) -> torch.Tensor:
        seen_steps.append(step)
        seen_states.append(spec.flatten(m.state_dict()))  # the state the previous step left
        loss = ((m[2].bias - target) ** 2).sum()  # no data could explain this target: only the callback says so
        all_losses.append(float(loss.detach()))
        return loss

    vecs, losses = finetune(model, spec, ["2.bias"], loss_fn, steps=300, keep_last=7, lr=0.1)
    assert seen_steps == list(range(300))
    assert torch.allclose(model[2].bias.detach(), target, atol=1e-2)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k != "2.bias")  # body and head weight frozen
    assert [p.requires_grad for p in model.parameters()] == [False, False, False, True]
    # the last keep_last checkpoints and their losses, the newest last
    assert vecs.shape == (7, spec.numel) and losses == all_losses[-7:]
    assert torch.equal(vecs[:-1], torch.stack(seen_states[-6:]))
    assert torch.equal(vecs[-1], spec.flatten(after))


def _collect(root, calls: list[str] | None = None) -> None:
    """A seeded zoo of head fits: per condition its own start, data and minibatch generator."""
    model = _net()
    spec = _spec(model)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    targets = {"up": x.sum(1, keepdim=True), "down": -x.sum(1, keepdim=True), "flat": torch.zeros(64, 1)}

    def init(i: int, name: str) -> None:
        torch.manual_seed(100 + i)
        model[2].reset_parameters()
        if calls is not None:
            calls.append(name)

    def loss(i: int, name: str):
        g, y = torch.Generator().manual_seed(i), targets[name].repeat(1, 2)

        def mse(m: nn.Module, step: int) -> torch.Tensor:
            idx = torch.randint(0, 64, (16,), generator=g)
            return ((m(x[idx]) - y[idx]) ** 2).mean()
        return mse

    def rows(i: int, name: str, stored: dict[str, torch.Tensor]) -> list[dict]:
        return [{"cond": name, "loss": v} for v in stored["loss"].tolist()]

    collect_conditions(root, CONDITIONS, model, spec, trainable=spec.names, init=init, loss=loss, rows=rows,
                       kind="cond", folder="conds", steps=40, keep_last=5, lr=0.05, seconds={},
                       keep_losses=True, progress=False)


def test_collection_layout_and_resume_recollects_only_the_missing_condition(tmp_path):
    _collect(tmp_path)
    first = {c: load_tensors(tmp_path / "conds" / f"{c}.safetensors") for c in CONDITIONS}
    manifest = (tmp_path / "manifest.csv").read_text()
    assert set(json.loads((tmp_path / "checksums.json").read_text())["files"]) == {f"conds/{c}.safetensors"
                                                                                   for c in CONDITIONS}
    assert set(json.loads((tmp_path / "timings.json").read_text())) == set(CONDITIONS)
    assert len(pd.read_csv(tmp_path / "manifest.csv")) == 15 and first["up"]["vectors"].shape == (5, 10)
    assert not torch.equal(first["up"]["vectors"], first["down"]["vectors"])

    (tmp_path / "conds" / "down.safetensors").unlink()
    calls: list[str] = []
    _collect(tmp_path, calls)
    assert calls == ["down"]  # the others are verified and reloaded
    for c in CONDITIONS:
        again = load_tensors(tmp_path / "conds" / f"{c}.safetensors")
        assert all(torch.equal(again[k], first[c][k]) for k in ("vectors", "loss"))
    assert (tmp_path / "manifest.csv").read_text() == manifest


def test_a_tampered_condition_file_is_refused(tmp_path):
    _collect(tmp_path)
    path = tmp_path / "conds" / "flat.safetensors"
    stored = load_tensors(path)
    save_tensors(path, {"vectors": stored["vectors"] + 1.0, "loss": stored["loss"]})
    with pytest.raises(CorruptFileError, match=r"flat\.safetensors \(the checkpoints of cond 'flat'\) does not"):
        _collect(tmp_path)


def test_start_zoo_refuses_another_config_and_head_name_is_clear(tmp_path):
    class Cfg:
        def __init__(self, steps: int) -> None:
            self.steps = steps

        def to_dict(self) -> dict:
            return {"steps": self.steps}

    start_zoo(tmp_path / "zoo", Cfg(3))
    start_zoo(tmp_path / "zoo", Cfg(3))  # the same config resumes
    with pytest.raises(ValueError, match="different configuration"):
        start_zoo(tmp_path / "zoo", Cfg(4))
    assert head_name(_net(), 2) == "2"
    with pytest.raises(ValueError, match="no task head with 7 outputs"):
        head_name(_net(), 7)
