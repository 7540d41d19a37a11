"""Data-parallel generator training: batch slices, the gradient plan, and ``accelerate launch`` with two CPU
processes (gloo) against one process — bit-identical with as many gradient shards as processes, resumable."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from workbench.core.data_parallel import (
    GradientPlan,
    ProcessGroup,
    batch_share,
    gradient_shards,
    shard_batch,
    step_scope,
)
from workbench.core.diffusion import NoiseSchedule, ScheduleConfig, diffusion_loss
from workbench.core.train_loop import LoopConfig, step_generator, train_module
from workbench.nn.autoencoder import AEConfig, ParamAutoencoder


def test_shard_batch_is_the_identity_outside_a_distributed_step():
    x = torch.arange(6.0)
    assert shard_batch(x, None)[0] is x
    with step_scope(ProcessGroup()):
        assert shard_batch(x)[0] is x
    assert batch_share() == 1.0


@given(n=st.integers(1, 40), world=st.integers(1, 5))
@settings(max_examples=60, deadline=None)
def test_the_slices_of_every_rank_tile_the_batch(n, world):
    x = torch.arange(n)
    parts, shares = [], []
    for rank in range(world):
        with step_scope(ProcessGroup(rank=rank, world=world)) as share:
            part, none = shard_batch(x, None)
            shares.append(share.weight)
        assert none is None
        parts.append(part)
    if n < world:  # too few rows: every rank computes all of them, each weighing 1/world
        assert all(torch.equal(p, x) for p in parts)
    else:
        assert torch.equal(torch.cat(parts), x)
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    assert sum(shares) == pytest.approx(1.0)


def test_one_step_shards_one_batch_size():
    with step_scope(ProcessGroup(rank=0, world=2)):
        with pytest.raises(ValueError, match="one batch size"):
            shard_batch(torch.zeros(4), torch.zeros(5))
        shard_batch(torch.zeros(4))
        with pytest.raises(ValueError, match="4 and 6 rows"):
            shard_batch(torch.zeros(6))


def test_the_gradient_plan_names_what_does_not_split(monkeypatch):
    with pytest.raises(ValueError, match="multiple of 2"):
        GradientPlan(ProcessGroup(rank=0, world=2), 3)
    with pytest.raises(ValueError, match="keeps state between calls"):
        GradientPlan(ProcessGroup(), 2, reentrant=False, name="rpg")
    assert GradientPlan(ProcessGroup(rank=1, world=2), 4).mine == range(2, 4)
    monkeypatch.setenv("WORKBENCH_GRAD_SHARDS", "two")
    with pytest.raises(ValueError, match="WORKBENCH_GRAD_SHARDS"):
        gradient_shards()


def _losses():
    torch.manual_seed(0)
    ae = ParamAutoencoder(AEConfig(in_dim=50, channels=(8, 8), variational=True))
    x = torch.randn(12, 50)
    schedule = NoiseSchedule(ScheduleConfig(num_steps=100))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(50, 50))

    def ae_loss(g):
        return ae.loss(x[torch.randint(0, 12, (10,), generator=g)], generator=g)

    def diff_loss(g):
        return diffusion_loss(lambda xt, t: net(xt).view_as(xt), schedule, x[:9].view(9, 1, 50), generator=g), {}
    return (ae, ae_loss), (net, diff_loss)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("shards", [2, 3, 5])
def test_sharded_gradients_sum_to_the_full_batch_gradient(which, shards):
    module, loss_fn = _losses()[which]
    loss, logs = loss_fn(step_generator(0, 7))
    loss.backward()
    full = [p.grad.clone() for p in module.parameters()]
    module.zero_grad(set_to_none=True)
    total, logs_s = GradientPlan(ProcessGroup(), shards).step(module, lambda: loss_fn(step_generator(0, 7)))
    assert float(total) == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-7)
    for k, v in logs.items():
        assert float(logs_s[k]) == pytest.approx(float(v), rel=1e-5, abs=1e-7)
    for a, b in zip(full, module.parameters()):
        torch.testing.assert_close(b.grad, a, rtol=1e-4, atol=1e-6)


def test_a_sharded_run_trains_like_the_plain_one():
    (ae, ae_loss), _ = _losses()
    start = {k: v.clone() for k, v in ae.state_dict().items()}
    cfg = LoopConfig(steps=4, batch_size=10, lr=1e-3, log_every=1)
    h1, _ = train_module(ae, ae_loss, cfg, progress=False)
    ae.load_state_dict(start)
    h2, _ = train_module(ae, ae_loss, cfg, progress=False, grad_shards=2)
    # the first loss is of the same weights; later ones follow Adam, whose normalised steps amplify the rounding
    # of tiny gradients (as a different thread count does), so they are close, not equal
    assert h2["loss"].iloc[0] == pytest.approx(h1["loss"].iloc[0], rel=1e-6)
    assert h2["loss"].tolist() == pytest.approx(h1["loss"].tolist(), rel=1e-2)
    assert h2["recon"].iloc[0] == pytest.approx(h1["recon"].iloc[0], rel=1e-6)


# -- accelerate launch, 2 CPU processes ----------------------------------------------------------------------------
TINY = {"name": "tiny_dp", "extends": "ci",
        "zoos": {"mlp_dense": {"data": {"n_train": 500, "n_test": 200}, "train": {"epochs": 2}, "n_members": 12,
                               "chunk_size": 6}},
        "generators": {"pdiff": {"config": {
            "ae_train": {"steps": 20, "batch_size": 16, "checkpoint_every": 10},
            "diffusion_train": {"steps": 20, "batch_size": 16, "ema_decay": 0.98, "checkpoint_every": 5}}}}}


def _accelerate() -> list[str]:
    exe = Path(sys.executable).with_name("accelerate")
    if not exe.exists():
        pytest.skip("accelerate's launcher is not installed")
    return [str(exe), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531"]


def _fit(preset: Path, run: Path, *, launch: bool, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKBENCH_GRAD_SHARDS": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("WORKBENCH_FAULT", None)
    if fault:
        env["WORKBENCH_FAULT"] = fault
    cmd = (_accelerate() + ["-m"] if launch else [sys.executable, "-m"]) + [
        "workbench", "fit", "--preset", str(preset), "--zoo", "mlp_dense", "--run-dir", str(run), "--quiet"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    d = run / "generators" / "pdiff" / "mlp_dense"
    return {f"{f}.{k}": v for f in ("autoencoder_weights", "denoiser_weights")
            for k, v in load_file(d / f"{f}.safetensors").items()}


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_under_accelerate_equal_one_and_resume(tmp_path):
    preset = tmp_path / "tiny_dp.json"
    preset.write_text(json.dumps(TINY))
    one = _fit(preset, tmp_path / "one", launch=False)
    assert one.returncode == 0, one.stderr[-2000:]
    r1 = json.loads(one.stdout.strip().splitlines()[-1])
    assert r1["processes"] == 1 and r1["action"] == "fitted"
    two = tmp_path / "two"
    two.mkdir()
    for part in ("zoos", "bases"):  # the same zoo: only the generator is under test
        shutil.copytree(tmp_path / "one" / part, two / part)
    # both processes die at their 28th step (the diffusion stage's 8th, after its checkpoint at 5 steps)
    killed = _fit(preset, two, launch=True, fault="train_step:28")
    assert killed.returncode != 0
    ckpt = two / "generators" / "pdiff" / "mlp_dense" / "checkpoints"
    assert (ckpt / "autoencoder.safetensors").exists() and (ckpt / "diffusion.safetensors").exists()
    assert not (two / "generators" / "pdiff" / "mlp_dense" / "pdiff.json").exists()
    resumed = _fit(preset, two, launch=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    lines = [ln for ln in resumed.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # the main process reports; the other one does not
    r2 = json.loads(lines[0])
    assert r2["processes"] == 2 and r2["final_loss"] == r1["final_loss"]
    w1, w2 = _weights(tmp_path / "one"), _weights(two)
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # bit-identical: 2 shards in 1 process = 2 processes
    assert not list(ckpt.glob("*.tmp*"))
