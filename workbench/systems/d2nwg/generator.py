"""D2NWG: dataset-conditioned latent diffusion of classifier heads (Soro et al., ICLR 2025), class-ordered.

Three stages, as in the paper:

1. **β-VAE** on the weights, then frozen. A head is ``ways`` rows (weight row + bias of one class); the VAE encodes
   each row (normalised per position over all seen rows) into a latent token, so a head is ``ways`` tokens.
2. **Dataset encoder aligned to the latents**: a Set Transformer (:class:`~workbench.nn.set_transformer.
   ClassSetEncoder`) turns ``shots`` support features per class into one embedding per class, in label order,
   each aware of the other classes of its dataset; an InfoNCE loss aligns class embedding ``c`` with the VAE
   latent of row ``c`` of that dataset's heads (other rows and datasets of the batch are the negatives). The
   encoder is then frozen.
3. **Conditional latent diffusion** over the ``ways`` latent tokens: a transformer denoiser without positional
   embeddings (permutation-equivariant over classes) whose token ``c`` receives class ``c``'s embedding through one
   linear adapter; condition dropout enables classifier-free guidance.

*Why rows are tied to classes:* nothing in stages 2–3 knows a class's position except through its embedding, and
both networks are equivariant over classes, so permuting a support set's labels permutes the generated rows the
same way when each class's initial noise moves with it (tested; with the same seed the noise stays per position,
so the relabelled set gets another draw from the permuted distribution) — the generated head's row ``c`` scores
the support set's class ``c`` by construction.

Every support set is drawn from a dataset's **training** split (fresh draws every training step, so the
conditions the denoiser learns from are k-shot encodings, not one fixed encoding per dataset).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.config import JSONConfig
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.diffusion import (
    NoiseSchedule,
    SamplerState,
    ScheduleConfig,
    check_guidance_scale,
    check_num_samples,
    diffusion_loss,
    make_sampler,
)
from workbench.core.io import (
    atomic_write_csv,
    atomic_write_json,
    load_tensors,
    read_json,
    save_tensors,
    staged_directory,
)
from workbench.core.params import check_finite
from workbench.core.progress import progress_label
from workbench.core.train_loop import LoopConfig, read_history, train_module
from workbench.data import TaskData
from workbench.generator.latent_diffusion import (
    bundle_errors,
    check_bundle,
    data_fingerprint,
    open_bundle,
    seal_bundle,
)
from workbench.nn.set_transformer import ClassSetEncoder, SetEncoderConfig
from workbench.nn.token_denoiser import TokenDenoiser, TokenDenoiserConfig
from workbench.nn.vae import VAEConfig, VectorVAE
from workbench.systems.d2nwg.features import BackboneSettings, ImageFeaturizer
from workbench.systems.d2nwg.heads import heads_to_rows, rows_to_heads
from workbench.systems.d2nwg.zoo import SupportSet

__all__ = ["D2NWGConfig", "D2NWG", "as_support", "fit_or_load_d2nwg"]

MARKER = "d2nwg.json"


@dataclass(frozen=True)
class D2NWGConfig(JSONConfig, name="D2NWG config"):
    """Every setting of the generator (saved as JSON beside its weights)."""

    # stage 1: β-VAE over head rows (beta = 0: p-diff's noise-augmented AE, the ablation)
    latent_dim: int = 32
    vae_hidden: int = 256
    vae_depth: int = 2
    beta: float = 1e-3
    input_noise: float = 0.001
    latent_noise: float = 0.1
    # stage 2: dataset encoder (Set Transformer, or "mean" pooling: the ablation) and its contrastive alignment
    pooling: str = "set_transformer"
    encoder_dim: int = 128
    encoder_heads: int = 4
    n_inducing: int = 16
    n_isab: int = 2
    n_cross: int = 1
    encoder_out: int = 64
    shots: int = 5                 # support examples per class the encoder sees in training
    contrastive: bool = True       # False: no alignment stage, the encoder trains with the diffusion loss instead
    temperature: float = 0.1
    proj_dim: int = 64
    # stage 3: latent diffusion over the class tokens
    denoiser_hidden: int = 256
    denoiser_depth: int = 3
    denoiser_heads: int = 4
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    cond_dropout: float = 0.1
    guidance_scale: float = 2.0   # measured on the default preset: seen 93.0 % vs 89.6 % at 1.0, held out 66.1 vs 63.8
    support_draws: int = 32        # support draws per seen dataset pre-encoded for the diffusion stage
    vae_train: LoopConfig = field(default_factory=lambda: LoopConfig(steps=1500, batch_size=256, lr=1e-3))
    align_train: LoopConfig = field(default_factory=lambda: LoopConfig(steps=600, batch_size=32, lr=1e-3))
    diffusion_train: LoopConfig = field(default_factory=lambda: LoopConfig(steps=3000, batch_size=64, lr=1e-3,
                                                                           ema_decay=0.995))

    def __post_init__(self) -> None:
        if self.pooling not in ("set_transformer", "mean"):
            raise ValueError(f"pooling={self.pooling!r}: use 'set_transformer' or 'mean'")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.shots < 1 or self.support_draws < 1 or self.temperature <= 0:
            raise ValueError("shots and support_draws must be >= 1 and temperature > 0")

    def vae_config(self, in_dim: int) -> VAEConfig:
        """The row β-VAE."""
        return VAEConfig(in_dim=in_dim, latent_dim=self.latent_dim, hidden=self.vae_hidden, depth=self.vae_depth,
                         beta=self.beta, input_noise=self.input_noise, latent_noise=self.latent_noise)

    def encoder_config(self, in_features: int) -> SetEncoderConfig:
        """The class-ordered dataset encoder."""
        return SetEncoderConfig(in_features=in_features, dim=self.encoder_dim, heads=self.encoder_heads,
                                n_inducing=self.n_inducing, n_isab=self.n_isab, n_cross=self.n_cross,
                                out_dim=self.encoder_out, pooling=self.pooling)

    def denoiser_config(self) -> TokenDenoiserConfig:
        """The token denoiser (one token per class row)."""
        return TokenDenoiserConfig(token_dim=self.latent_dim, cond_dim=self.encoder_out, hidden=self.denoiser_hidden,
                                   depth=self.denoiser_depth, heads=self.denoiser_heads)


def stage1_settings(cfg: D2NWGConfig) -> dict:
    """The settings stage 1 (the β-VAE) depends on: equal ones give the same VAE on the same data."""
    keys = ("latent_dim", "vae_hidden", "vae_depth", "beta", "input_noise", "latent_noise", "vae_train")
    d = cfg.to_dict()
    return {k: d[k] for k in keys}


def as_support(support: Any, featurizer: ImageFeaturizer | Callable[[], ImageFeaturizer] | None = None
               ) -> SupportSet:
    """A :class:`SupportSet` from what a user has: a SupportSet; a pair ``(x, labels)`` of features (N, F) or images
    (N, C, H, W) in [0, 1]; a :class:`~workbench.data.TaskData` (its training split); or a torch Dataset of
    (image, label) pairs. Images go through ``featurizer`` (the zoo's frozen backbone), or through the one a
    zero-argument ``featurizer()`` returns — built only when the support set holds images."""
    if isinstance(support, SupportSet):
        return support
    if isinstance(support, TaskData):
        x, y = support.x_train, support.y_train
    elif isinstance(support, (tuple, list)) and len(support) == 2:
        x, y = support
    elif isinstance(support, torch.utils.data.Dataset):
        items = [support[i] for i in range(len(support))]
        x, y = torch.stack([torch.as_tensor(a) for a, _ in items]), torch.as_tensor([int(b) for _, b in items])
    else:
        raise TypeError(f"a support set is a SupportSet, (features or images, labels), a TaskData or a torch Dataset "
                        f"of (image, label) pairs; got {type(support).__name__}")
    x, y = torch.as_tensor(x).float(), torch.as_tensor(y)
    if y.is_floating_point():
        if (y != y.round()).any():
            raise ValueError("support labels must be class indices 0..ways-1, got non-integer values")
        y = y.long()
    if x.ndim == 4:
        if featurizer is None:
            raise ValueError("a support set of images needs the backbone: pass featurizer= (e.g. zoo.featurizer) or "
                             "use D2NWG.sample, which builds it")
        if not isinstance(featurizer, ImageFeaturizer):
            featurizer = featurizer()
        return SupportSet.from_images(x, y, featurizer)
    if x.ndim != 2:
        raise ValueError(f"support inputs are features (N, F) or images (N, C, H, W), got shape {tuple(x.shape)}")
    return SupportSet(x, y)


class _Standardiser:
    """Per-position mean and std (std floored) over the last axis."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, x: torch.Tensor) -> "_Standardiser":
        flat = x.reshape(-1, x.shape[-1])
        return cls(flat.mean(0), flat.std(0).clamp_min(1e-6))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class _DatasetPool:
    """Seen datasets' training features grouped by class, for fast seeded support draws."""

    def __init__(self, zoo: Any, names: list[str], ways: int, norm: _Standardiser) -> None:
        self.x, self.by_class = [], []
        for n in names:
            d = zoo.data(n)
            self.x.append(norm(d.x_train))
            self.by_class.append([torch.nonzero(d.y_train == c).flatten() for c in range(ways)])
        self.ways = ways

    def draw(self, datasets: torch.Tensor, shots: int, g: torch.Generator) -> torch.Tensor:
        """Support features (B, ways, shots, F) for each dataset index."""
        out = []
        for i in datasets.tolist():
            rows = []
            for idx in self.by_class[i]:
                pick = idx[torch.randint(0, len(idx), (shots,), generator=g)]
                rows.append(self.x[i][pick])
            out.append(torch.stack(rows))
        return torch.stack(out)


class D2NWG:
    """Fit on a dataset zoo's seen datasets; sample heads for any support set (seen dataset or not)."""

    def __init__(self, config: D2NWGConfig | None = None, *, device: str | torch.device = "cpu") -> None:
        self.config = config or D2NWGConfig()
        self.device = resolve_device(device)
        self.schedule = NoiseSchedule(self.config.schedule)
        self.vae: VectorVAE | None = None
        self.encoder: ClassSetEncoder | None = None
        self.denoiser: TokenDenoiser | None = None
        self.row_norm: _Standardiser | None = None
        self.feature_norm: _Standardiser | None = None
        self.latent_norm: _Standardiser | None = None
        self.ways: int | None = None
        self.in_features: int | None = None
        self.seen: list[str] = []
        self.seen_encodings: torch.Tensor | None = None     # (n_seen, ways, D) mean encoding of each seen dataset
        self.backbone: dict | None = None                    # the zoo's backbone settings (for image support sets)
        self.history: dict[str, pd.DataFrame] = {}
        self.seconds: dict[str, float] = {}
        self.vae_fingerprint: str | None = None             # data + stage-1 settings the β-VAE was fitted on
        self._featurizer: ImageFeaturizer | None = None

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, zoo: Any, *, run_dir: str | Path | None = None, progress: bool = True,
            datasets: list[str] | None = None, reuse_vae: "D2NWG | None" = None) -> "D2NWG":
        """Train the three stages on the zoo's seen datasets (or ``datasets``); each stage resumes from
        ``run_dir``. ``reuse_vae``: a generator fitted on the same data with the same stage-1 settings whose frozen
        β-VAE is taken as it is (ablations that change only later stages need not retrain it)."""
        cfg = self.config
        t_all = time.perf_counter()
        known = {c.name: c for c in zoo.conditions}
        self.seen = list(datasets) if datasets is not None else [n for n, c in known.items() if c.seen]
        unseen_used = [n for n in self.seen if n in known and not known[n].seen]
        if unseen_used or not self.seen or any(n not in known for n in self.seen):
            raise ValueError(f"fit on seen datasets of the zoo only; got {self.seen[:4]}... "
                             f"({unseen_used[:3]} are held out)" if unseen_used else
                             f"fit on datasets of the zoo; unknown: {[n for n in self.seen if n not in known][:3]}")
        if getattr(zoo, "variant", "head") != "head":
            raise ValueError("D2NWG generates classifier heads (the CH setting): fit it on DatasetZoo(root), not on "
                             f"the {zoo.variant!r} variant")
        vectors = zoo.vectors(self.seen)
        check_finite(vectors, "the zoo's head vectors")
        ids = torch.cat([torch.full((len(zoo.vectors([n])),), i) for i, n in enumerate(self.seen)])
        self.ways = int(getattr(zoo, "ways", 0)) or int(zoo.data(self.seen[0]).info.num_classes)
        rows = heads_to_rows(vectors, self.ways)                      # (N, ways, F + 1)
        self.in_features = rows.shape[-1] - 1
        settings = getattr(getattr(zoo, "config", None), "backbone_settings", None)
        self.backbone = vars(settings()) if callable(settings) else None
        rd = Path(run_dir) if run_dir is not None else None
        fp = data_fingerprint(vectors, ids, config=cfg.to_dict())

        # stage 1: the row β-VAE
        t0 = time.perf_counter()
        if reuse_vae is not None:
            self._take_vae(reuse_vae, vectors)
            x = self.row_norm(rows).to(self.device)
        else:
            self.row_norm = _Standardiser.fit(rows)
            x = self.row_norm(rows).to(self.device)
            flat = x.reshape(-1, x.shape[-1])
            torch.manual_seed(cfg.vae_train.seed)
            self.vae = VectorVAE(cfg.vae_config(rows.shape[-1])).to(self.device)
            bs = min(cfg.vae_train.batch_size, len(flat))

            def vae_loss(g: torch.Generator) -> tuple[torch.Tensor, dict]:
                return self.vae.loss(flat[torch.randint(0, len(flat), (bs,), generator=g)], generator=g)

            self.history["vae"], _ = train_module(self.vae, vae_loss, cfg.vae_train, directory=rd, name="vae",
                                                  progress=progress, desc="β-VAE (head rows)", fingerprint=fp)
        self.vae.eval().requires_grad_(False)
        self.vae_fingerprint = data_fingerprint(vectors, config=stage1_settings(cfg))
        with torch.no_grad():
            lat = self.vae.encode(x)                                   # (N, ways, d)
        self.latent_norm = _Standardiser.fit(lat.cpu())
        z = self.latent_norm(lat.cpu()).to(self.device)
        self.seconds["vae"] = time.perf_counter() - t0

        # stage 2: the dataset encoder, aligned contrastively to the frozen latents
        t0 = time.perf_counter()
        feats = torch.cat([zoo.data(n).x_train for n in self.seen])
        self.feature_norm = _Standardiser.fit(feats)
        del feats
        pool = _DatasetPool(zoo, self.seen, self.ways, self.feature_norm)
        torch.manual_seed(cfg.align_train.seed)
        self.encoder = ClassSetEncoder(cfg.encoder_config(self.in_features)).to(self.device)
        by_dataset = [torch.nonzero(ids == i).flatten() for i in range(len(self.seen))]
        if cfg.contrastive:
            heads = nn.ModuleDict({"encoder": self.encoder, "proj_e": nn.Linear(cfg.encoder_out, cfg.proj_dim),
                                   "proj_z": nn.Linear(cfg.latent_dim, cfg.proj_dim)}).to(self.device)
            abs_ = min(cfg.align_train.batch_size, len(self.seen))

            def align_loss(g: torch.Generator) -> tuple[torch.Tensor, dict]:
                ds = torch.randperm(len(self.seen), generator=g)[:abs_]
                members = torch.stack([by_dataset[i][torch.randint(0, len(by_dataset[i]), (1,), generator=g)][0]
                                       for i in ds.tolist()])
                e = F.normalize(heads["proj_e"](heads["encoder"](pool.draw(ds, cfg.shots, g).to(self.device))), dim=-1)
                t = F.normalize(heads["proj_z"](z[members]), dim=-1)
                logits = e.reshape(-1, cfg.proj_dim) @ t.reshape(-1, cfg.proj_dim).T / cfg.temperature
                target = torch.arange(len(logits), device=logits.device)
                loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
                return loss, {"top1": float((logits.argmax(1) == target).float().mean())}

            self.history["alignment"], _ = train_module(heads, align_loss, cfg.align_train, directory=rd,
                                                        name="alignment", progress=progress,
                                                        desc="dataset encoder (contrastive)", fingerprint=fp)
            self.encoder.eval().requires_grad_(False)
        self.seconds["alignment"] = time.perf_counter() - t0

        # stage 3: conditional latent diffusion over the class tokens
        t0 = time.perf_counter()
        torch.manual_seed(cfg.diffusion_train.seed)
        self.denoiser = TokenDenoiser(cfg.denoiser_config()).to(self.device)
        null = torch.zeros(1, self.ways, cfg.encoder_out, device=self.device)
        bs = min(cfg.diffusion_train.batch_size, len(z))
        if cfg.contrastive:  # frozen encoder: pre-encode a pool of support draws per dataset (fast, still k-shot)
            g0 = torch.Generator().manual_seed(cfg.diffusion_train.seed + 17)
            with torch.no_grad():
                draws = torch.stack([self.encoder(pool.draw(torch.full((cfg.support_draws,), i), cfg.shots, g0)
                                                  .to(self.device)) for i in range(len(self.seen))])
            module: nn.Module = nn.ModuleDict({"denoiser": self.denoiser})
        else:
            draws = None
            module = nn.ModuleDict({"denoiser": self.denoiser, "encoder": self.encoder})

        per = 16  # members per drawn dataset when the encoder trains here: one support encoding serves sixteen

        def diff_loss(g: torch.Generator) -> tuple[torch.Tensor, dict]:
            if draws is not None:
                idx = torch.randint(0, len(z), (bs,), generator=g)
                cond = draws[ids[idx], torch.randint(0, cfg.support_draws, (bs,), generator=g)]
            else:
                ds = torch.randint(0, len(self.seen), (max(1, bs // per),), generator=g)
                idx = torch.stack([by_dataset[i][torch.randint(0, len(by_dataset[i]), (per,), generator=g)]
                                   for i in ds.tolist()]).flatten()
                cond = module["encoder"](pool.draw(ds, cfg.shots, g).to(self.device)).repeat_interleave(per, 0)
            if cfg.cond_dropout:
                drop = (torch.rand(len(idx), generator=g) < cfg.cond_dropout).to(self.device)
                cond = torch.where(drop[:, None, None], null.expand_as(cond), cond)
            return diffusion_loss(module["denoiser"], self.schedule, z[idx], cond=cond, generator=g), {}

        self.history["diffusion"], ema = train_module(module, diff_loss, cfg.diffusion_train, directory=rd,
                                                      name="diffusion", progress=progress,
                                                      desc="latent diffusion (class tokens)", fingerprint=fp)
        if ema is not None:
            self.denoiser = ema.shadow["denoiser"]
            if "encoder" in ema.shadow:
                self.encoder = ema.shadow["encoder"]
        self.denoiser.eval()
        self.encoder.eval().requires_grad_(False)
        self.seconds["diffusion"] = time.perf_counter() - t0

        # the seen datasets' mean encodings: what retrieval and the nearest-dataset reading compare against
        g1 = torch.Generator().manual_seed(cfg.diffusion_train.seed + 29)
        with torch.no_grad():
            self.seen_encodings = torch.stack([
                self.encoder(pool.draw(torch.full((8,), i), cfg.shots, g1).to(self.device)).mean(0).cpu()
                for i in range(len(self.seen))])
        self.seconds["total"] = time.perf_counter() - t_all
        return self

    def _take_vae(self, other: "D2NWG", vectors: torch.Tensor) -> None:
        """Adopt ``other``'s frozen β-VAE and row normaliser (refused unless data and stage-1 settings match)."""
        if other.vae is None or other.vae_fingerprint != data_fingerprint(vectors, config=stage1_settings(self.config)):
            raise ValueError("reuse_vae: that generator's β-VAE was fitted on other data or with other stage-1 "
                             "settings (latent_dim, vae_*, beta, noise, vae_train); fit this one's own")
        self.vae, self.row_norm = copy.deepcopy(other.vae).to(self.device), other.row_norm
        if "vae" in other.history:
            self.history["vae"] = other.history["vae"]

    # -- conditions ------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.denoiser is None or self.vae is None or self.encoder is None:
            raise RuntimeError("the generator is not fitted: call fit(zoo) or D2NWG.load(directory)")

    @property
    def featurizer(self) -> ImageFeaturizer:
        """The frozen backbone of the zoo it was fitted on (for support sets of raw images)."""
        if self._featurizer is None:
            if not self.backbone:
                raise ValueError("this generator does not know its zoo's backbone: pass support features, not images")
            self._featurizer = ImageFeaturizer(BackboneSettings(**{**self.backbone, "target_modules": tuple(
                self.backbone.get("target_modules", ("conv_head",)))}))
        return self._featurizer

    def _support(self, support: Any) -> SupportSet:
        s = as_support(support, lambda: self.featurizer)
        if s.features.shape[1] != self.in_features:
            raise ValueError(f"support features have {s.features.shape[1]} dimensions; this generator was fitted on "
                             f"{self.in_features}-d features of its zoo's backbone (pass images or that backbone's "
                             "pooled features)")
        counts = torch.bincount(s.labels, minlength=s.ways)
        if (counts == 0).any() or s.ways < 2:
            raise ValueError(f"every class 0..{s.ways - 1} needs at least one support example; counts per class: "
                             f"{counts.tolist()}")
        return s

    def encode(self, support: Any) -> torch.Tensor:
        """The class-ordered dataset encoding (ways, D) of a support set."""
        self._check_fitted()
        s = self._support(support)
        with torch.no_grad():
            return self.encoder.encode_support(self.feature_norm(s.features).to(self.device), s.labels.to(self.device),
                                               s.ways).cpu()

    def nearest_seen(self, support: Any, k: int = 1) -> list[str]:
        """The ``k`` seen datasets whose encodings (mean over classes: order-free) are closest in cosine."""
        e = self.encode(support).mean(0)
        sim = F.normalize(self.seen_encodings.mean(1), dim=-1) @ F.normalize(e, dim=0)
        return [self.seen[int(i)] for i in sim.argsort(descending=True)[:k]]

    # -- sampling --------------------------------------------------------------------------------------------
    def trajectory(self, support: Any, n: int, *, seed: int = 0, sampler: str = "ddim", steps: int | None = None,
                   guidance_scale: float | None = None) -> Iterator[SamplerState]:
        """Every intermediate state (standardised latent tokens) of sampling ``n`` heads for a support set."""
        check_num_samples(n)
        self._check_fitted()
        gs = check_guidance_scale(self.config.guidance_scale if guidance_scale is None else guidance_scale)
        e = self.encode(support).to(self.device)
        cond = e[None].expand(n, -1, -1)
        null = torch.zeros(1, *e.shape, device=self.device)
        g = torch.Generator().manual_seed(seed)
        return make_sampler(self.schedule, sampler, steps=steps).trajectory(
            self.denoiser, (n, e.shape[0], self.config.latent_dim), cond=cond, generator=g, device=self.device,
            guidance_scale=gs, null_cond=null if gs != 1.0 else None)

    def tokens_to_heads(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised latent tokens (n, ways, d) → head vectors (n, ways·F + ways)."""
        with torch.no_grad():
            rows = self.vae.decode(self.latent_norm.inverse(z.cpu()).to(self.device)).cpu()
        return rows_to_heads(self.row_norm.inverse(rows))

    def sample(self, support: Any, n: int, *, seed: int = 0, sampler: str = "ddim", steps: int | None = None,
               guidance_scale: float | None = None) -> torch.Tensor:
        """``n`` head vectors for the support set's classes (row ``c`` scores the support's class ``c``), ready for
        ``spec.load_into(nn.Linear(F, ways), v)``. ``steps``: DDIM's (default 50)."""
        state = None
        for state in self.trajectory(support, n, seed=seed, sampler=sampler, steps=steps,
                                     guidance_scale=guidance_scale):
            pass
        return self.tokens_to_heads(state.xt)

    def reconstruct(self, vectors: torch.Tensor) -> torch.Tensor:
        """Heads through the VAE and back (no noise): what stage 1 preserves."""
        self._check_fitted()
        with torch.no_grad():
            lat = self.vae.encode(self.row_norm(heads_to_rows(vectors, self.ways)).to(self.device)).cpu()
        return self.tokens_to_heads(self.latent_norm(lat))

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Weights, normalisers and the seen datasets' encodings (safetensors) with the config (JSON): staged and
        published whole, ``d2nwg.json`` (every file's sha256) last."""
        self._check_fitted()
        with staged_directory(directory, MARKER) as stage:
            save_tensors(stage / "vae.safetensors", self.vae.state_dict())
            save_tensors(stage / "encoder.safetensors", self.encoder.state_dict())
            save_tensors(stage / "denoiser.safetensors", self.denoiser.state_dict())
            norms = {f"{k}.{p}": getattr(getattr(self, k), p) for k in ("row_norm", "feature_norm", "latent_norm")
                     for p in ("mean", "std")}
            save_tensors(stage / "normalisers.safetensors", {**norms, "seen_encodings": self.seen_encodings})
            for k, h in self.history.items():
                atomic_write_csv(stage / f"{k}_loss.csv", h)
            seal_bundle(stage, {"config": self.config.to_dict(), "ways": self.ways, "in_features": self.in_features,
                                "seen": self.seen, "backbone": self.backbone, "seconds": self.seconds,
                                "vae_fingerprint": self.vae_fingerprint}, MARKER)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> "D2NWG":
        """Inverse of :meth:`save`; every file is checked against its recorded checksum."""
        d = Path(directory)
        meta = open_bundle(d, MARKER, "D2NWG generator")
        with bundle_errors(d, "D2NWG generator"):
            check_bundle(d, meta, MARKER)
            self = cls(D2NWGConfig.from_dict(meta["config"]), device=device)
            self.ways, self.in_features = int(meta["ways"]), int(meta["in_features"])
            self.seen, self.backbone, self.seconds = list(meta["seen"]), meta.get("backbone"), meta.get("seconds", {})
            self.vae_fingerprint = meta.get("vae_fingerprint")
            cfg = self.config
            self.vae = VectorVAE(cfg.vae_config(self.in_features + 1))
            self.encoder = ClassSetEncoder(cfg.encoder_config(self.in_features))
            self.denoiser = TokenDenoiser(cfg.denoiser_config())
            for m, f in ((self.vae, "vae"), (self.encoder, "encoder"), (self.denoiser, "denoiser")):
                m.load_state_dict(load_tensors(d / f"{f}.safetensors"))
                m.to(self.device).eval().requires_grad_(False)
            t = load_tensors(d / "normalisers.safetensors")
            for k in ("row_norm", "feature_norm", "latent_norm"):
                setattr(self, k, _Standardiser(t[f"{k}.mean"], t[f"{k}.std"]))
            self.seen_encodings = t["seen_encodings"]
        for k in ("vae", "alignment", "diffusion"):
            p = d / f"{k}_loss.csv"
            records = read_history(p) if p.exists() else None
            if records is not None:
                self.history[k] = pd.DataFrame(records)
        return self


def fit_or_load_d2nwg(zoo: Any, config: D2NWGConfig, directory: str | Path, *, progress: bool = True,
                      reuse_vae: D2NWG | None = None, device: DeviceLike = "cpu") -> D2NWG:
    """Load the generator saved in ``directory`` if it was fitted with ``config`` on these seen datasets; else fit
    (resuming from ``directory/checkpoints``) and save."""
    d = Path(directory)
    seen = [c.name for c in zoo.conditions if c.seen]
    if (d / MARKER).exists():
        meta = read_json(d / MARKER)
        if meta.get("config") == config.to_dict() and meta.get("seen") == seen:
            return D2NWG.load(d, device=device)
    with progress_label(d.name):  # bars say which generator they train
        gen = D2NWG(config, device=device).fit(zoo, run_dir=d / "checkpoints", progress=progress, reuse_vae=reuse_vae)
    gen.save(d)
    atomic_write_json(d / "fit_seconds.json", gen.seconds)
    return gen
