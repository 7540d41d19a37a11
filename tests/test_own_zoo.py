"""Your own data and network: registered datasets and architectures, the README's example, validation before any
write, the data fingerprint, and the in-memory TensorZoo through the generators, evaluation and analysis."""

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.core.params import ParamSpec
from workbench.core.train_loop import LoopConfig
from workbench.data import (
    available_datasets,
    load_dataset,
    register_dataset,
    registered_dataset,
    task_data_from_tensors,
    unregister_dataset,
)
from workbench.evaluation.memorisation import memorisation_analysis
from workbench.evaluation.tables import evaluation_table
from workbench.generator.latent_diffusion import PDiff, PDiffConfig
from workbench.nn.architectures import register_architecture, unregister_architecture
from workbench.zoo import (
    ArchConfig,
    DataConfig,
    TensorZoo,
    TrainConfig,
    Zoo,
    ZooConfig,
    ZooMismatchError,
    collect,
)
from workbench.zoo.collection import SeedChunk, registrations_of, train_seed_chunk

README = Path(__file__).resolve().parents[1] / "README.md"


def _blobs(n=120, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 3
    y = torch.arange(n) % classes
    return centres[y] + torch.randn(n, d, generator=g), y


def _mlp(shape, classes):
    return nn.Sequential(nn.Linear(shape[0], 8), nn.ReLU(), nn.Linear(8, classes))


@pytest.fixture
def blobs():
    x, y = _blobs()
    register_dataset("test_blobs", x, y)
    register_architecture("test_mlp", _mlp)
    yield x, y
    unregister_dataset("test_blobs")
    unregister_architecture("test_mlp")


def _config(protocol="dense_subset", **kw):
    base = dict(name="blobs", protocol=protocol, data=DataConfig(name="test_blobs"), n_members=12,
                arch=ArchConfig(name="test_mlp", input_shape=(6,), num_classes=3),
                train=TrainConfig(epochs=5, batch_size=16), select=("2.*",), chunk_size=4)
    return ZooConfig(**{**base, **kw})


@pytest.mark.slow
def test_readme_own_zoo_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Your own zoo"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith(("import", "from"))]) <= 10
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    try:
        exec(compile(code, "README.md (Your own zoo)", "exec"), scope)
    finally:
        unregister_dataset("wine")
        unregister_architecture("wine_mlp")
    table = scope["table"]
    assert {"original", "generated (ddim-20)", "soup", "fine-tuned"} <= set(table.index)
    assert len(scope["zoo"]) == 50 and (tmp_path / "runs/own/wine/data.json").exists()
    # wine is easy: the members and the generated models classify most held-out wines
    assert table.loc["original", "mean"] > 85 and table.loc["generated (ddim-20)", "mean"] > 85


def test_registered_data_and_network_collect_resume_and_reopen(blobs, tmp_path):
    x, y = blobs
    zoo = collect(_config(), tmp_path / "z", progress=False)
    assert len(zoo) == 12 and zoo.data().info.source == "registered (test_blobs)"
    assert zoo.accuracies().mean() > 60  # well-separated blobs
    again = collect(_config(), tmp_path / "z", progress=False)  # resumes: nothing to do, same members
    assert torch.equal(again.vectors(), zoo.vectors())
    # the same examples registered again (a new process): the zoo opens and evaluates on them
    unregister_dataset("test_blobs")
    with pytest.raises(ValueError, match=r"unknown dataset 'test_blobs'.*register_dataset\('test_blobs'"):
        Zoo(tmp_path / "z")
    register_dataset("test_blobs", x, y)
    assert torch.equal(Zoo(tmp_path / "z").data().x_test, zoo.data().x_test)
    # other examples under the same name: refused on open and on resume, never evaluated on the wrong data
    register_dataset("test_blobs", x + 1.0, y, replace=True)
    with pytest.raises(ZooMismatchError, match="other data"):
        Zoo(tmp_path / "z").data()
    with pytest.raises(ZooMismatchError, match="other data"):
        collect(_config(), tmp_path / "z", progress=False)


def test_registering_other_data_under_a_taken_name_needs_replace(blobs):
    x, y = blobs
    assert register_dataset("test_blobs", x, y) == registered_dataset("test_blobs").fingerprint  # same: fine
    with pytest.raises(ValueError, match="replace=True"):
        register_dataset("test_blobs", x * 2, y)
    with pytest.raises(ValueError, match="built-in"):
        register_dataset("mnist5k", x, y)
    assert available_datasets()["test_blobs"] == "registered"


def test_seed_chunks_carry_the_registrations_to_a_fresh_worker(blobs, tmp_path):
    cfg = _config("seeds", select=("*",))
    unit = SeedChunk(cfg, (0, 1), "cpu", registrations_of(cfg))
    expected = train_seed_chunk(unit)
    # a worker process has neither registration: the unit brings both
    unregister_dataset("test_blobs")
    unregister_architecture("test_mlp")
    rows, vecs = train_seed_chunk(unit)
    assert torch.equal(vecs, expected[1]) and rows == expected[0]
    assert registered_dataset("test_blobs") is not None


@pytest.mark.parametrize("change, match", [
    (lambda: {"data": DataConfig(name="wine_not_registered")}, None),
    (lambda: {"arch": ArchConfig(name="test_mlp", input_shape=(5,), num_classes=3)}, r"cannot take the inputs.*\(6,\)"),
    (lambda: {"arch": ArchConfig(name="test_mlp", input_shape=(6,), num_classes=2)}, r"3 classes but the network has 2"),
], ids=["unknown-dataset", "input-shape", "too-few-outputs"])
def test_a_bad_own_config_writes_nothing(blobs, tmp_path, change, match):
    root = tmp_path / "z"
    if match is None:  # the name is refused when the config is made, with the choices and the way to register
        with pytest.raises(ValueError, match=r"unknown dataset 'wine_not_registered'; choose one of .*mnist5k.*"
                                             r"register_dataset"):
            _config(**change())
    else:
        with pytest.raises(ValueError, match=match):
            collect(_config(**change()), root, progress=False)
    assert not root.exists()


def test_a_dataset_object_and_bad_labels():
    x, y = _blobs(30)
    ds = torch.utils.data.TensorDataset(x, y)
    a = task_data_from_tensors(ds, name="ds")
    b = task_data_from_tensors(x, y, name="ds")
    assert torch.equal(a.x_train, b.x_train) and a.info.extra["fingerprint"] == b.info.extra["fingerprint"]
    with pytest.raises(ValueError, match="differ in length"):
        task_data_from_tensors(x, y[:-1])
    with pytest.raises(ValueError, match="NaN or inf"):
        task_data_from_tensors(torch.where(torch.arange(30)[:, None] == 3, float("nan"), x), y)
    with pytest.raises(ValueError, match="non-integer"):
        task_data_from_tensors(x, y.float() + 0.5)
    with pytest.raises(TypeError, match="pass x and y"):
        task_data_from_tensors(x)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 60), d=st.integers(1, 5), seed=st.integers(0, 3), frac=st.floats(0.1, 0.5))
