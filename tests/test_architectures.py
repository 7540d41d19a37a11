import pytest
import torch

from workbench.nn.architectures import load_weights_file
from workbench.zoo import ArchConfig, build_model, count_params


def test_mlp3_matches_pdiff_shape():
    m = build_model(ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10))
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert count_params(m) == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10


@pytest.mark.parametrize("shape", [(1, 40), (1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_convnet3_adapts_to_input(shape):
    m = build_model(ArchConfig(name="convnet3", input_shape=shape, num_classes=7))
    assert m(torch.zeros(2, *shape)).shape == (2, 7)


def test_seed_fixes_initialisation():
    cfg = ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=10)
    a, b, c = build_model(cfg, seed=1), build_model(cfg, seed=1), build_model(cfg, seed=2)
    assert torch.equal(a.fc1.weight, b.fc1.weight) and not torch.equal(a.fc1.weight, c.fc1.weight)


def test_timm_by_name_with_channels():
    m = build_model(ArchConfig(name="timm:resnet18", input_shape=(1, 32, 32), num_classes=10))
    assert m(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_pretrained_efficientnet_lite0_offline():
    m = build_model(ArchConfig(name="timm:tf_efficientnet_lite0", input_shape=(3, 64, 64), num_classes=5,
                               pretrained=True)).eval()
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    # pretrained stem weights are not a fresh init: their statistics differ from a random build
    fresh = build_model(ArchConfig(name="timm:tf_efficientnet_lite0", input_shape=(3, 64, 64), num_classes=5))
    assert not torch.allclose(m.conv_stem.weight, fresh.conv_stem.weight)


def test_pretrained_without_weights_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="weights_path"):
        build_model(ArchConfig(name="timm:resnet18", input_shape=(3, 32, 32), num_classes=10, pretrained=True))


def test_unknown_architecture():
    with pytest.raises(ValueError, match="mlp3"):
        ArchConfig(name="vgg", input_shape=(1, 8, 8), num_classes=10)


def test_weights_file_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, p)
    with pytest.raises(ValueError, match="safely"):
        load_weights_file(p)
    ok = tmp_path / "ok.pth"
    torch.save({"w": torch.ones(2)}, ok)
    assert torch.equal(load_weights_file(ok)["w"], torch.ones(2))
