"""RPG: the vector sources it streams from, the generator (fit / sample / save / load / resume, windows that read
only their slice, permutation states and conditions, bad input), the task-code zoo (codes, per-member labels,
resume, corruption), the ridge regressor, and LeNet alignment through a flatten."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from workbench.core.params import ParamSpec
from workbench.core.train_loop import LoopConfig
from workbench.generator.alignment import align_vectors, apply_permutation, permutation_spec
from workbench.nn.architectures import ArchConfig, build_model, count_params
from workbench.nn.recurrent import SequenceModelConfig
from workbench.systems.rpg.evaluation import RidgeCodeRegressor
from workbench.systems.rpg.generator import RPG, RPGConfig, fit_or_load_rpg
from workbench.systems.rpg.task_zoo import (
    TaskCodeZoo,
    TaskCodeZooConfig,
    code_labels,
    code_name,
    collect_task_code_zoo,
    hamming,
    parse_code,
)
from workbench.systems.rpg.vectors import NpyVectors, TensorVectors, write_npy_vectors
from workbench.zoo.config import DataConfig
from workbench.zoo.training import TrainConfig, init_members, train_vectorized

SPEC = ParamSpec(("a.weight", "a.bias", "b.weight"), ((6, 5), (6,), (3, 6)))  # 54 parameters, 3 tensors


def _zoo(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(SPEC.numel, generator=g)
    return base + 0.1 * torch.randn(n, SPEC.numel, generator=g)


def _cfg(**kw):
    base = dict(token_size=8, window=3, sequence=SequenceModelConfig(kind="lstm", d_model=16, n_layers=1),
                denoiser_hidden=32, denoiser_depth=1, sample_steps=5,
                train=LoopConfig(steps=12, batch_size=4, lr=1e-3, checkpoint_every=4))
    base.update(kw)
    return RPGConfig(**base)


# -- vector sources ------------------------------------------------------------------------------------------------
def test_npy_vectors_read_slices_like_the_tensor(tmp_path):
    v = _zoo()
    src = write_npy_vectors(tmp_path / "z.npy", iter(v.split(5)), len(v), SPEC.numel)
    assert isinstance(src, NpyVectors) and len(src) == 12 and src.n_params == SPEC.numel
    assert torch.equal(src.read([3, 0, 7], 10, 30), v[[3, 0, 7], 10:30])
    assert torch.equal(TensorVectors(v).read([3, 0, 7], 10, 30), v[[3, 0, 7], 10:30])
    with pytest.raises(ValueError, match="outside"):
        src.read([0], 10, 999)


def test_vector_sources_refuse_bad_data(tmp_path):
    np.save(tmp_path / "f64.npy", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="float32"):
        NpyVectors(tmp_path / "f64.npy")
    bad = _zoo()
    bad[4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"members \[4\]"):
        TensorVectors(bad)
    with pytest.raises(FileNotFoundError):
        NpyVectors(tmp_path / "missing.npy")


# -- generator -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    return RPG(_cfg()).fit(_zoo(), SPEC, progress=False)


def test_fit_and_sample_shapes_and_determinism(fitted):
    assert fitted.layout.n_tokens == 4 + 1 + 3  # per layer: 30 → 4 tokens of 8, 6 → 1, 18 → 3
    s1 = fitted.sample(5, seed=3)
    s2 = fitted.sample(5, seed=3)
    assert s1.shape == (5, SPEC.numel) and torch.isfinite(s1).all()
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, fitted.sample(5, seed=4))
    assert fitted.n_windows == 3  # windows of 3 tokens


def test_save_load_gives_the_same_samples(fitted, tmp_path):
    fitted.save(tmp_path / "g")
    back = RPG.load(tmp_path / "g")
    assert torch.equal(back.sample(4, seed=1), fitted.sample(4, seed=1))
    (tmp_path / "g" / "weights.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="altered|checksum"):
        RPG.load(tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="fit and save"):
        RPG.load(tmp_path / "nothing")


def test_training_reads_only_window_slices():
    reads = []

    class Recording(TensorVectors):
        def read(self, members, lo, hi):
            reads.append((len(members), hi - lo))
            return super().read(members, lo, hi)

    cfg = _cfg()
    RPG(cfg).fit(Recording(_zoo()), SPEC, progress=False)
    train_reads = [r for r in reads if r[0] == cfg.train.batch_size]
    assert train_reads, reads
    # a window covers at most window × token_size parameters: never a whole member
    assert max(w for _, w in train_reads) <= cfg.window * cfg.token_size < SPEC.numel


def test_permutation_states_and_conditions(fitted):
    a = fitted.sample(3, permutation_state=2, seed=0)
    b = fitted.sample(3, permutation_state=[2, 2, 2], seed=0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="permutation_state"):
        fitted.sample(3, permutation_state=99)
    with pytest.raises(ValueError, match="permutation_state"):
        fitted.sample(3, permutation_state="first")
    with pytest.raises(ValueError, match="unconditional"):
        fitted.sample(2, condition=torch.zeros(2, 3))
    cond = torch.randint(0, 2, (12, 4)).float()
    g = RPG(_cfg(cond_dim=4, permutation_states=False)).fit(_zoo(), SPEC, conditions=cond, progress=False)
    assert g.sample(2, condition=cond[0]).shape == (2, SPEC.numel)
    with pytest.raises(ValueError, match="conditional"):
        g.sample(2)
    with pytest.raises(ValueError, match="shape"):
        g.sample(2, condition=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="cond_dim"):
        RPG(_cfg()).fit(_zoo(), SPEC, conditions=cond, progress=False)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
@pytest.mark.parametrize("normalise,scheme,denoiser", [("position", "flat", "mlp"), ("none", "channel", "conv1d")])
def test_every_variant_fits_and_samples(kind, normalise, scheme, denoiser):
    cfg = _cfg(sequence=SequenceModelConfig(kind=kind, d_model=16, n_layers=1, n_heads=2, context=2),
               normalise=normalise, scheme=scheme, denoiser=denoiser, position_embedding=kind == "gru",
               train=LoopConfig(steps=3, batch_size=4, checkpoint_every=3))
    s = RPG(cfg).fit(_zoo(), SPEC, progress=False).sample(2)
    assert s.shape == (2, SPEC.numel) and torch.isfinite(s).all()


def test_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="parameters but the spec"):
        RPG(_cfg()).fit(_zoo()[:, :10], SPEC, progress=False)
    with pytest.raises(ValueError, match="divisible by 4"):
        _cfg(sequence=SequenceModelConfig(kind="lstm", d_model=18, n_layers=1))
    with pytest.raises(ValueError, match="normalise"):
        _cfg(normalise="zscore")
    with pytest.raises(RuntimeError, match="not fitted"):
        RPG(_cfg()).sample(2)
    with pytest.raises(ValueError, match="one non-negative source id"):
        RPG(_cfg()).fit(_zoo(), SPEC, sources=[0, 1], progress=False)


def test_trajectory_ends_near_the_sample(fitted):
    ts, frames = fitted.trajectory(2, seed=5)
    assert frames.shape == (len(ts), 2, SPEC.numel) and ts == sorted(ts, reverse=True)


_RESUME_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_rpg import _cfg, _zoo, SPEC
    from workbench.systems.rpg.generator import RPG
    g = RPG(_cfg()).fit(_zoo(), SPEC, directory={d!r}, progress=False)
    torch.save(g.sample(3, seed=0), {out!r})
""")


