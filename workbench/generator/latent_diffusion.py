"""p-diff: a parameter autoencoder plus a latent DDPM that generates parameter vectors from noise.

Pipeline: zoo vectors → normaliser (per position by default) → 1D-conv AE (noise-augmented) → latents,
standardised per latent position → UNet1D denoiser trained with the diffusion loss. Sampling runs DDPM or DDIM
in latent space, decodes, and un-normalises: the vectors come back ready for ``ParamSpec.load_into``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from workbench.core.config import NAMED_UNKNOWN_KEYS, JSONConfig, offset_seed
from workbench.core.data_parallel import barrier, process_group
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.diffusion import (
    NoiseSchedule,
    SamplerState,
    ScheduleConfig,
    check_condition,
    check_num_samples,
    diffusion_draw,
    diffusion_loss_given,
    make_sampler,
)
from workbench.core.io import (
    CorruptFileError,
    atomic_write_csv,
    atomic_write_json,
    file_sha256,
    load_tensors,
    read_json,
    save_tensors,
    staged_directory,
)
from workbench.core.normalise import Normaliser, PositionNormaliser, load_normaliser, make_normaliser
from workbench.core.params import ParamSpec, check_finite
from workbench.core.progress import progress_label
from workbench.core.result_cache import data_fingerprint
from workbench.core.train_loop import LoopConfig, RunDirMismatchError, SplitLoss, read_history, train_module
from workbench.generator.alignment import ZooAlignment, align_zoo
from workbench.nn.autoencoder import AEConfig, ParamAutoencoder
from workbench.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig
from workbench.nn.pca import PCAAutoencoder
from workbench.nn.unet1d import UNet1D, UNetConfig
from workbench.zoo.protocol import ParameterZoo, check_zoo

__all__ = ["PDiffConfig", "PDiff", "fit_or_load", "seeded_pdiff_config", "GeneratorLoadError", "data_fingerprint", "check_bundle",
           "seal_bundle"]


class GeneratorLoadError(CorruptFileError):
    """A saved generator is incomplete, altered, or its files do not fit one another."""


def _config_sha(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def check_bundle(d: Path, meta: dict, marker: str) -> None:
    """Verify a saved bundle against the checksums its marker file recorded (files and the config itself)."""
    if "config_sha256" in meta and _config_sha(meta["config"]) != meta["config_sha256"]:
        raise GeneratorLoadError(f"{d / marker}: its config was edited after saving and no longer matches the "
                                 "weights saved with it; restore the file, or re-fit and save again")
    for name, sha in meta.get("files", {}).items():
        path = d / name
        if not path.exists():
            raise GeneratorLoadError(f"{d} is incomplete: {name} is missing; re-save the generator (or re-fit)")
        if file_sha256(path) != sha:
            raise GeneratorLoadError(f"{path} was altered after the generator was saved (checksum mismatch); "
                                     "restore it, or re-fit and save again")


def open_bundle(d: Path, marker: str, what: str) -> dict:
    """The metadata a saved bundle's marker holds (FileNotFoundError naming ``what`` when it was never saved)."""
    if not (d / marker).exists():
        raise FileNotFoundError(f"no saved {what} in {d} ({marker} is missing: never saved there, or its save was "
                                "interrupted); fit and save it again")
    return read_json(d / marker)


@contextmanager
def bundle_errors(d: Path, what: str) -> Iterator[None]:
    """Turn what a damaged bundle raises while loading (a missing key, a shape that does not fit) into one
    :class:`GeneratorLoadError` naming the folder and the fix."""
    try:
        yield
    except GeneratorLoadError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise GeneratorLoadError(f"{d} is not a consistent saved {what} ({type(e).__name__}: {str(e)[:200]}); "
                                 "re-fit and save again") from None


def seal_bundle(stage: Path, meta: dict, marker: str, skip: tuple[str, ...] = ("_loss.csv",)) -> None:
    """Write ``marker`` with the sha256 of every file already in ``stage`` (records like loss CSVs excepted)."""
    meta = {**meta, "config_sha256": _config_sha(meta["config"]),
            "files": {f.name: file_sha256(f) for f in sorted(stage.iterdir())
                      if f.is_file() and not f.name.endswith(skip)}}
    atomic_write_json(stage / marker, meta)


