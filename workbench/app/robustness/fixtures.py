"""Small, real artefacts for the bad-input matrix: built once per run in a temporary folder, copied per case.

Everything here is seconds-sized on 2 CPU cores: a dense zoo of 6 members in 3 shards, a seeds zoo of 4, a p-diff
generator fitted for a few steps, and a Cond P-Diff generator on a 3-task LoRA zoo with a text condition."""

from __future__ import annotations

import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

from workbench.core.train_loop import LoopConfig
from workbench.generator.latent_diffusion import PDiff, PDiffConfig
from workbench.systems.cond_pdiff.generator import CondPDiff, CondPDiffConfig
from workbench.zoo import ArchConfig, DataConfig, TrainConfig, Zoo, ZooConfig, collect
from workbench.zoo.lora.tasks import LoRAZooConfig, collect_lora_zoo

__all__ = ["Fixtures", "DENSE", "SEEDS"]


def _mlp_zoo(protocol: str, n_members: int, epochs: int):
    return ZooConfig(name=f"tiny_{protocol}", protocol=protocol,
                     data=DataConfig(name="mnist5k", n_train=300, n_test=100),
                     arch=ArchConfig(name="mlp3", input_shape=(1, 28, 28), num_classes=10, hidden=(8, 8)),
                     train=TrainConfig(epochs=epochs, batch_size=64, lr=0.05), n_members=n_members,
                     select=("fc2.*", "fc3.*") if protocol == "dense_subset" else ("*",), chunk_size=2)


DENSE = _mlp_zoo("dense_subset", 6, 2)
SEEDS = _mlp_zoo("seeds", 4, 1)


class Fixtures:
    """Lazily built artefacts under ``root`` (a fresh temporary folder unless given)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="wb-robustness-"))
        self._n = 0

    def fresh(self, name: str = "case") -> Path:
        """A new, empty directory for one case."""
        self._n += 1
        d = self.root / "cases" / f"{self._n:04d}-{name}"
        d.mkdir(parents=True)
        return d

    def copy(self, src: Path, name: str = "copy") -> Path:
        """A private copy of a fixture directory (cases that corrupt or tamper work on their own copy)."""
        dst = self.fresh(name) / src.name
        shutil.copytree(src, dst)
        return dst

    # -- zoos -----------------------------------------------------------------------------------------
    @cached_property
    def dense_zoo(self) -> Path:
        """A collected dense-checkpoint zoo (6 members, 3 shards)."""
        root = self.root / "dense_zoo"
        collect(DENSE, root, progress=False)
        return root

    @cached_property
    def seeds_zoo(self) -> Path:
        """A collected independent-seeds zoo (4 members, 2 shards)."""
        root = self.root / "seeds_zoo"
        collect(SEEDS, root, progress=False)
        return root

    def zoo_copy(self, kind: str = "dense") -> Path:
        """A private copy of the dense (or seeds) zoo."""
        return self.copy(self.dense_zoo if kind == "dense" else self.seeds_zoo, f"{kind}-zoo")

    # -- generators -----------------------------------------------------------------------------------
    @cached_property
    def pdiff_config(self):
        """A seconds-sized p-diff configuration (conv AE + UNet, 30 steps each)."""
        return PDiffConfig(ae_channels=(8, 8), latent_channels=2, unet_channels=8, unet_mults=(1, 2),
                           ae_train=LoopConfig(steps=30, batch_size=6, checkpoint_every=10),
                           diffusion_train=LoopConfig(steps=30, batch_size=6, checkpoint_every=10))

    @cached_property
    def pdiff(self) -> Any:
        """A fitted p-diff generator on the dense zoo."""
        return PDiff(self.pdiff_config).fit(Zoo(self.dense_zoo), progress=False)

    @cached_property
    def pdiff_dir(self) -> Path:
        """Where :attr:`pdiff` is saved."""
        d = self.root / "pdiff"
        self.pdiff.save(d)
        return d

    def pdiff_copy(self) -> Path:
        """A private copy of the saved p-diff generator."""
        return self.copy(self.pdiff_dir, "pdiff")

    @cached_property
    def lora_config(self):
        """A seconds-sized LoRA zoo: 3 seen digit tasks and 1 unseen."""
        return LoRAZooConfig(n_train=200, n_test=80, image_size=32, steps=12, keep_last=4, rank=2,
                             tasks=("even", "greater_than_4", "zero_or_six"), unseen=("odd",))

    @cached_property
    def lora_zoo(self) -> Any:
        """The collected LoRA zoo."""
        return collect_lora_zoo(self.lora_config, self.root / "lora_zoo", progress=False)

    @cached_property
    def cond(self) -> Any:
        """A fitted Cond P-Diff generator (text condition, guidance-ready) on :attr:`lora_zoo`."""
        cfg = CondPDiffConfig(pdiff=PDiffConfig(normaliser="task", autoencoder="pca", pca_components=6,
                                                latent_channels=1, unet_channels=8, denoiser="mlp", mlp_hidden=32,
                                                mlp_depth=1, diffusion_train=LoopConfig(steps=20, batch_size=8)),
                              cond_dropout=0.2)
        return CondPDiff(cfg, cache_dir=self.root / "text_cache").fit(self.lora_zoo, progress=False)

    @cached_property
    def cond_dir(self) -> Path:
        """Where :attr:`cond` is saved."""
        d = self.root / "cond"
        self.cond.save(d)
        return d

    def cond_copy(self) -> Path:
        """A private copy of the saved Cond P-Diff generator."""
        return self.copy(self.cond_dir, "cond")

    def cleanup(self) -> None:
        """Remove the temporary folder."""
        shutil.rmtree(self.root, ignore_errors=True)