def test_interrupted_fit_resumes_bit_identically(tmp_path):
    """Killed between checkpoints (WORKBENCH_FAULT), the fit resumes from the last sweep boundary and ends with
    exactly the weights of an uninterrupted run."""
    tests = os.path.dirname(__file__)
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    script = _RESUME_SCRIPT.format(tests=tests, d=str(crashed), out=str(tmp_path / "a.pt"))
    env = {**os.environ, "WORKBENCH_FAULT": "train_step:7", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    assert (crashed / "rpg.safetensors").exists()  # a checkpoint at a sweep boundary was written
    env.pop("WORKBENCH_FAULT")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=300)
    script2 = _RESUME_SCRIPT.format(tests=tests, d=str(clean), out=str(tmp_path / "b.pt"))
    subprocess.run([sys.executable, "-c", script2], env=env, check=True, capture_output=True, timeout=300)
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True),
                       torch.load(tmp_path / "b.pt", weights_only=True))


def test_fit_or_load_loads_when_nothing_changed(tmp_path):
    v = _zoo()
    g1 = fit_or_load_rpg(v, SPEC, _cfg(), tmp_path / "g", progress=False)
    g2 = fit_or_load_rpg(v, SPEC, _cfg(), tmp_path / "g", progress=False)
    assert g2.history.equals(g1.history) and torch.equal(g1.sample(2), g2.sample(2))


# -- task codes ----------------------------------------------------------------------------------------------------
def test_codes_parse_and_label():
    assert parse_code("0110000001") == (0, 1, 1, 0, 0, 0, 0, 0, 0, 1)
    assert code_name(parse_code([1, 0] * 5)) == "1010101010"
    for bad in ("011", "01100000012", "abcdefghij", "0000000000", "1111111111"):
        with pytest.raises(ValueError):
            parse_code(bad)
    codes = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]])
    y = torch.tensor([0, 1, 9, 5])
    assert code_labels(codes, y).tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]
    assert hamming(codes, codes).tolist() == [[0, 3], [3, 0]]


