"""Every stage on CUDA, where there is one (skipped otherwise; CI has no GPU): zoo collection (dense and seeds),
evaluation, the p-diff generator (conv autoencoder, diffusion, sampling), RPG, and the training loop's bf16 autocast;
each agrees with the CPU up to the tolerance of float32 on another device."""

import pytest
import torch

from workbench.core.device import resolve_device
from workbench.core.params import ParamSpec
from workbench.core.train_loop import LoopConfig
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
    from workbench.core.train_loop import train_module

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
