"""Noise schedules, diffusion training losses, DDPM and DDIM samplers that can yield every intermediate state,
and an EMA of the denoiser weights. The schedule knows nothing of the network (the diffusers habit)."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ScheduleConfig", "NoiseSchedule", "diffusion_loss", "DDPMSampler", "DDIMSampler", "EMA", "make_sampler",
           "SamplerState"]


@dataclass(frozen=True)
class ScheduleConfig:
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

    def to_dict(self) -> dict:
        """Plain-JSON view."""
        return asdict(self)


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
        return arr.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

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


def diffusion_loss(model: Callable[..., torch.Tensor], schedule: NoiseSchedule, x0: torch.Tensor, *,
                   cond: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between the network output and its target (ε or x0) at uniformly drawn timesteps."""
    t = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    xt = schedule.add_noise(x0, noise, t)
    out = model(xt, t, cond) if cond is not None else model(xt, t)
    target = noise if schedule.cfg.prediction == "eps" else x0
    return F.mse_loss(out, target)


@dataclass
class SamplerState:
    """One intermediate state of a sampler: timestep, the current x_t, and the predicted x0."""

    t: int
    xt: torch.Tensor
    x0: torch.Tensor


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
        """Yield the state after every denoising step, from t = T−1 down to 0 (the last is the sample)."""
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

    def __init__(self, schedule: NoiseSchedule, steps: int = 50, eta: float = 0.0) -> None:
        super().__init__(schedule)
        if not 1 <= steps <= schedule.num_steps:
            raise ValueError(f"DDIM steps must lie in [1, {schedule.num_steps}], got {steps}")
        self.steps, self.eta = steps, eta

    def timesteps(self) -> list[int]:
        """The visited timesteps, descending."""
        ts = torch.linspace(0, self.schedule.num_steps - 1, self.steps).round().long().unique()
        return ts.flip(0).tolist()

    def trajectory(self, model, shape, *, cond=None, generator=None, device="cpu", guidance_scale=1.0,
                   null_cond=None) -> Iterator[SamplerState]:
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


def make_sampler(schedule: NoiseSchedule, name: str = "ddim", steps: int = 50, eta: float = 0.0) -> DDPMSampler:
    """``ddpm`` (all T steps) or ``ddim`` (``steps`` steps, ``eta``)."""
    if name == "ddpm":
        return DDPMSampler(schedule)
    if name == "ddim":
        return DDIMSampler(schedule, steps=steps, eta=eta)
    raise ValueError(f"unknown sampler {name!r}: use 'ddpm' or 'ddim'")


class EMA:
    """Exponential moving average of a module's parameters (the sampler uses the averaged copy)."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow ← decay · shadow + (1 − decay) · model."""
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1 - self.decay)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)
