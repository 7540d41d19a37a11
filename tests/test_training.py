import pytest
import torch

from workbench.data import batch_schedule
from workbench.zoo import ArchConfig, TrainConfig, build_model, init_members, train_loop, train_vectorized
from workbench.zoo.training import mlp_train_flops


def _loop_states(arch, seeds, x, y, cfg, dtype):
    out = []
    for s in seeds:
        m = build_model(arch, seed=s).to(dtype)
        train_loop(m, x.to(dtype), y, cfg)
        out.append(m.state_dict())
    return out


@pytest.mark.parametrize("generic", [False, True])
def test_vectorized_mlp_is_the_loop_in_float64(mnist_small, generic):
    arch = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4)
    seeds = [3, 4, 5]
    x, y = mnist_small.x_train, mnist_small.y_train
    states, hist = train_vectorized(arch, init_members(arch, seeds, torch.float64), x.double(), y, cfg,
                                    force_generic=generic)
    assert hist.shape == (2, 3) and (hist[1] < hist[0]).all()
    for i, ref in enumerate(_loop_states(arch, seeds, x, y, cfg, torch.float64)):
        for k, v in states.items():
            assert torch.allclose(v[i], ref[k], atol=1e-10, rtol=0), k


def test_vectorized_float32_agrees_to_tolerance(mnist_small):
    arch = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)
    cfg = TrainConfig(epochs=3, batch_size=128)
    states, _ = train_vectorized(arch, init_members(arch, [0, 1]), mnist_small.x_train, mnist_small.y_train, cfg)
    for i, ref in enumerate(_loop_states(arch, [0, 1], mnist_small.x_train, mnist_small.y_train, cfg, torch.float32)):
        for k, v in states.items():
            assert torch.allclose(v[i], ref[k], atol=1e-4), k


def test_vectorized_convnet_matches_loop():
    from workbench.data import load_dataset

    d = load_dataset("mnist1d", seed=0, n_train=256, n_test=64)
    arch = ArchConfig(name="convnet3", input_shape=d.info.input_shape, num_classes=10, channels=(4, 8, 8))
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    states, _ = train_vectorized(arch, init_members(arch, [0, 1], torch.float64), d.x_train.double(), d.y_train, cfg)
    for i, ref in enumerate(_loop_states(arch, [0, 1], d.x_train, d.y_train, cfg, torch.float64)):
        for k, v in states.items():
            assert torch.allclose(v[i], ref[k], atol=1e-10), k


def test_subset_training_freezes_the_rest(mnist_small):
    arch = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)
    m = build_model(arch, seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    train_loop(m, mnist_small.x_train, mnist_small.y_train, TrainConfig(epochs=1), trainable=["fc3.weight", "fc3.bias"])
    assert torch.equal(m.fc1.weight, before["fc1.weight"]) and not torch.equal(m.fc3.weight, before["fc3.weight"])


def test_batch_schedule_covers_every_example_once():
    b = batch_schedule(103, 10, epoch=2, data_seed=7)
    assert len(b) == 11 and sorted(torch.cat(b).tolist()) == list(range(103))
    assert torch.equal(torch.cat(b), torch.cat(batch_schedule(103, 10, epoch=2, data_seed=7)))
    assert not torch.equal(torch.cat(b), torch.cat(batch_schedule(103, 10, epoch=3, data_seed=7)))


def test_flop_count_of_mlp3():
    arch = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)
    macs = 784 * 32 + 32 * 16 + 16 * 10
    assert mlp_train_flops(arch, 1) == 6 * macs - 2 * 784 * 32


def test_invalid_train_config():
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(lr=0.0)
