"""Every stage on CUDA, where there is one (skipped otherwise; CI has no GPU): zoo collection (dense and seeds),
evaluation, the p-diff generator (conv autoencoder, diffusion, sampling), RPG, and the training loop's bf16 autocast;
each agrees with the CPU up to the tolerance of float32 on another device."""

import pytest
import torch

from workbench.core.device import resolve_device
from workbench.core.params import ParamSpec
from workbench.core.train_loop import LoopConfig, SplitLoss, train_module
from workbench.evaluation.evaluate import evaluate
from workbench.generator.latent_diffusion import PDiff, PDiffConfig
from workbench.nn.recurrent import SequenceModelConfig
from workbench.systems.rpg.generator import RPG, RPGConfig
from workbench.zoo import ArchConfig, DataConfig, TrainConfig, ZooConfig, collect

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (the suite runs on CPU)")]

DATA = DataConfig(name="mnist5k", n_train=600, n_test=200)
MLP = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)


def _dense(**kw):
    return ZooConfig(name="gpu_dense", protocol="dense_subset", data=DATA, arch=MLP, train=TrainConfig(epochs=2),
                     n_members=6, chunk_size=3, select=("fc3.*",), **kw)


def test_auto_is_cuda_here():
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("protocol", ["dense_subset", "seeds"])
def test_collection_on_cuda_matches_the_cpu(protocol, tmp_path):
    cfg = _dense() if protocol == "dense_subset" else ZooConfig(
        name="gpu_seeds", protocol="seeds", data=DATA, arch=MLP, train=TrainConfig(epochs=2), n_members=4,
        chunk_size=2)
    cpu = collect(cfg, tmp_path / "cpu", progress=False)
    gpu = collect(cfg, tmp_path / "gpu", progress=False, device="cuda")
    assert gpu.vectors().device.type == "cpu"  # stored on disk as always
    torch.testing.assert_close(gpu.vectors(), cpu.vectors(), rtol=0, atol=2e-3)
    assert abs(gpu.manifest["test_acc"] - cpu.manifest["test_acc"]).max() <= 2.0


def test_evaluation_runs_where_the_data_lives(tmp_path):
    zoo = collect(_dense(), tmp_path / "z", progress=False)
    data = zoo.data().to("cuda")
    on_gpu = evaluate(zoo.vectors(), (data.x_test, data.y_test), model=zoo.model(), spec=zoo.spec)
    on_cpu = evaluate(zoo.vectors(), (zoo.data().x_test, zoo.data().y_test), model=zoo.model(), spec=zoo.spec)
    assert abs(on_gpu.accuracy - on_cpu.accuracy).max() <= 0.5


def test_pdiff_conv_autoencoder_fits_and_samples_on_cuda():
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(1, 300, generator=g) + 0.05 * torch.randn(16, 300, generator=g)
    cfg = PDiffConfig.from_dict({"ae_train": {"steps": 30, "batch_size": 8},
                                 "diffusion_train": {"steps": 30, "batch_size": 8}})
    gpu = PDiff(cfg, device="cuda").fit(vectors, progress=False)
    cpu = PDiff(cfg, device="cpu").fit(vectors, progress=False)
    assert next(gpu.ae.parameters()).device.type == "cuda"
    s_gpu, s_cpu = gpu.sample(4, seed=0), cpu.sample(4, seed=0)
    assert s_gpu.device.type == "cpu" and torch.isfinite(s_gpu).all()
    # 60 Adam steps on another device: close, not equal
    assert float((s_gpu - s_cpu).abs().mean()) < 0.5 * float(vectors.std())


def test_rpg_fits_and_samples_on_cuda():
    spec = ParamSpec(("a.weight", "a.bias", "b.weight"), ((6, 5), (6,), (3, 6)))
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(spec.numel, generator=g) + 0.1 * torch.randn(12, spec.numel, generator=g)
    cfg = RPGConfig(token_size=8, window=3, sequence=SequenceModelConfig(kind="lstm", d_model=16, n_layers=1),
                    denoiser_hidden=32, denoiser_depth=1, sample_steps=5,
                    train=LoopConfig(steps=12, batch_size=4, lr=1e-3))
    samples = RPG(cfg, device="cuda").fit(vectors, spec, progress=False).sample(3)
    assert samples.shape == (3, spec.numel) and torch.isfinite(samples).all()