def test_per_member_labels_match_training_each_member_alone():
    arch = ArchConfig(name="mlp3", input_shape=(1, 4, 4), num_classes=2, hidden=(5, 3))
    g = torch.Generator().manual_seed(0)
    x, digits = torch.randn(40, 1, 4, 4, generator=g), torch.randint(0, 10, (40,), generator=g)
    codes = torch.tensor([parse_code("1100000000"), parse_code("0011111000"), parse_code("0000000111")])
    y = code_labels(codes, digits)
    init = init_members(arch, [0, 1, 2])
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1)
    together, _ = train_vectorized(arch, init, x, y, cfg)
    generic, _ = train_vectorized(arch, init, x, y, cfg, force_generic=True)
    for m in range(3):
        alone, _ = train_vectorized(arch, {k: v[m:m + 1] for k, v in init.items()}, x, y[m], cfg)
        for k in together:
            assert torch.allclose(together[k][m], alone[k][0], atol=1e-5)
            assert torch.allclose(generic[k][m], alone[k][0], atol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        train_vectorized(arch, init, x, y[:2], cfg)


@pytest.fixture(scope="module")
def task_zoo_cfg():
    return TaskCodeZooConfig(data=DataConfig(name="digits", n_train=300, n_test=100),
                             arch=ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=2, hidden=(8, 4)),
                             n_seen=6, n_unseen=2, chunk_size=3, pretrain=TrainConfig(epochs=2),
                             finetune=TrainConfig(epochs=2, lr=0.05))


def test_task_zoo_collects_resumes_and_reads(task_zoo_cfg, tmp_path):
    zoo = collect_task_code_zoo(task_zoo_cfg, tmp_path / "z", progress=False)
    assert len(zoo) == 8 and zoo.n_seen == 6 and zoo.vectors().shape == (8, zoo.spec.numel)
    conds = zoo.conditions
    assert [c.seen for c in conds] == [True] * 6 + [False] * 2 and conds[0].kind == "code"
    d = zoo.data(zoo.names[7])
    assert d.info.num_classes == 2 and torch.equal(d.y_test, code_labels(zoo.codes[7:8], zoo.digits().y_test)[0])
    acc = zoo.accuracies()
    assert acc.shape == (8,) and np.isfinite(acc).all()
    # every code starts from the same pretrained body: only a fresh head differs from the base
    before = zoo.vectors().clone()
    (tmp_path / "z" / "chunks" / "0001.safetensors").unlink()
    again = collect_task_code_zoo(task_zoo_cfg, tmp_path / "z", progress=False)
    assert torch.equal(again.vectors(), before)
    with pytest.raises(ValueError, match="pass data"):
        zoo.data()
    (tmp_path / "z" / "chunks" / "0000.safetensors").write_bytes(b"xx")
    with pytest.raises(ValueError, match="checksum|corrupt|altered"):
        TaskCodeZoo(tmp_path / "z")


def test_task_zoo_config_is_checked():
    with pytest.raises(ValueError, match="num_classes must be 2"):
        TaskCodeZooConfig(arch=ArchConfig(name="mlp3", input_shape=(1, 8, 8), num_classes=10))
    with pytest.raises(ValueError, match="codes asked for"):
        TaskCodeZooConfig(n_seen=900, n_unseen=200)


def test_ridge_regressor_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2, (40, 10), generator=g).float()
    W, b = torch.randn(10, 7, generator=g), torch.randn(7, generator=g)
    reg = RidgeCodeRegressor.fit(codes, codes @ W + b)
    test = torch.randint(0, 2, (5, 10), generator=g).float()
    assert torch.allclose(reg.predict(test), test @ W + b, atol=1e-2)
    assert reg.alpha == min(reg.loo_error, key=reg.loo_error.get)


# -- LeNet and alignment through a flatten -------------------------------------------------------------------------
def test_lenet_alignment_through_flatten_preserves_the_function():
    arch = ArchConfig(name="lenet", input_shape=(1, 14, 14), num_classes=10, channels=(6,), hidden=(12,))
    m = build_model(arch, seed=0)
    assert count_params(m) == 6 * 9 + 6 + 6 * 49 * 12 + 12 + 12 * 10 + 10
    spec = ParamSpec.select(m, ("*",))
    ps = permutation_spec(m)
    assert ps.views == {"fc1.weight": (12, 6, 49)}
    perms = {g: torch.randperm(n, generator=torch.Generator().manual_seed(1)) for g, (n, _) in ps.groups.items()}
    permuted = apply_permutation(ps, perms, spec.unflatten(spec.flatten(m)))
    m2 = build_model(arch)
    m2.load_state_dict(permuted)
    x = torch.randn(5, 1, 14, 14)
    assert torch.allclose(m(x), m2(x), atol=1e-5)
    v = spec.flatten(m)
    back, _ = align_vectors(torch.stack([v, spec.flatten(m2)]), spec, m, reference=0)
    assert torch.equal(back[1], v)
    with pytest.raises(ValueError, match="lenet needs"):
        build_model(ArchConfig(name="lenet", input_shape=(1, 14), num_classes=10))
