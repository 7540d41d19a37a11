"""Zoo collection on Ray: a local Ray (started by the test, loopback only) computes the same bytes as the local
executor, through the same storage — resume, one atomic shard per chunk, a killed worker's chunk redone once."""

import json

import pytest
import torch

from workbench.zoo import ArchConfig, DataConfig, TrainConfig, Zoo, ZooConfig, collect
from workbench.zoo.collection import SeedChunk, collect_all, train_seed_chunk
from workbench.zoo.executors import LocalExecutor, RayExecutor, RayMissingError, executor_scope, make_executor

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

DATA = DataConfig(name="mnist5k", n_train=600, n_test=200)
MLP = ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10)


def _cfg(n=8, chunk=2, **kw):
    return ZooConfig(name="ray_seeds", protocol="seeds", data=DATA, arch=MLP, train=TrainConfig(epochs=2),
                     n_members=n, chunk_size=chunk, **kw)


def _same_zoo(a: Zoo, b: Zoo) -> None:
    assert torch.equal(a.vectors(), b.vectors())  # bit-identical, not close
    cols = ["member_id", "seed", "step", "train_acc", "test_acc", "train_loss", "test_loss"]
    assert a.manifest[cols].equals(b.manifest[cols])


@pytest.fixture(scope="module")
def local_zoo(tmp_path_factory):
    return collect(_cfg(), tmp_path_factory.mktemp("local") / "z", progress=False)


def test_ray_collection_is_bit_identical_and_resumes(local_zoo, tmp_path):
    cfg = _cfg()
    # half the zoo collected here, the rest on Ray: the chunks already on disk are never submitted
    first = collect(_cfg(n=8), tmp_path / "z", progress=False, executor=_OnlyFirst(2))
    assert len(first) == 4
    with RayExecutor(num_cpus=2) as ex:
        submitted = _Counting(ex)
        zoo = collect(cfg, tmp_path / "z", progress=False, executor=submitted)
        assert submitted.units == [(4, 5), (6, 7)]
        # a complete zoo submits nothing
        collect(cfg, tmp_path / "z", progress=False, executor=submitted)
        assert submitted.units == [(4, 5), (6, 7)]
        # a whole zoo from scratch on Ray
        fresh = collect(cfg, tmp_path / "fresh", progress=False, executor=ex)
    _same_zoo(zoo, local_zoo)
    _same_zoo(fresh, local_zoo)
    assert len(json.loads((tmp_path / "fresh" / "checksums.json").read_text())["shards"]) == 4  # one per chunk
    assert not ray.is_initialized()  # the executor shut down the Ray it started


