"""p-diff: a parameter autoencoder plus a latent DDPM that generates parameter vectors from noise.

Pipeline: zoo vectors → normaliser (per position by default) → 1D-conv AE (noise-augmented) → latents,
standardised per latent position → UNet1D denoiser trained with the diffusion loss. Sampling runs DDPM or DDIM
in latent space, decodes, and un-normalises: the vectors come back ready for ``ParamSpec.load_into``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch

from ..alignment import ZooAlignment, align_zoo
from ..atomic_io import atomic_write_json, load_tensors, read_json, save_tensors
from ..diffusion import NoiseSchedule, SamplerState, ScheduleConfig, diffusion_loss, make_sampler
from ..nn.autoencoder import AEConfig, ParamAutoencoder
from ..nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig
from ..nn.pca import PCAAutoencoder
from ..nn.unet1d import UNet1D, UNetConfig
from ..params import Normaliser, PositionNormaliser, check_finite, load_normaliser, make_normaliser
from ..train_loop import LoopConfig, train_module

__all__ = ["PDiffConfig", "PDiff", "fit_or_load"]


@dataclass(frozen=True)
class PDiffConfig:
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

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        d = asdict(self)
        d["ae_channels"], d["unet_mults"] = list(self.ae_channels), list(self.unet_mults)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PDiffConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown p-diff config keys {sorted(unknown)}")
        if "schedule" in d:
            d["schedule"] = ScheduleConfig(**d["schedule"])
        for k in ("ae_train", "diffusion_train"):
            if k in d:
                d[k] = LoopConfig(**d[k])
        return cls(**d)

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
        self.device = torch.device(device)
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

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, zoo_or_vectors: Any, spec: Any = None, *, model: torch.nn.Module | None = None,
            run_dir: str | Path | None = None, progress: bool = True) -> "PDiff":
        """Train the autoencoder, then the latent diffusion model; resumes stages found in ``run_dir``.

        With ``align='weight_matching'`` the members are first permuted onto the reference member (``model`` — or
        the zoo's — gives the architecture); generated vectors then live in that member's frame."""
        is_zoo = hasattr(zoo_or_vectors, "vectors")
        vectors = zoo_or_vectors.vectors() if is_zoo else torch.as_tensor(zoo_or_vectors)
        spec = spec if spec is not None else (zoo_or_vectors.spec if is_zoo else None)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError(f"p-diff needs an (N >= 2, P) matrix of member vectors, got {tuple(vectors.shape)}")
        if spec is not None and vectors.shape[1] != spec.numel:
            raise ValueError(f"vectors have length {vectors.shape[1]} but the spec has {spec.numel} parameters")
        check_finite(vectors, "the zoo vectors")
        vectors = self.align(vectors, spec, model if model is not None else
                             (zoo_or_vectors.model() if is_zoo else None))
        self.fit_autoencoder(vectors, run_dir=run_dir, progress=progress)
        self.fit_diffusion(run_dir=run_dir, progress=progress, vectors=vectors)
        return self

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

        def loss_fn(g: torch.Generator) -> tuple[torch.Tensor, dict]:
            idx = torch.randint(0, len(x), (bs,), generator=g)
            return self.ae.loss(x[idx], generator=g, input_noise=input_noise, latent_noise=latent_noise)

        hist, _ = train_module(self.ae, loss_fn, cfg.ae_train, directory=run_dir, name="autoencoder",
                               progress=progress, desc="autoencoder")
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

        def loss_fn(g: torch.Generator) -> tuple[torch.Tensor, dict]:
            idx = torch.randint(0, len(z), (bs,), generator=g)
            c = cond[idx].to(self.device) if cond is not None else None
            if c is not None and cond_dropout:
                drop = torch.rand(bs, generator=g) < cond_dropout
                c = torch.where(drop.view(-1, *([1] * (c.ndim - 1))).to(self.device), null_cond.to(c), c)
            return diffusion_loss(self.unet, self.schedule, z[idx], cond=c, generator=g), {}

        hist, ema = train_module(self.unet, loss_fn, cfg.diffusion_train, directory=run_dir, name="diffusion",
                                 progress=progress, desc="latent diffusion")
        self.denoiser = ema.shadow if ema is not None else self.unet
        self.history["diffusion"] = hist
        self.seconds["diffusion"] = time.perf_counter() - t0
        return hist

    # -- sampling --------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.unet is None or self.ae is None:
            raise RuntimeError("the generator is not fitted: call fit(zoo) or PDiff.load(directory)")

    def trajectory(self, n: int, *, sampler: str = "ddim", steps: int = 50, eta: float = 0.0, seed: int = 0,
                   cond: torch.Tensor | None = None, **kw: Any) -> Iterator[SamplerState]:
        """Yield every intermediate latent state (standardised latent space) of sampling ``n`` models."""
        self._check_fitted()
        g = torch.Generator().manual_seed(seed)
        s = make_sampler(self.schedule, sampler, steps=steps, eta=eta)
        self.denoiser.eval()
        yield from s.trajectory(self.denoiser, (n, *self.latent_shape), generator=g, device=self.device,
                                cond=cond, **kw)

    def latents_to_vectors(self, z: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised latents → un-normalised parameter vectors."""
        lat = self.latent_norm.inverse(z.reshape(len(z), -1).cpu()).reshape(len(z), *self.latent_shape)
        return self.decode(lat, groups)

    def sample(self, n: int, *, sampler: str = "ddim", steps: int = 50, eta: float = 0.0, seed: int = 0,
               cond: torch.Tensor | None = None, groups: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
        """``n`` generated parameter vectors (n, P), un-normalised and ready for ``load_into``."""
        state = None
        for state in self.trajectory(n, sampler=sampler, steps=steps, eta=eta, seed=seed, cond=cond, **kw):
            pass
        return self.latents_to_vectors(state.xt.clone(), groups)

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write config, normalisers and weights (safetensors) into ``directory``."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "pdiff.json", {"config": self.config.to_dict(), "in_dim": self.in_dim,
                                             "latent_shape": list(self.latent_shape),
                                             "n_members": self.n_members,
                                             "cond_dim": self.unet.cfg.cond_dim,
                                             "cond_vocab": getattr(self.unet.cfg, "cond_vocab", 0),
                                             "seconds": self.seconds})
        if self.null_cond is not None:
            save_tensors(d / "null_condition.safetensors", {"null_cond": self.null_cond})
        if self.alignment is not None:
            self.alignment.save(d)
        self.normaliser.save(d, "normaliser")
        self.latent_norm.save(d, "latent_normaliser")
        save_tensors(d / "autoencoder_weights.safetensors", self.ae.state_dict())
        save_tensors(d / "denoiser_weights.safetensors", self.denoiser.state_dict())
        for k, h in self.history.items():
            h.to_csv(d / f"{k}_loss.csv", index=False)
        return d

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> "PDiff":
        """Inverse of :meth:`save` (no pickle anywhere)."""
        d = Path(directory)
        meta = read_json(d / "pdiff.json")
        self = cls(PDiffConfig.from_dict(meta["config"]), device=device)
        self.in_dim = int(meta["in_dim"])
        self.latent_shape = tuple(meta["latent_shape"])
        self.normaliser = load_normaliser(d, "normaliser")
        self.latent_norm = load_normaliser(d, "latent_normaliser")
        self.n_members = meta.get("n_members")
        self.ae = self.config.build_autoencoder(self.in_dim, int(self.n_members or 2)).to(self.device)
        self.ae.load_state_dict(load_tensors(d / "autoencoder_weights.safetensors"))
        self.unet = self.config.build_denoiser(self.latent_shape, int(meta.get("cond_dim", 0)),
                                               int(meta.get("cond_vocab", 0))).to(self.device)
        if (d / "null_condition.safetensors").exists():
            self.null_cond = load_tensors(d / "null_condition.safetensors")["null_cond"]
        if (d / "alignment.safetensors").exists():
            self.alignment = ZooAlignment.load(d)
        self.unet.load_state_dict(load_tensors(d / "denoiser_weights.safetensors"))
        self.denoiser = self.unet.eval()
        self.ae.eval()
        self.seconds = meta.get("seconds", {})
        for k in ("autoencoder", "diffusion"):
            p = d / f"{k}_loss.csv"
            if p.exists():
                self.history[k] = pd.read_csv(p)
        return self


def fit_or_load(zoo, config: PDiffConfig, directory: str | Path, *, progress: bool = True) -> PDiff:
    """Load the generator saved in ``directory`` if it matches ``config``; otherwise fit (resuming) and save."""
    d = Path(directory)
    if (d / "pdiff.json").exists() and read_json(d / "pdiff.json")["config"] == config.to_dict() \
            and (d / "denoiser_weights.safetensors").exists():
        return PDiff.load(d)
    gen = PDiff(config).fit(zoo, zoo.spec, model=zoo.model(), run_dir=d / "checkpoints", progress=progress)
    gen.save(d)
    return gen
