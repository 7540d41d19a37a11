"""Noise schedules, diffusion training losses, and DDPM and DDIM samplers that can yield every intermediate state.
The schedule knows nothing of the network (the diffusers habit); the EMA of the weights lives with the training
loop (``workbench.core.train_loop.EMA``)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from workbench.core.config import JSONConfig
from workbench.core.data_parallel import shard_batch
from workbench.core.device import host_to_device

__all__ = ["ScheduleConfig", "NoiseSchedule", "diffusion_loss", "diffusion_draw", "diffusion_loss_given", "DDPMSampler", "DDIMSampler", "make_sampler", "SamplerState", "SAMPLERS", "DEFAULT_DDIM_STEPS", "check_num_samples", "check_guidance_scale", "check_condition"]


SAMPLERS = ("ddpm", "ddim")

DEFAULT_DDIM_STEPS = 50  # what ``steps=None`` means for DDIM (DDPM always runs all T steps)


@dataclass(frozen=True)
class ScheduleConfig(JSONConfig, name="schedule config"):
    """β schedule: ``linear`` (p-diff: 1e-4 → 2e-2 over 1000 steps) or ``cosine`` (Nichol & Dhariwal)."""

    num_steps: int = 1000
    kind: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    prediction: str = "eps"  # what the network predicts: "eps" or "x0"

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"unknown schedule {self.kind!r}: use 'linear' or 'cosine'")
        if self.prediction not in ("eps", "x0"):
            raise ValueError(f"unknown prediction {self.prediction!r}: use 'eps' or 'x0'")


class NoiseSchedule:
    """ᾱ_t and friends, forward noising, and conversions between ε, x0 and x_t."""

    def __init__(self, cfg: ScheduleConfig = ScheduleConfig()) -> None:
        self.cfg = cfg
        T = cfg.num_steps
        if cfg.kind == "linear":
            betas = torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
        else:
            s = 0.008
            steps = torch.arange(T + 1, dtype=torch.float64) / T
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        self.betas = betas
        self.alphas = 1 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @property
    def num_steps(self) -> int:
        return self.cfg.num_steps

    def _at(self, arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if arr.device != like.device:  # one copy per device, kept: a copy per training step would sync on CUDA
            cache = self.__dict__.setdefault("_on_device", {})
            key = (id(arr), like.device)
            if key not in cache:
                cache[key] = arr.to(like.device)
            arr = cache[key]
        return arr[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε."""
        a = self._at(self.alphas_cumprod, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def x0_from_eps(self, xt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Invert the forward process given ε."""
        a = self._at(self.alphas_cumprod, t, xt)
        return (xt - (1 - a).sqrt() * eps) / a.sqrt()

    def eps_from_x0(self, xt: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε implied by x_t and x0."""
        a = self._at(self.alphas_cumprod, t, xt)
        return (xt - a.sqrt() * x0) / (1 - a).sqrt()

    def split_output(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, ε) from the network output, whichever it predicts."""
        if self.cfg.prediction == "eps":
            return self.x0_from_eps(xt, out, t), out
        return out, self.eps_from_x0(xt, out, t)


def diffusion_draw(schedule: NoiseSchedule, shape: tuple[int, ...], generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A training step's timesteps and noise for a batch of ``shape``, drawn on the CPU (where the seeded
    generators live)."""
    t = torch.randint(0, schedule.num_steps, (shape[0],), generator=generator)
    return t, torch.randn(shape, generator=generator)


def diffusion_loss_given(model: Callable[..., torch.Tensor], schedule: NoiseSchedule, x0: torch.Tensor,
                         t: torch.Tensor, noise: torch.Tensor, *, cond: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`diffusion_loss` with the draws of :func:`diffusion_draw` given (on ``x0``'s device): the part a CUDA
    graph replays."""
    # every process drew the full batch; it computes its own rows (identity unless data-parallel)
    x0, t, noise, cond = shard_batch(x0, t, noise, cond)
    xt = schedule.add_noise(x0, noise, t)
    out = model(xt, t, cond) if cond is not None else model(xt, t)
    target = noise if schedule.cfg.prediction == "eps" else x0
    return F.mse_loss(out, target)


def diffusion_loss(model: Callable[..., torch.Tensor], schedule: NoiseSchedule, x0: torch.Tensor, *,
                   cond: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between the network output and its target (ε or x0) at uniformly drawn timesteps."""
    t, noise = diffusion_draw(schedule, tuple(x0.shape), generator)
    return diffusion_loss_given(model, schedule, x0, host_to_device(t, x0.device), host_to_device(noise, x0.device),
                                cond=cond)


@dataclass
class SamplerState:
    """One intermediate state of a sampler: timestep, the current x_t, and the predicted x0."""

    t: int
    xt: torch.Tensor
    x0: torch.Tensor


# -- argument checks (shared by every sampler and generator: bad input is a clear ValueError, before any sampling) ---
def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.dtype.is_complex and value.dtype != torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_num_samples(n: object) -> int:
    """``n`` as a number of samples: a whole number >= 1 (ValueError otherwise)."""
    if not _is_int(n) or n < 1:
        raise ValueError(f"n must be >= 1 (a whole number of samples to generate), got {n!r}")
    return int(n)


def check_guidance_scale(guidance_scale: object) -> float:
    """A classifier-free guidance scale: any finite number (1: no guidance)."""
    if not _is_real(guidance_scale) or not math.isfinite(float(guidance_scale)):
        raise ValueError(f"guidance_scale must be a finite number (1: no guidance, > 1: stronger conditioning), "
                         f"got {guidance_scale!r}")
    return float(guidance_scale)


def _check_eta(eta: object) -> float:
    if not _is_real(eta) or not 0.0 <= float(eta) <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: as noisy as DDPM), got {eta!r}")
    return float(eta)


def _shape_of(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def check_condition(cond: torch.Tensor | None, n: int, cond_dim: int, *, cond_vocab: int = 0,
                    null_cond: torch.Tensor | None = None) -> None:
    """Check a condition against the denoiser it is for: ``cond_dim`` is the condition width the denoiser was
    trained with (0: unconditional), ``cond_vocab`` > 0 a learnable table of that many task ids (then ``cond`` holds
    one id per row). ``cond`` must have shape (n, width); the null condition (for guidance) one row of that width."""
    if not cond_dim:
        if cond is not None:
            raise ValueError(f"this generator is unconditional (trained without a condition) but a condition of shape "
                             f"{_shape_of(cond)} was given: sample without cond=")
        return
    width = 1 if cond_vocab else int(cond_dim)
    what = f"one task id in 0..{cond_vocab} per sample" if cond_vocab else f"one {width}-d condition row per sample"
    if cond is None:
        raise ValueError(f"this generator is conditional: pass cond= of shape ({n}, {width}) ({what})")
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"cond must be a torch.Tensor of shape ({n}, {width}), got {type(cond).__name__}")
    if tuple(cond.shape) != (n, width):
        raise ValueError(f"the condition has shape {tuple(cond.shape)} but this generator expects ({n}, {width}) for "
                         f"n={n} ({what}, the width the denoiser was trained with)")
    if cond_vocab:
        ids = cond.reshape(-1)
        if not torch.isfinite(ids).all() or (ids != ids.round()).any() or (ids < 0).any() or (ids > cond_vocab).any():
            raise ValueError(f"a learnable condition holds task ids in 0..{cond_vocab}, got {ids.tolist()[:8]}")
    if null_cond is not None and (not isinstance(null_cond, torch.Tensor) or null_cond.numel() != width):
        raise ValueError(f"the null condition has shape {_shape_of(null_cond)} but this generator's conditions are "
                         f"{width}-d: pass null_cond of shape (1, {width})")


def _check_sampling_inputs(shape: tuple[int, ...], cond: torch.Tensor | None, guidance_scale: object,
                           null_cond: torch.Tensor | None) -> tuple[int, ...]:
    """What every sampler checks before drawing any noise: the batch size, the guidance scale, the condition's batch
    size and values, and the null condition guidance needs."""
    shape = tuple(shape)
    if not shape:
        raise ValueError("shape must start with the number of samples, e.g. (n, C, L)")
    check_num_samples(shape[0])
    n = shape[0]
    gs = check_guidance_scale(guidance_scale)
    if cond is None:
        if gs != 1.0:
            raise ValueError(f"guidance_scale={guidance_scale} needs a condition: classifier-free guidance applies to "
                             "conditional generators only (leave guidance_scale at 1)")
        return shape
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"cond must be a torch.Tensor with one row per sample, got {type(cond).__name__}")
    if cond.ndim < 1 or cond.shape[0] != n:
        raise ValueError(f"the condition has shape {tuple(cond.shape)} but n={n} samples were asked for: pass one "
                         f"condition row per sample, shape ({n}, D)")
    if not cond.is_floating_point():
        raise ValueError(f"the condition must be a float tensor, got dtype {cond.dtype}")
    if not torch.isfinite(cond).all():
        raise ValueError("the condition contains NaN or Inf values")
    if gs != 1.0:
        if null_cond is None:
            raise ValueError("classifier-free guidance needs the null condition (null_cond=...): a generator trained "
                             "with condition dropout has one; otherwise leave guidance_scale at 1")
        if not isinstance(null_cond, torch.Tensor):
            raise TypeError(f"null_cond must be a torch.Tensor, got {type(null_cond).__name__}")
        try:
            ok = torch.broadcast_shapes(null_cond.shape, cond.shape) == cond.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"the null condition has shape {tuple(null_cond.shape)}, which does not fit the condition's "
                             f"shape {tuple(cond.shape)}: pass one row of the same width")
        if not torch.isfinite(null_cond).all():
            raise ValueError("the null condition contains NaN or Inf values")
    return shape


def _model_out(model: Callable, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
               guidance_scale: float, null_cond: torch.Tensor | None) -> torch.Tensor:
    if cond is None:
        return model(x, t)
    out = model(x, t, cond)
    if guidance_scale != 1.0:
        if null_cond is None:
            raise ValueError("classifier-free guidance needs the null condition (null_cond=...)")
        uncond = model(x, t, null_cond.expand_as(cond))
        out = uncond + guidance_scale * (out - uncond)
    return out


class DDPMSampler:
    """Ancestral sampling through all T steps (posterior variance β̃_t)."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule

    def trajectory(self, model: Callable, shape: tuple[int, ...], *, cond: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                   guidance_scale: float = 1.0, null_cond: torch.Tensor | None = None) -> Iterator[SamplerState]:
        """The state after every denoising step, from t = T−1 down to 0 (the last is the sample).

        The arguments are checked now (ValueError before any noise is drawn); the states come lazily."""
        shape = _check_sampling_inputs(shape, cond, guidance_scale, null_cond)
        return self._states(model, shape, cond=cond, generator=generator, device=device,
                            guidance_scale=guidance_scale, null_cond=null_cond)

    def _states(self, model: Callable, shape: tuple[int, ...], *, cond: torch.Tensor | None,
                generator: torch.Generator | None, device: str | torch.device, guidance_scale: float,
                null_cond: torch.Tensor | None) -> Iterator[SamplerState]:
        s = self.schedule
        x = torch.randn(shape, generator=generator).to(device)
        for t_int in reversed(range(s.num_steps)):
            t = torch.full((shape[0],), t_int, dtype=torch.long, device=device)
            with torch.inference_mode():  # cheaper than no_grad; samples never need autograd history
                out = _model_out(model, x, t, cond, guidance_scale, null_cond)
            x0, _ = s.split_output(out, x, t)
            ab, ab_prev, beta = s.alphas_cumprod[t_int], s.alphas_cumprod_prev[t_int], s.betas[t_int]
            coef_x0 = float(beta * ab_prev.sqrt() / (1 - ab))
            coef_xt = float((1 - ab_prev) * s.alphas[t_int].sqrt() / (1 - ab))
            mean = coef_x0 * x0 + coef_xt * x
            if t_int > 0:
                var = float(beta * (1 - ab_prev) / (1 - ab))
                x = mean + math.sqrt(var) * torch.randn(shape, generator=generator).to(device)
            else:
                x = mean
            yield SamplerState(t_int, x, x0)

    def sample(self, model: Callable, shape: tuple[int, ...], **kw) -> torch.Tensor:
        """The final state only."""
        state = None
        for state in self.trajectory(model, shape, **kw):
            pass
        return state.xt


class DDIMSampler(DDPMSampler):
    """DDIM over an evenly spaced subsequence of ``steps`` timesteps; ``eta`` = 0 is deterministic."""

    def __init__(self, schedule: NoiseSchedule, steps: int | None = DEFAULT_DDIM_STEPS, eta: float = 0.0) -> None:
        super().__init__(schedule)
        steps = DEFAULT_DDIM_STEPS if steps is None else steps
        if not _is_int(steps) or not 1 <= steps <= schedule.num_steps:
            raise ValueError(f"DDIM steps must lie in [1, {schedule.num_steps}] (a whole number, at most the "
                             f"schedule's T={schedule.num_steps}), got {steps!r}")
        self.steps, self.eta = int(steps), _check_eta(eta)

    def timesteps(self) -> list[int]:
        """The visited timesteps, descending."""
        ts = torch.linspace(0, self.schedule.num_steps - 1, self.steps).round().long().unique()
        return ts.flip(0).tolist()

    def _states(self, model, shape, *, cond, generator, device, guidance_scale, null_cond) -> Iterator[SamplerState]:
        s = self.schedule
        x = torch.randn(shape, generator=generator).to(device)
        ts = self.timesteps()
        for i, t_int in enumerate(ts):
            t = torch.full((shape[0],), t_int, dtype=torch.long, device=device)
            with torch.inference_mode():  # cheaper than no_grad; samples never need autograd history
                out = _model_out(model, x, t, cond, guidance_scale, null_cond)
            x0, eps = s.split_output(out, x, t)
            ab = s.alphas_cumprod[t_int]
            ab_prev = s.alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
            sigma = float(self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt())
            dir_coef = math.sqrt(max(float(1 - ab_prev) - sigma ** 2, 0.0))
            x = float(ab_prev.sqrt()) * x0 + dir_coef * eps
            if sigma > 0 and i + 1 < len(ts):
                x = x + sigma * torch.randn(shape, generator=generator).to(device)
            yield SamplerState(t_int, x, x0)


def make_sampler(schedule: NoiseSchedule, name: str = "ddim", steps: int | None = None, eta: float = 0.0
                 ) -> DDPMSampler:
    """``ddpm`` (all T steps of the schedule) or ``ddim`` (``steps`` steps, default 50; ``eta`` in [0, 1]).

    DDPM has no step count or η of its own: an explicit ``steps`` other than T, or a non-zero ``eta``, is a
    ValueError rather than silently ignored."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: use 'ddpm' or 'ddim'")
    eta = _check_eta(eta)
    if name == "ddpm":
        T = schedule.num_steps
        if steps is not None and not (_is_int(steps) and steps == T):
            raise ValueError(f"DDPM always runs all T={T} steps of the schedule, got steps={steps!r}: "
                             "use sampler='ddim' for fewer steps (or leave steps unset)")
        if eta != 0.0:
            raise ValueError(f"eta={eta} applies to DDIM only (DDPM's noise is fixed by the schedule): "
                             "use sampler='ddim' to set eta")
        return DDPMSampler(schedule)
    return DDIMSampler(schedule, steps=steps, eta=eta)