def test_a_killed_worker_is_redone_once(local_zoo, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv("WORKBENCH_FAULT_ONCE", f"seed_chunk:{marker}")
    zoo = collect(_cfg(), tmp_path / "z", progress=False, executor="ray")
    assert marker.exists()  # one worker did die in a chunk
    _same_zoo(zoo, local_zoo)
    assert sorted(zoo.manifest["member_id"]) == list(range(8))  # every member once
    assert not ray.is_initialized()


def test_collect_all_shares_one_ray(tmp_path):
    with executor_scope("ray") as ex:
        zoos = collect_all({"a": _cfg(n=2, chunk=1), "b": _cfg(n=2, chunk=1, seed=50)}, tmp_path,
                           progress=False, executor=ex)
        assert ray.is_initialized()
    assert not ray.is_initialized()
    assert [len(z) for z in zoos.values()] == [2, 2]
    assert list(zoos["b"].manifest["seed"]) == [50, 51]


def test_the_work_unit_is_a_pure_function(local_zoo):
    rows, vecs = train_seed_chunk(SeedChunk(_cfg(), (6, 7)))
    assert torch.equal(vecs, local_zoo.vectors()[6:8])
    assert [r["member_id"] for r in rows] == [6, 7]


def test_bad_executors_are_named_before_anything_is_written(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown executor 'dask'.*local.*ray"):
        collect(_cfg(), tmp_path / "z", executor="dask")
    with pytest.raises(TypeError, match="map_unordered"):
        collect(_cfg(), tmp_path / "z", executor=object())
    with pytest.raises(ValueError, match="address is for executor='ray'"):
        make_executor("local", address="auto")
    monkeypatch.setattr("workbench.zoo.executors.ray_available", lambda: False)
    with pytest.raises(RayMissingError, match=r"pip install 'workbench\[distributed\]'"):
        collect(_cfg(), tmp_path / "z", executor="ray", progress=False)
    assert not (tmp_path / "z").exists()
    assert isinstance(make_executor(None), LocalExecutor)


class _Counting:
    """Records the units an executor is given."""

    name = "counting"

    def __init__(self, inner):
        self.inner, self.units = inner, []

    def map_unordered(self, fn, units):
        self.units.extend(u.ids for u in units)
        yield from self.inner.map_unordered(fn, units)


class _OnlyFirst:
    """A local executor that stops after ``k`` units, as an interrupted collection would."""

    name = "interrupted"

    def __init__(self, k):
        self.k = k

    def map_unordered(self, fn, units):
        for u in list(units)[: self.k]:
            yield u, fn(u)


def _tiny_lora():
    from workbench.zoo.lora.tasks import LoRAZooConfig

    return LoRAZooConfig(n_train=300, n_test=100, image_size=32, steps=20, keep_last=4, rank=2,
                         tasks=("even", "greater_than_4"), unseen=("odd",))


def test_lora_task_dataset_and_style_zoos_on_ray_are_bit_identical(tmp_path, monkeypatch):
    """Each LoRA-engine family's conditions as Ray tasks on one Ray: the same bytes as a local collection, and a
    worker killed in a condition is redone once."""
    import shutil

    from test_d2nwg import ZOO_CFG
    from test_style import TINY

    from workbench.core.io import load_tensors
    from workbench.systems.cond_pdiff.style.zoo import collect_style_zoo
    from workbench.systems.d2nwg.zoo import collect_dataset_zoo
    from workbench.zoo.lora.tasks import collect_lora_zoo

    lora = _tiny_lora()
    zoos = {"t": (collect_lora_zoo, lora), "d": (collect_dataset_zoo, ZOO_CFG), "s": (collect_style_zoo, TINY)}
    threads = torch.get_num_threads()
    # one thread, as a Ray task runs (cpus_per_task=1): the same float summation order needs the same here
    torch.set_num_threads(1)
    try:
        for key, (collect_fn, cfg) in zoos.items():
            collect_fn(cfg, tmp_path / f"{key}_local", progress=False)
        # what the collecting process prepares itself (features, the style base) is shared: only the conditions
        # are under test
        (tmp_path / "t_ray").mkdir()
        shutil.copy(tmp_path / "t_local" / "features.safetensors", tmp_path / "t_ray")
        shutil.copytree(tmp_path / "d_local" / "features", tmp_path / "d_ray" / "features")
        shutil.copy(tmp_path / "d_local" / "checksums.json", tmp_path / "d_ray")
        (tmp_path / "s_ray").mkdir()
        shutil.copy(tmp_path / "s_local" / "base.safetensors", tmp_path / "s_ray")
        marker = tmp_path / "killed"
        monkeypatch.setenv("WORKBENCH_FAULT_ONCE", f"lora_condition:{marker}")
        with RayExecutor(num_cpus=2) as ex:  # one Ray for the three zoos
            for key, (collect_fn, cfg) in zoos.items():
                collect_fn(cfg, tmp_path / f"{key}_ray", progress=False, executor=ex)
    finally:
        torch.set_num_threads(threads)
    assert marker.exists()  # one worker died in a condition; Ray ran it again, the driver committed it once
    rels = [f"t_{{}}/tasks/{t.name}.safetensors" for t in lora.all_tasks()]
    rels += [f"d_{{}}/{part}/datasets/{r.name}.safetensors" for part in ("heads", "lora") for r in ZOO_CFG.recipes()]
    rels += [f"s_{{}}/styles/{p.name}" for p in (tmp_path / "s_local" / "styles").glob("*.safetensors")]
    assert len(rels) == len(lora.all_tasks()) + 2 * len(ZOO_CFG.recipes()) + len(TINY.styles)
    for rel in rels:
        a, b = load_tensors(tmp_path / rel.format("local")), load_tensors(tmp_path / rel.format("ray"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel  # bit-identical, not close
    for key in ("t", "s"):
        assert (tmp_path / f"{key}_local" / "manifest.csv").read_text() == \
            (tmp_path / f"{key}_ray" / "manifest.csv").read_text()
    files = json.loads((tmp_path / "t_ray" / "checksums.json").read_text())["files"]
    assert sorted(f for f in files if f.startswith("tasks/")) == sorted(r[5:].format() for r in rels[:3])
    assert not ray.is_initialized()