@dataclass(frozen=True)
class PDiffConfig(JSONConfig, name="p-diff config", unknown_keys=NAMED_UNKNOWN_KEYS):
    """Everything that defines a p-diff generator (saved as JSON beside its weights)."""

    normaliser: str = "position"
    ae_channels: tuple[int, ...] = (32, 64, 128, 128)
    latent_channels: int = 4
    fold: int = 1
    input_noise: float = 0.001
    latent_noise: float = 0.1
    variational: bool = False
    beta: float = 1e-4
    unet_channels: int = 64
    unet_mults: tuple[int, ...] = (1, 2, 2)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ae_train: LoopConfig = field(default_factory=lambda: LoopConfig(steps=1500, batch_size=64, lr=1e-3))
    diffusion_train: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, batch_size=64, lr=1e-3,
                                                                           ema_decay=0.995))
    # Entire models from independent seeds (the p-diff defaults above stay for dense-checkpoint zoos):
    align: str = "none"              # "weight_matching": permute every member onto `align_reference` first
    align_reference: int = 0
    autoencoder: str = "conv"        # "pca": closed-form linear AE (whitened coefficients), exact on the zoo
    pca_components: int = 0          # 0: all N - 1
    denoiser: str = "unet"           # "mlp": residual MLP, for latents without positional structure (PCA)
    mlp_hidden: int = 512
    mlp_depth: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_channels", tuple(self.ae_channels))
        object.__setattr__(self, "unet_mults", tuple(self.unet_mults))
        for name, value, allowed in (("align", self.align, ("none", "weight_matching")),
                                     ("autoencoder", self.autoencoder, ("conv", "pca")),
                                     ("denoiser", self.denoiser, ("unet", "mlp"))):
            if value not in allowed:
                raise ValueError(f"p-diff config {name}={value!r}: use one of {allowed}")

    def ae_config(self, in_dim: int) -> AEConfig:
        """The autoencoder for vectors of length ``in_dim``."""
        return AEConfig(in_dim=in_dim, channels=self.ae_channels, latent_channels=self.latent_channels,
                        fold=self.fold, input_noise=self.input_noise, latent_noise=self.latent_noise,
                        variational=self.variational, beta=self.beta)

    def unet_config(self, cond_dim: int = 0, cond_vocab: int = 0) -> UNetConfig:
        """The latent UNet denoiser."""
        return UNetConfig(in_channels=self.latent_channels, base_channels=self.unet_channels,
                          channel_mults=self.unet_mults, cond_dim=cond_dim, cond_vocab=cond_vocab)

    def build_autoencoder(self, in_dim: int, n_members: int) -> torch.nn.Module:
        """The (untrained) autoencoder for vectors of length ``in_dim`` from a zoo of ``n_members``."""
        if self.autoencoder == "pca":
            return PCAAutoencoder(in_dim, self.pca_components or n_members - 1)
        return ParamAutoencoder(self.ae_config(in_dim))

    def build_denoiser(self, latent_shape: tuple[int, ...], cond_dim: int = 0, cond_vocab: int = 0
                       ) -> torch.nn.Module:
        """The (untrained) latent denoiser."""
        if self.denoiser == "mlp":
            if cond_vocab:
                raise ValueError("a learnable condition table needs denoiser='unet'")
            return MLPDenoiser(MLPDenoiserConfig(in_features=int(math.prod(latent_shape)), hidden=self.mlp_hidden,
                                                 depth=self.mlp_depth, cond_dim=cond_dim))
        if latent_shape[0] != self.latent_channels:
            raise ValueError(f"the UNet denoiser expects {self.latent_channels} latent channels, the autoencoder "
                             f"gives {latent_shape[0]}: use denoiser='mlp' with autoencoder='pca'")
        return UNet1D(self.unet_config(cond_dim, cond_vocab))


