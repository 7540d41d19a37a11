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


def test_lora_zoo_tasks_on_ray_are_bit_identical_and_a_killed_worker_is_redone(tmp_path, monkeypatch):
    from workbench.core.io import load_tensors
    from workbench.zoo.lora.tasks import collect_lora_zoo

    cfg = _tiny_lora()
    # a Ray task runs with its one CPU's thread: the same float summation order needs the same here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = collect_lora_zoo(cfg, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    marker = tmp_path / "killed"
    monkeypatch.setenv("WORKBENCH_FAULT_ONCE", f"lora_condition:{marker}")
    on_ray = collect_lora_zoo(cfg, tmp_path / "ray", progress=False, executor="ray")
    assert marker.exists()  # one worker died in a task; Ray ran it again, the driver committed it once
    names = [t.name for t in cfg.all_tasks()]
    for name in names:
        a = load_tensors(tmp_path / "local" / "tasks" / f"{name}.safetensors")
        b = load_tensors(tmp_path / "ray" / "tasks" / f"{name}.safetensors")
        assert torch.equal(a["vectors"], b["vectors"])  # bit-identical, not close
    assert local.manifest.equals(on_ray.manifest)
    files = json.loads((tmp_path / "ray" / "checksums.json").read_text())["files"]
    assert sorted(files) == sorted(f"tasks/{n}.safetensors" for n in names)
    assert not ray.is_initialized()