def test_registered_split_is_a_seeded_partition(n, d, seed, frac):
    x = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    y = torch.arange(n) % 2
    data = task_data_from_tensors(x, y, seed=seed, test_fraction=frac, standardise=False)
    rows = torch.cat([data.x_train, data.x_test])[:, 0].long() // d
    assert sorted(rows.tolist()) == list(range(n))  # every example once, none in both splits
    again = task_data_from_tensors(x, y, seed=seed, test_fraction=frac, standardise=False)
    assert torch.equal(again.x_test, data.x_test)
    per = task_data_from_tensors(x, y, seed=seed, test_fraction=frac, standardise="per_feature")
    if len(per.x_train) > 1:
        assert torch.allclose(per.x_train.mean(0), torch.zeros(d), atol=1e-4)


def test_load_dataset_names_the_way_to_register():
    with pytest.raises(ValueError, match=r"unknown dataset 'wine'; choose one of .*register_dataset\('wine'"):
        load_dataset("wine")


def test_tensor_zoo_runs_the_generator_evaluation_and_analysis():
    x, y = _blobs(150)
    torch.manual_seed(0)
    base = _mlp((6,), 3)
    opt = torch.optim.SGD(base.parameters(), lr=0.1)
    models = []
    for step in range(40):  # dense checkpoints of one trajectory, taken with plain torch
        opt.zero_grad()
        nn.functional.cross_entropy(base(x), y).backward()
        opt.step()
        if step >= 20:
            models.append(copy.deepcopy(base))
    zoo = TensorZoo.from_models(models, (x, y), include=("2.*",), name="mine")
    assert len(zoo) == 20 and tuple(zoo.spec.names) == ("2.weight", "2.bias")
    assert zoo.describe()["members"] == 20
    gen = PDiff(PDiffConfig(autoencoder="pca", denoiser="mlp", diffusion_train=LoopConfig(steps=60))).fit(
        zoo, progress=False)
    table, _ = evaluation_table(zoo, {"ddim": gen.sample(8, sampler="ddim", steps=10)}, finetune_steps=2)
    assert {"original", "generated (ddim)", "fine-tuned", "soup"} <= set(table.index)
    assert table.loc["original", "n"] == 20
    analysis = memorisation_analysis(zoo, gen, n_samples=8, steps=10)
    assert set(analysis.l2_nearest_median) >= {"generated", "original"}
    with pytest.raises(ValueError, match=r"shape \(members, 27\)"):
        TensorZoo(torch.zeros(3, 5), base, ParamSpec.select(base, ("2.*",)), (x, y))


def test_unregistered_architecture_error_lists_the_way():
    with pytest.raises(ValueError, match="register_architecture"):
        ArchConfig(name="nope", input_shape=(3,), num_classes=2)
    with pytest.raises(TypeError, match="callable"):
        register_architecture("x_arch", 3)
    register_architecture("empty_arch", lambda s, c: nn.ReLU())
    try:
        from workbench.nn.architectures import build_model

        with pytest.raises(ValueError, match="no parameters"):
            build_model(ArchConfig(name="empty_arch", input_shape=(3,), num_classes=2))
    finally:
        unregister_architecture("empty_arch")