class PDiff:
    """Unconditional latent diffusion over parameter vectors."""

    def __init__(self, config: PDiffConfig | None = None, *, device: str | torch.device = "cpu") -> None:
        self.config = config or PDiffConfig()
        self.device = resolve_device(device)
        self.normaliser: Normaliser | None = None
        self.latent_norm: PositionNormaliser | None = None
        self.ae: ParamAutoencoder | None = None
        self.unet: UNet1D | None = None
        self.schedule = NoiseSchedule(self.config.schedule)
        self.history: dict[str, pd.DataFrame] = {}
        self.seconds: dict[str, float] = {}
        self.in_dim: int | None = None
        self.n_members: int | None = None
        self.alignment: ZooAlignment | None = None
        self.null_cond: torch.Tensor | None = None
        self.fingerprint: str | None = None  # sha256 of what fit() trained on (see data_fingerprint)

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, zoo_or_vectors: ParameterZoo | torch.Tensor, spec: ParamSpec | None = None, *,
            model: torch.nn.Module | None = None, run_dir: str | Path | None = None, progress: bool = True) -> "PDiff":
        """Train the autoencoder, then the latent diffusion model; resumes stages found in ``run_dir``.

        ``zoo_or_vectors``: an (N, P) tensor (or array) of member vectors, or any zoo implementing
        :class:`~workbench.zoo.protocol.ParameterZoo` (its seen members; its spec and model unless given).
        With ``align='weight_matching'`` the members are first permuted onto the reference member (``model`` — or
        the zoo's — gives the architecture); generated vectors then live in that member's frame."""
        zoo = None
        if isinstance(zoo_or_vectors, (torch.Tensor, np.ndarray)):
            vectors = torch.as_tensor(zoo_or_vectors)
        else:
            check_zoo(zoo_or_vectors, "p-diff's training data (a tensor of member vectors, or a zoo)")
            zoo = zoo_or_vectors
            vectors = zoo.vectors()
            spec = spec if spec is not None else zoo.spec
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError(f"p-diff needs an (N >= 2, P) matrix of member vectors, got {tuple(vectors.shape)}")
        if spec is not None and vectors.shape[1] != spec.numel:
            raise ValueError(f"vectors have length {vectors.shape[1]} but the spec has {spec.numel} parameters")
        check_finite(vectors, "the zoo vectors")
        self.fingerprint = data_fingerprint(vectors, config=self.config.to_dict())
        if run_dir is not None:
            self.claim_run_dir(run_dir, self.fingerprint, len(vectors))
        if model is None and zoo is not None and self.config.align != "none":
            model = zoo.model()  # only alignment needs the architecture
        vectors = self.align(vectors, spec, model)
        self.fit_autoencoder(vectors, run_dir=run_dir, progress=progress)
        self.fit_diffusion(run_dir=run_dir, progress=progress, vectors=vectors)
        return self

    @staticmethod
    def claim_run_dir(run_dir: str | Path, fingerprint: str, n_members: int) -> None:
        """Record what ``run_dir`` trains on, or refuse when it already holds a run on other data/config."""
        path = Path(run_dir) / "fingerprint.json"
        if path.exists():
            old = read_json(path)
            if old.get("fingerprint") != fingerprint:
                raise RunDirMismatchError(
                    f"{run_dir} holds a generator run on other data or another config (fingerprint "
                    f"{str(old.get('fingerprint'))[:12]}, {old.get('n_members')} members; this fit: {fingerprint[:12]}, "
                    f"{n_members} members). Use another run_dir, or delete it to start over")
            return
        atomic_write_json(path, {"fingerprint": fingerprint, "n_members": n_members,
                                 "what": "sha256 of the training vectors' bytes and the generator config"})

    def align(self, vectors: torch.Tensor, spec: Any, model: torch.nn.Module | None) -> torch.Tensor:
        """The representation step before normalising: permutation alignment if configured (else identity)."""
        if self.config.align == "none":
            return vectors
        if spec is None or model is None:
            raise ValueError("align='weight_matching' needs the ParamSpec and a model of the architecture: "
                             "fit(zoo) or fit(vectors, spec, model=...)")
        t0 = time.perf_counter()
        aligned, self.alignment = align_zoo(vectors, spec, model, reference=self.config.align_reference)
        self.seconds["alignment"] = time.perf_counter() - t0
        return aligned

    def fit_autoencoder(self, vectors: torch.Tensor, *, run_dir: str | Path | None = None, progress: bool = True,
                        input_noise: float | None = None, latent_noise: float | None = None,
                        groups: torch.Tensor | None = None) -> pd.DataFrame:
        """Stage 1: fit the normaliser and the noise-augmented autoencoder."""
        cfg = self.config
        t0 = time.perf_counter()
        self.in_dim, self.n_members = vectors.shape[1], len(vectors)
        self.normaliser = make_normaliser(cfg.normaliser).fit(vectors, groups)
        x = self.normaliser.transform(vectors, groups).to(self.device)
        torch.manual_seed(cfg.ae_train.seed)
        self.ae = cfg.build_autoencoder(self.in_dim, len(vectors)).to(self.device)
        if cfg.autoencoder == "pca":  # closed form: nothing to train
            self.ae.fit(x)
            self.seconds["autoencoder"] = time.perf_counter() - t0
            self.history["autoencoder"] = pd.DataFrame(columns=["step", "loss"])
            return self.history["autoencoder"]
        bs = min(cfg.ae_train.batch_size, len(x))

        ae = self.ae
        # the step's randomness drawn on the CPU, the rest on the device: a CUDA graph can replay the second part
        loss_fn = SplitLoss(
            draw=lambda g: (torch.randint(0, len(x), (bs,), generator=g),
                            *ae.draw_noise(bs, g, input_noise, latent_noise)),
            compute=lambda idx, *noise: ae.loss_given_noise(x[idx], *noise, input_noise=input_noise,
                                                            latent_noise=latent_noise),
            device=self.device)

        hist, _ = train_module(self.ae, loss_fn, cfg.ae_train, directory=run_dir, name="autoencoder",
                               progress=progress, desc="autoencoder",
                               fingerprint=data_fingerprint(vectors, groups, config={
                                   **cfg.to_dict(), "input_noise_override": input_noise,
                                   "latent_noise_override": latent_noise}))
        self.history["autoencoder"] = hist
        self.seconds["autoencoder"] = time.perf_counter() - t0
        return hist

    def encode(self, vectors: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Un-normalised vectors → AE latents (B, C, L), before latent standardisation."""
        with torch.no_grad():
            return self.ae.eval().encode(self.normaliser.transform(vectors, groups).to(self.device))

    def decode(self, latents: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """AE latents → un-normalised vectors (float32, CPU); ``groups`` picks task statistics when needed."""
        with torch.inference_mode():
            return self.normaliser.inverse(self.ae.eval().decode(latents.to(self.device)).cpu(), groups)

    def reconstruct(self, vectors: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Encode and decode (no noise): what the AE preserves of each member."""
        return self.decode(self.encode(vectors, groups), groups)

    def fit_diffusion(self, *, vectors: torch.Tensor, run_dir: str | Path | None = None, progress: bool = True,
                      cond: torch.Tensor | None = None, cond_dim: int = 0, cond_vocab: int = 0,
                      cond_dropout: float = 0.0, null_cond: torch.Tensor | None = None,
                      groups: torch.Tensor | None = None) -> pd.DataFrame:
        """Stage 2: latent DDPM on standardised AE latents.

        With ``cond`` (one row per member) the denoiser is conditional; ``cond_dropout`` replaces that fraction of
        conditions by ``null_cond`` during training so classifier-free guidance can be used when sampling."""
        cfg = self.config
        t0 = time.perf_counter()
        if cond_dropout and null_cond is None:
            raise ValueError("condition dropout needs the null condition (null_cond=...)")
        self.null_cond = null_cond
        lat = self.encode(vectors, groups).cpu()
        self.latent_shape = tuple(lat.shape[1:])
        self.latent_norm = PositionNormaliser().fit(lat.reshape(len(lat), -1))
        z = self.latent_norm.transform(lat.reshape(len(lat), -1)).reshape(lat.shape).to(self.device)
        torch.manual_seed(cfg.diffusion_train.seed)
        self.unet = cfg.build_denoiser(self.latent_shape, cond_dim, cond_vocab).to(self.device)
        bs = min(cfg.diffusion_train.batch_size, len(z))

        cond_on = cond.to(self.device) if cond is not None else None  # moved once, gathered per step there
        null_on = null_cond.to(self.device) if null_cond is not None else None
        unet, schedule, batch_shape = self.unet, self.schedule, (bs, *self.latent_shape)

        def draw(g: torch.Generator) -> tuple[torch.Tensor | None, ...]:
            idx = torch.randint(0, len(z), (bs,), generator=g)
            drop = torch.rand(bs, generator=g) < cond_dropout if cond is not None and cond_dropout else None
            return (idx, drop, *diffusion_draw(schedule, batch_shape, g))

        def compute(idx, drop, t, noise) -> tuple[torch.Tensor, dict]:
            c = cond_on[idx] if cond_on is not None else None
            if drop is not None:
                c = torch.where(drop.view(-1, *([1] * (c.ndim - 1))), null_on.to(c), c)
            return diffusion_loss_given(unet, schedule, z[idx], t, noise, cond=c), {}

        loss_fn = SplitLoss(draw=draw, compute=compute, device=self.device)

        hist, ema = train_module(self.unet, loss_fn, cfg.diffusion_train, directory=run_dir, name="diffusion",
                                 progress=progress, desc="latent diffusion",
                                 fingerprint=data_fingerprint(z, cond, groups, config={
                                     **cfg.to_dict(), "cond_dropout": cond_dropout, "cond_vocab": cond_vocab}))
        self.denoiser = ema.shadow if ema is not None else self.unet
        self.history["diffusion"] = hist
        self.seconds["diffusion"] = time.perf_counter() - t0
        return hist

    # -- sampling --------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.unet is None or self.ae is None:
            raise RuntimeError("the generator is not fitted: call fit(zoo) or PDiff.load(directory)")

    def trajectory(self, n: int, *, sampler: str = "ddim", steps: int | None = None, eta: float = 0.0,
                   seed: int = 0, cond: torch.Tensor | None = None, **kw: Any) -> Iterator[SamplerState]:
        """Every intermediate latent state (standardised latent space) of sampling ``n`` models.

        ``steps``: DDIM's number of steps (default 50); DDPM always runs all T steps of the schedule. The arguments
        are checked now — ``n`` >= 1, ``cond`` of shape (n, D) with the D the denoiser was trained with (none for an
        unconditional generator), the sampler, steps, eta and guidance — so a bad one is a ValueError before any
        sampling; the states come lazily."""

        self._check_fitted()
        check_num_samples(n)
        dcfg = self.unet.cfg
        check_condition(cond, n, int(getattr(dcfg, "cond_dim", 0)), cond_vocab=int(getattr(dcfg, "cond_vocab", 0)),
                        null_cond=kw.get("null_cond"))
        g = torch.Generator().manual_seed(seed)
        s = make_sampler(self.schedule, sampler, steps=steps, eta=eta)
        states = s.trajectory(self.denoiser, (n, *self.latent_shape), generator=g, device=self.device, cond=cond,
                              **kw)
        self.denoiser.eval()
        return states

    def latents_to_vectors(self, z: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised latents → un-normalised parameter vectors."""
        lat = self.latent_norm.inverse(z.reshape(len(z), -1).cpu()).reshape(len(z), *self.latent_shape)
        return self.decode(lat, groups)

    def sample(self, n: int, *, sampler: str = "ddim", steps: int | None = None, eta: float = 0.0, seed: int = 0,
               cond: torch.Tensor | None = None, groups: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
        """``n`` generated parameter vectors (n, P), un-normalised and ready for ``load_into``.

        ``sampler``: ``"ddim"`` (``steps`` steps, default 50; ``eta`` in [0, 1], 0: deterministic) or ``"ddpm"``
        (always all T steps of the schedule: an explicit ``steps`` other than T is a ValueError)."""
        state = None
        for state in self.trajectory(n, sampler=sampler, steps=steps, eta=eta, seed=seed, cond=cond, **kw):
            pass
        return self.latents_to_vectors(state.xt.clone(), groups)

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write config, normalisers and weights (safetensors) into ``directory``: complete or not at all (the
        files are staged, then published with ``pdiff.json`` last, which records every file's sha256)."""
        self._check_fitted()
        with staged_directory(directory, "pdiff.json") as stage:
            self.write_bundle(stage)
        return Path(directory)

    def write_bundle(self, d: Path) -> None:
        """Write every file of the saved generator into the (staging) folder ``d``, ``pdiff.json`` last."""
        if self.null_cond is not None:
            save_tensors(d / "null_condition.safetensors", {"null_cond": self.null_cond})
        if self.alignment is not None:
            self.alignment.save(d)
        self.normaliser.save(d, "normaliser")
        self.latent_norm.save(d, "latent_normaliser")
        save_tensors(d / "autoencoder_weights.safetensors", self.ae.state_dict())
        save_tensors(d / "denoiser_weights.safetensors", self.denoiser.state_dict())
        for k, h in self.history.items():
            atomic_write_csv(d / f"{k}_loss.csv", h)
        seal_bundle(d, {"config": self.config.to_dict(), "in_dim": self.in_dim, "latent_shape": list(self.latent_shape),
                  "n_members": self.n_members, "cond_dim": self.unet.cfg.cond_dim,
                  "cond_vocab": getattr(self.unet.cfg, "cond_vocab", 0), "seconds": self.seconds,
                  "fingerprint": self.fingerprint}, "pdiff.json")

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> "PDiff":
        """Inverse of :meth:`save` (no pickle anywhere); every file is checked against its recorded checksum."""
        d = Path(directory)
        if not (d / "pdiff.json").exists():
            raise FileNotFoundError(f"no saved p-diff generator in {d} (pdiff.json is missing: it was never saved "
                                    "there, or its save was interrupted); fit and save it again")
        meta = read_json(d / "pdiff.json")
        try:
            check_bundle(d, meta, "pdiff.json")
            config = PDiffConfig.from_dict(meta["config"])
            in_dim, latent_shape = int(meta["in_dim"]), tuple(int(k) for k in meta["latent_shape"])
            cond_dim, cond_vocab = int(meta.get("cond_dim", 0)), int(meta.get("cond_vocab", 0))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, GeneratorLoadError):
                raise
            raise GeneratorLoadError(f"{d / 'pdiff.json'} is not a valid saved generator ({type(e).__name__}: "
                                     f"{e}); re-fit and save again") from None
        files = meta.get("files")
        has = (lambda name: name in files) if files is not None else (lambda name: (d / name).exists())
        self = cls(config, device=device)
        self.in_dim, self.latent_shape = in_dim, latent_shape
        self.normaliser = load_normaliser(d, "normaliser")
        self.latent_norm = load_normaliser(d, "latent_normaliser")
        self.n_members = meta.get("n_members")
        self.fingerprint = meta.get("fingerprint")
        self.ae = self.config.build_autoencoder(self.in_dim, int(self.n_members or 2)).to(self.device)
        self.unet = self.config.build_denoiser(self.latent_shape, cond_dim, cond_vocab).to(self.device)
        for module, name in ((self.ae, "autoencoder_weights.safetensors"), (self.unet, "denoiser_weights.safetensors")):
            try:
                module.load_state_dict(load_tensors(d / name))
            except RuntimeError as e:  # torch's size-mismatch / missing-key report
                first = str(e).strip().splitlines()
                raise GeneratorLoadError(f"{d / name} does not fit the configuration in {d / 'pdiff.json'} "
                                         f"({first[1].strip() if len(first) > 1 else first[0][:200]}); the folder "
                                         "mixes files of two generators — re-fit and save again") from None
        if has("null_condition.safetensors"):
            self.null_cond = load_tensors(d / "null_condition.safetensors")["null_cond"]
        if has("alignment.safetensors"):
            self.alignment = ZooAlignment.load(d)
        self.denoiser = self.unet.eval()
        self.ae.eval()
        self.seconds = meta.get("seconds", {})
        for k in ("autoencoder", "diffusion"):
            p = d / f"{k}_loss.csv"
            records = read_history(p) if p.exists() else None
            if records is not None:
                self.history[k] = pd.DataFrame(records)
        return self


def seeded_pdiff_config(config: PDiffConfig, seed: int) -> PDiffConfig:
    """The generator config with both training streams (autoencoder, diffusion) moved by ``seed`` (0: unchanged)."""
    if seed == 0:
        return config
    return replace(config, ae_train=offset_seed(config.ae_train, seed),
                   diffusion_train=offset_seed(config.diffusion_train, seed))


def fit_or_load(zoo: ParameterZoo, config: PDiffConfig, directory: str | Path, *, progress: bool = True,
                device: DeviceLike = "cpu") -> PDiff:
    """Load the generator saved in ``directory`` if it matches ``config``; otherwise fit (resuming) and save —
    on ``device`` either way; under ``accelerate launch`` only the main process saves."""
    check_zoo(zoo)
    d = Path(directory)
    if (d / "pdiff.json").exists() and read_json(d / "pdiff.json").get("config") == config.to_dict():
        gen = PDiff.load(d, device=device)
        expected = data_fingerprint(zoo.vectors(), config=config.to_dict())
        if gen.fingerprint not in (None, expected):
            names = ", ".join(c.name for c in zoo.conditions if c.seen)
            raise RunDirMismatchError(f"{d} holds a generator fitted on other data than this zoo's members "
                                      f"({names}); use another directory, or delete it to re-fit")
        return gen
    with progress_label(d.name):  # bars say which generator they train
        gen = PDiff(config, device=device).fit(zoo, run_dir=d / "checkpoints", progress=progress)
    group = process_group(gen.device)
    if group.is_main:
        gen.save(d)
    barrier(group)
    return gen