def test_bf16_autocast_trains_on_cuda():

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32)).cuda()
    x = torch.randn(64, 32, device="cuda")

    def loss_fn(g):
        idx = torch.randint(0, 64, (16,), generator=g).cuda()
        return torch.nn.functional.mse_loss(net(x[idx]), x[idx]), {}

    hist, _ = train_module(net, loss_fn, LoopConfig(steps=200, lr=3e-3, log_every=50), progress=False,
                           precision="bf16")
    assert hist["loss"].iloc[-1] < 0.5 * hist["loss"].iloc[0]
    assert next(net.parameters()).dtype == torch.float32  # autocast: the weights stay float32


def test_lora_zoo_fine_tunes_on_cuda_from_the_same_start(tmp_path):
    from golden import TINY_LORA

    from workbench.zoo.lora.tasks import collect_lora_zoo

    cpu = collect_lora_zoo(TINY_LORA, tmp_path / "cpu", progress=False)
    gpu = collect_lora_zoo(TINY_LORA, tmp_path / "gpu", progress=False, device="cuda")
    # the same seeded start (init runs on the CPU) and the same minibatches: close after 40 Adam steps
    assert float((gpu.vectors() - cpu.vectors()).abs().mean()) < 0.1 * float(cpu.vectors().abs().mean())
    assert abs(gpu.manifest["test_acc"].mean() - cpu.manifest["test_acc"].mean()) <= 3.0


def _split_regression():

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.SiLU(), torch.nn.Linear(64, 32)).cuda()
    x = torch.randn(64, 32, device="cuda")
    loss = SplitLoss(draw=lambda g: (torch.randint(0, 64, (16,), generator=g), torch.randn(16, 32, generator=g)),
                     compute=lambda idx, noise: (torch.nn.functional.mse_loss(net(x[idx] + 0.1 * noise), x[idx]),
                                                 {"n": noise.abs().mean()}),
                     device=torch.device("cuda"))
    return net, loss


@pytest.mark.parametrize("ema", [None, 0.9])
def test_cuda_graph_steps_equal_the_eager_ones(ema, monkeypatch):
    cfg = LoopConfig(steps=40, lr=3e-3, log_every=5, ema_decay=ema)
    runs = {}
    for mode in ("off", "on"):
        monkeypatch.setenv("WORKBENCH_CUDA_GRAPHS", mode)
        net, loss = _split_regression()
        hist, avg = train_module(net, loss, cfg, progress=False, precision="fp32")
        runs[mode] = (hist, [p.detach().clone() for p in (avg.shadow if avg else net).parameters()])
    (h_off, w_off), (h_on, w_on) = runs["off"], runs["on"]
    # the same draws and the same kernels: equal up to floating point (the graph fixes their order)
    for a, b in zip(w_off, w_on):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert h_on["step"].tolist() == h_off["step"].tolist()
    assert abs(h_on["n"] - h_off["n"]).max() < 1e-6  # logs are each step's own, not the capture's


def test_cuda_graph_run_resumes_to_the_uninterrupted_one(tmp_path, monkeypatch):

    monkeypatch.setenv("WORKBENCH_CUDA_GRAPHS", "on")
    cfg = LoopConfig(steps=30, lr=3e-3, log_every=5, checkpoint_every=10)
    net, loss = _split_regression()
    train_module(net, loss, cfg, directory=tmp_path / "full", progress=False, precision="fp32")
    w_full = [p.detach().clone() for p in net.parameters()]

    class Interrupted(Exception):
        pass

    net, loss = _split_regression()
    calls = []

    def draw(g):  # the run is stopped at step 16, after its checkpoint at step 10, while graphed
        calls.append(1)
        if len(calls) == 17:
            raise Interrupted
        return loss.draw(g)

    with pytest.raises(Interrupted):
        train_module(net, SplitLoss(draw=draw, compute=loss.compute, device=loss.device), cfg,
                     directory=tmp_path / "cut", progress=False, precision="fp32")
    net, loss = _split_regression()  # a new process: resumes from step 10, warms up and captures again
    hist, _ = train_module(net, loss, cfg, directory=tmp_path / "cut", progress=False, precision="fp32")
    assert hist["step"].iloc[-1] == 30
    for a, b in zip(w_full, net.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)


def test_cuda_graph_reports_a_non_finite_loss_with_its_step(monkeypatch):

    monkeypatch.setenv("WORKBENCH_CUDA_GRAPHS", "on")
    net = torch.nn.Linear(4, 1).cuda()
    x = torch.randn(8, 4, device="cuda")
    loss = SplitLoss(draw=lambda g: (torch.randn(8, 1, generator=g),),
                     compute=lambda noise: (((net(x) - noise) ** 2).mean() * float("nan"), {}),
                     device=torch.device("cuda"))
    with pytest.raises(FloatingPointError, match="non-finite at step 0"):
        train_module(net, loss, LoopConfig(steps=20, log_every=10), progress=False, precision="fp32")
