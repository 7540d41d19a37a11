"""RPG: recurrent diffusion for parameter generation — tokens, a recurrent model that turns positions (and a
per-source permutation state, and an optional condition) into one prototype per token, and a small diffusion model
that generates each token from its prototype.

What keeps memory flat as the generated model grows: the recurrent model's inputs are position embeddings, the
source's permutation state and the condition — never the parameters themselves — so training needs only the window
of tokens it is looking at (read from the zoo slice by slice, :mod:`workbench.systems.rpg.vectors`), and sampling
streams the model window by window with the recurrent state carried across (truncated backpropagation through time
in training: one optimiser step per window, the state carried detached along a *sweep* of one batch of members over
all windows). The diffusion model sees one token at a time; ``diffusion_batch`` caps how many tokens of a window it
is trained on per step.

Facts taken from the official code (NUS-HPC-AI-Lab/Recurrent-Parameter-Generation): the recurrent input is
``PE + permutation_state + condition`` (no parameter values); per-layer mean/std normalisation; padding masked out of
the loss; 2-D sinusoidal positions (layer, token); a permutation state is drawn at random per sample when sampling.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd
import torch
import torch.nn as nn

from workbench.core.config import NAMED_UNKNOWN_KEYS, JSONConfig
from workbench.core.data_parallel import batch_share, shard_batch
from workbench.core.device import DeviceLike, resolve_device
from workbench.core.diffusion import (
    NoiseSchedule,
    SamplerState,
    ScheduleConfig,
    check_num_samples,
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
from workbench.core.params import ParamSpec
from workbench.core.progress import progress_label
from workbench.core.tokens import (
    LayerTokenStats,
    PositionTokenStats,
    TokenLayout,
    load_token_stats,
    position_embedding_2d,
    token_layout,
)
from workbench.core.train_loop import LoopConfig, read_history, step_generator, train_module
from workbench.generator.latent_diffusion import (
    bundle_errors,
    check_bundle,
    data_fingerprint,
    open_bundle,
    seal_bundle,
)
from workbench.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig
from workbench.nn.recurrent import SequenceModelConfig, build_sequence_model
from workbench.nn.unet1d import UNet1D, UNetConfig
from workbench.systems.rpg.vectors import VectorSource, as_vector_source, iter_member_chunks

__all__ = ["RPGConfig", "RPG", "Prototyper", "fit_or_load_rpg", "MARKER"]

MARKER = "rpg.json"
DENOISERS = ("mlp", "conv1d")
NORMALISATIONS = ("layer", "position", "none")


@dataclass(frozen=True)
class RPGConfig(JSONConfig, name="RPG config", unknown_keys=NAMED_UNKNOWN_KEYS):
    """Tokens, recurrent model, per-token diffusion and training of an RPG generator."""

    token_size: int = 64
    scheme: str = "layer"                 # "layer" (RPG), "flat" (tokens across layers), "channel" (per output row)
    normalise: str = "layer"              # per-tensor mean/std (RPG), "position" (p-diff's) or "none"
    sequence: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    position_embedding: bool = True       # 2-D sinusoidal (layer, token) embedding added to the recurrent input
    permutation_states: bool = True       # a learned state per source model (seed), added to the recurrent input
    cond_dim: int = 0                     # > 0: a condition vector per member (e.g. a 10-bit task code)
    denoiser: str = "mlp"                 # per-token denoiser: "mlp" (residual MLP) or "conv1d" (1-D U-Net)
    denoiser_hidden: int = 256
    denoiser_depth: int = 3
    # x0-prediction: with ε-prediction, DDIM's early steps divide the ε error by √ᾱ_t (≈ 0.006 at t = T) and a
    # per-token denoiser's samples left the data (measured: a linear code → weights toy, DDIM-20, held-out codes:
    # relative error 6.9 with ε, 0.058 with x0)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(prediction="x0"))
    window: int = 128                     # tokens per training step and per sampling step
    diffusion_batch: int | None = None    # tokens of a window the diffusion loss sees per step (None: all)
    state_std: float = 0.1                # initial spread of the permutation states
    loss_weighting: str = "element"       # "element": every parameter counts the same (RPG); "layer": every tensor
                                          # does (a 66-number head weighs as much as a 50k-number first layer)
    train: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, batch_size=16, lr=1e-3,
                                                                 checkpoint_every=500))
    sampler: str = "ddim"
    sample_steps: int = 50

    def __post_init__(self) -> None:
        problems = []
        if self.token_size < 1 or self.window < 1:
            problems.append(f"token_size and window must be >= 1, got {self.token_size} and {self.window}")
        if self.normalise not in NORMALISATIONS:
            problems.append(f"normalise={self.normalise!r}: use one of {NORMALISATIONS}")
        if self.denoiser not in DENOISERS:
            problems.append(f"denoiser={self.denoiser!r}: use one of {DENOISERS}")
        if self.loss_weighting not in ("element", "layer"):
            problems.append(f"loss_weighting={self.loss_weighting!r}: use 'element' or 'layer'")
        if self.cond_dim < 0:
            problems.append(f"cond_dim must be >= 0 (0: unconditional), got {self.cond_dim}")
        if self.diffusion_batch is not None and self.diffusion_batch < 1:
            problems.append(f"diffusion_batch must be >= 1 or null, got {self.diffusion_batch}")
        if self.position_embedding and self.sequence.d_model % 4:
            problems.append(f"the 2-D position embedding needs sequence.d_model divisible by 4, got "
                            f"{self.sequence.d_model}")
        if problems:
            raise ValueError("invalid RPG config: " + "; ".join(problems))


class Prototyper(nn.Module):
    """Position embedding + permutation state + condition → causal sequence model → one prototype per token."""

    def __init__(self, cfg: RPGConfig, n_sources: int) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.sequence.d_model
        self.seq = build_sequence_model(cfg.sequence)
        self.states = nn.Embedding(max(int(n_sources), 1), d) if cfg.permutation_states else None
        if self.states is not None:
            nn.init.normal_(self.states.weight, std=cfg.state_std)
        self.cond = (nn.Sequential(nn.Linear(cfg.cond_dim, d), nn.SiLU(), nn.Linear(d, d)) if cfg.cond_dim else None)

    def forward(self, positions: torch.Tensor, sources: torch.Tensor, cond: torch.Tensor | None,
                state: object | None = None) -> tuple[torch.Tensor, object]:
        """Prototypes (B, W, d) of the tokens at ``positions`` (W, 2) for B members, and the carried state."""
        d = self.cfg.sequence.d_model
        B, W = len(sources), len(positions)
        x = torch.zeros(B, W, d, device=sources.device)
        if self.cfg.position_embedding:
            x = x + position_embedding_2d(positions, d).to(x)[None]
        if self.states is not None:
            x = x + self.states(sources)[:, None]
        if self.cond is not None:
            if cond is None:
                raise ValueError(f"this RPG generator is conditional: pass a condition of width {self.cfg.cond_dim}")
            x = x + self.cond(cond.to(x))[:, None]
        return self.seq(x, state)


class _ConvTokenDenoiser(nn.Module):
    """A 1-D U-Net over one token (a single channel of ``token_size`` numbers), conditioned on its prototype."""

    def __init__(self, cfg: RPGConfig) -> None:
        super().__init__()
        mults = (1, 2, 2) if cfg.token_size >= 8 else (1,)
        self.net = UNet1D(UNetConfig(in_channels=1, base_channels=max(8, cfg.denoiser_hidden // 8),
                                     channel_mults=mults, cond_dim=cfg.sequence.d_model))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x[:, None], t, cond)[:, 0]


class _RPGNet(nn.Module):
    """What training optimises: the prototyper and the per-token denoiser."""

    def __init__(self, cfg: RPGConfig, n_sources: int) -> None:
        super().__init__()
        self.prototyper = Prototyper(cfg, n_sources)
        if cfg.denoiser == "mlp":
            self.denoiser: nn.Module = MLPDenoiser(MLPDenoiserConfig(
                in_features=cfg.token_size, hidden=cfg.denoiser_hidden, depth=cfg.denoiser_depth,
                cond_dim=cfg.sequence.d_model))
        else:
            self.denoiser = _ConvTokenDenoiser(cfg)


def _windows(n_tokens: int, window: int) -> list[tuple[int, int]]:
    return [(a, min(a + window, n_tokens)) for a in range(0, n_tokens, window)]


class RPG:
    """Fit on a zoo's vectors (in memory or read slice by slice from disk), then sample models token window by
    token window. ``fit`` / ``sample`` / ``trajectory`` / ``save`` / ``load`` like the other generators."""

    def __init__(self, config: RPGConfig = RPGConfig(), *, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = resolve_device(device)
        self.layout: TokenLayout | None = None
        self.stats: LayerTokenStats | PositionTokenStats | None = None
        self.net: _RPGNet | None = None
        self.n_sources = 0
        self.source_names: list[str] = []
        self.history = pd.DataFrame()
        self.seconds: dict[str, float] = {}
        self.schedule = NoiseSchedule(config.schedule)

    # -- fitting ---------------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.net is None or self.layout is None or self.stats is None:
            raise RuntimeError("this RPG generator is not fitted yet: call fit(vectors, spec) or RPG.load(directory)")

    @property
    def n_windows(self) -> int:
        """Token windows per model (the sweep length of training, the sampling loop's length)."""
        self._check_fitted()
        return len(_windows(self.layout.n_tokens, self.config.window))

    def fit(self, vectors: torch.Tensor | VectorSource, spec: ParamSpec, *, sources: Sequence[int] | None = None,
            conditions: torch.Tensor | None = None, source_names: Sequence[str] | None = None,
            directory: str | Path | None = None, progress: bool = True) -> "RPG":
        """Fit on N vectors of ``spec``. ``sources``: the source model (seed) of each member, 0..K−1 (default: each
        member its own source), one permutation state each; ``conditions``: (N, cond_dim) condition vectors.
        ``directory``: checkpoints there, resumed when called again."""
        cfg = self.config
        src = as_vector_source(vectors)
        if src.n_params != spec.numel:
            raise ValueError(f"the vectors hold {src.n_params} parameters but the spec {spec.numel}: were they "
                             "flattened with another ParamSpec?")
        N = len(src)
        sources_t = (torch.arange(N) if sources is None else torch.as_tensor(list(sources), dtype=torch.long))
        if sources_t.shape != (N,) or (N and (sources_t.min() < 0)):
            raise ValueError(f"sources must hold one non-negative source id per member ({N}), got shape "
                             f"{tuple(sources_t.shape)}")
        self.n_sources = int(sources_t.max()) + 1 if N else 0
        self.source_names = list(source_names) if source_names is not None else [str(i) for i in
                                                                                   range(self.n_sources)]
        cond_t = None
        if cfg.cond_dim:
            if conditions is None:
                raise ValueError(f"this config is conditional (cond_dim={cfg.cond_dim}): pass conditions=(N, "
                                 f"{cfg.cond_dim})")
            cond_t = torch.as_tensor(conditions, dtype=torch.float32)
            if cond_t.shape != (N, cfg.cond_dim):
                raise ValueError(f"conditions have shape {tuple(cond_t.shape)}, expected ({N}, {cfg.cond_dim})")
            if not torch.isfinite(cond_t).all():
                raise ValueError("conditions contain NaN or Inf")
        elif conditions is not None:
            raise ValueError("conditions given but the config is unconditional: set cond_dim to their width")

        t0 = time.perf_counter()
        self.layout = token_layout(spec, cfg.token_size, cfg.scheme)
        chunks = iter_member_chunks(src, max(1, 2 ** 22 // spec.numel))
        self.stats = (LayerTokenStats.fit(self.layout, chunks) if cfg.normalise == "layer"
                      else PositionTokenStats.fit(self.layout, chunks) if cfg.normalise == "position"
                      else LayerTokenStats.identity(self.layout))
        with torch.random.fork_rng(devices=[]):  # the initialisation is part of the run: seeded, global RNG untouched
            torch.manual_seed(cfg.train.seed)
            self.net = _RPGNet(cfg, self.n_sources).to(self.device)
        windows = _windows(self.layout.n_tokens, cfg.window)
        n_win = len(windows)
        # Checkpoints fall on sweep boundaries, where the carried state is empty: a resumed run is bit-identical.
        every = math.ceil(cfg.train.checkpoint_every / n_win) * n_win
        loop = replace(cfg.train, checkpoint_every=every)
        layout, stats, sched, dev = self.layout, self.stats, self.schedule, self.device
        carry: dict[str, object] = {"state": None, "members": None}
        numels = torch.tensor([max(n, 1) for n in self.layout.numels], dtype=torch.float32)
        # per-element loss weights of "layer": n_params / (n_layers · numel(layer)) — mean 1 over the model, each
        # tensor's total the same
        layer_weight = (self.layout.n_params / (len(numels) * numels)) if cfg.loss_weighting == "layer" else None

        def loss_fn(g: torch.Generator, step: int) -> tuple[torch.Tensor, dict]:
            w = step % n_win
            if w == 0 or carry["members"] is None:
                # a sweep: one batch of members through every window, its stream fixed by the sweep's first step
                gs = step_generator(loop.seed, step - w)
                carry["members"] = torch.randperm(N, generator=gs)[:loop.batch_size]
                carry["state"] = None
            members = carry["members"]
            a, b = windows[w]
            lo, hi = layout.flat_range(a, b)
            tokens = layout.tokenise_slice(src.read(members.tolist(), lo, hi), a, b)
            x0 = stats.normalise(layout, tokens, a, b).to(dev)                 # (B, W, S)
            mask = layout.mask(a, b).float()                                  # (W, S)
            if layer_weight is not None:
                mask = mask * layer_weight[layout.element_layers(a, b).clamp(min=0)]
            mask = mask.to(dev)
            protos, state = self.net.prototyper(layout.positions(a, b).to(dev), sources_t[members].to(dev),
                                                cond_t[members].to(dev) if cond_t is not None else None,
                                                carry["state"])
            carry["state"] = self.net.prototyper.seq.detach_state(state)
            B, W, S = x0.shape
            x0, protos = x0.reshape(B * W, S), protos.reshape(B * W, -1)
            m = mask.expand(B, W, S).reshape(B * W, S)
            if cfg.diffusion_batch is not None and B * W > cfg.diffusion_batch:
                keep = torch.randperm(B * W, generator=g)[:cfg.diffusion_batch].to(dev)
                x0, protos, m = x0[keep], protos[keep], m[keep]
            t = torch.randint(sched.num_steps, (len(x0),), generator=g).to(dev)
            noise = torch.randn(x0.shape, generator=g).to(dev)
            # data-parallel: each process denoises its rows of the (identically drawn) batch; the mean is over the
            # whole batch's valid tokens, divided by this process's share (the job weighs each share by it)
            denom = (m > 0).sum().clamp_min(1)
            x0, protos, m, t, noise = shard_batch(x0, protos, m, t, noise)
            out = self.net.denoiser(sched.add_noise(x0, noise, t), t, protos)
            target = noise if sched.cfg.prediction == "eps" else x0
            err = (out - target) ** 2
            loss = (err * m).sum() / (denom * batch_share())
            return loss, {"window": w}

        fingerprint = data_fingerprint(sources_t, cond_t, config={"config": cfg.to_dict(), "n": N,
                                                                  "spec": spec.to_dict(),
                                                                  "data": _source_fingerprint(src)})
        t_train = time.perf_counter()
        history, ema = train_module(self.net, loss_fn, loop, directory=directory, name="rpg", progress=progress,
                                    desc=f"RPG ({cfg.sequence.kind}, {layout.n_tokens} tokens)",
                                    fingerprint=fingerprint, pass_step=True,
                                    reentrant_loss=False)  # the loss carries the recurrent state between steps
        if ema is not None:
            self.net.load_state_dict(ema.shadow.state_dict())
        self.net.eval().requires_grad_(False)
        self.history = history
        done = time.perf_counter()
        self.seconds = {"prepare": t_train - t0, "train": done - t_train, "fit": done - t0}
        return self

    # -- sampling --------------------------------------------------------------------------------------------------
    def _sources_for(self, n: int, permutation_state: int | Sequence[int] | str | None,
                     g: torch.Generator) -> torch.Tensor:
        if not self.config.permutation_states or permutation_state is None:
            return torch.zeros(n, dtype=torch.long)
        if isinstance(permutation_state, str):
            if permutation_state != "random":
                raise ValueError(f"permutation_state={permutation_state!r}: use 'random', a source index or one index "
                                 "per sample")
            return torch.randint(self.n_sources, (n,), generator=g)
        ids = torch.as_tensor(permutation_state, dtype=torch.long).reshape(-1)
        if len(ids) == 1:
            ids = ids.expand(n)
        if len(ids) != n or (ids < 0).any() or (ids >= self.n_sources).any():
            raise ValueError(f"permutation_state must be 'random', one source index in 0..{self.n_sources - 1} or "
                             f"{n} of them, got {permutation_state!r}")
        return ids.clone()

    def _check_condition(self, n: int, condition: torch.Tensor | None) -> torch.Tensor | None:
        cd = self.config.cond_dim
        if not cd:
            if condition is not None:
                raise ValueError("this RPG generator is unconditional: sample without condition=")
            return None
        if condition is None:
            raise ValueError(f"this RPG generator is conditional: pass condition= of shape ({cd},) or ({n}, {cd})")
        c = torch.as_tensor(condition, dtype=torch.float32)
        if c.ndim == 1:
            c = c[None].expand(n, -1)
        if c.shape != (n, cd):
            raise ValueError(f"the condition has shape {tuple(c.shape)}; expected ({cd},) or ({n}, {cd})")
        if not torch.isfinite(c).all():
            raise ValueError("the condition contains NaN or Inf")
        return c

    def _window_states(self, n: int, *, condition: torch.Tensor | None, permutation_state, sampler: str | None,
                       steps: int | None, seed: int, eta: float = 0.0
                       ) -> Iterator[tuple[int, int, Iterator[SamplerState]]]:
        """Per window: its token range and the sampler's states (lazily; the recurrent state is carried)."""
        self._check_fitted()
        n = check_num_samples(n)
        cond = self._check_condition(n, condition)
        g = torch.Generator().manual_seed(int(seed))
        sources = self._sources_for(n, permutation_state, g).to(self.device)
        smp = make_sampler(self.schedule, sampler or self.config.sampler,
                           steps if steps is not None else (self.config.sample_steps
                                                            if (sampler or self.config.sampler) == "ddim" else None),
                           eta)
        state = None
        S = self.config.token_size
        for a, b in _windows(self.layout.n_tokens, self.config.window):
            with torch.inference_mode():
                protos, state = self.net.prototyper(self.layout.positions(a, b).to(self.device), sources,
                                                    cond.to(self.device) if cond is not None else None, state)
            W = b - a
            yield a, b, smp.trajectory(self.net.denoiser, (n * W, S), cond=protos.reshape(n * W, -1), generator=g,
                                       device=self.device)

    def _to_flat(self, x: torch.Tensor, n: int, a: int, b: int) -> torch.Tensor:
        tokens = x.reshape(n, b - a, self.config.token_size).float().cpu()
        return self.layout.detokenise_slice(self.stats.denormalise(self.layout, tokens, a, b), a, b)

    def sample(self, n: int, *, condition: torch.Tensor | None = None,
               permutation_state: int | Sequence[int] | str | None = "random", sampler: str | None = None,
               steps: int | None = None, eta: float = 0.0, seed: int = 0) -> torch.Tensor:
        """``n`` parameter vectors (n, P), streamed window by window. ``permutation_state``: ``"random"`` (RPG: a
        learned state drawn per sample), a source index, or one per sample; ignored without permutation states."""
        self._check_fitted()
        t0 = time.perf_counter()
        out = torch.empty(check_num_samples(n), self.layout.n_params)
        for a, b, states in self._window_states(n, condition=condition, permutation_state=permutation_state,
                                                sampler=sampler, steps=steps, seed=seed, eta=eta):
            last = None
            for last in states:
                pass
            lo, hi = self.layout.flat_range(a, b)
            out[:, lo:hi] = self._to_flat(last.xt, n, a, b)
        self.seconds["sample_last"] = time.perf_counter() - t0
        return out

    def trajectory(self, n: int, *, condition: torch.Tensor | None = None,
                   permutation_state: int | Sequence[int] | str | None = "random", sampler: str | None = None,
                   steps: int | None = None, seed: int = 0, every: int = 1) -> tuple[list[int], torch.Tensor]:
        """The whole model at every ``every``-th sampling step: (timesteps, (n_steps, n, P) of predicted x0 mapped
        back to parameters). Holds n_steps × n × P numbers: meant for the small models of the notebooks."""
        self._check_fitted()
        frames: list[torch.Tensor] | None = None
        ts: list[int] = []
        for a, b, states in self._window_states(n, condition=condition, permutation_state=permutation_state,
                                                sampler=sampler, steps=steps, seed=seed):
            lo, hi = self.layout.flat_range(a, b)
            kept = [(s.t, self._to_flat(s.x0, n, a, b)) for i, s in enumerate(states) if i % every == 0]
            if frames is None:
                ts = [t for t, _ in kept]
                frames = [torch.empty(n, self.layout.n_params) for _ in kept]
            for f, (_, v) in zip(frames, kept):
                f[:, lo:hi] = v
        return ts, torch.stack(frames)

    # -- persistence -----------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Weights, token statistics (safetensors), config, layout and sources (JSON): staged and published whole,
        ``rpg.json`` (every file's sha256) last."""
        self._check_fitted()
        with staged_directory(directory, MARKER) as stage:
            save_tensors(stage / "weights.safetensors", self.net.state_dict())
            save_tensors(stage / "token_stats.safetensors", self.stats.state_dict())
            if len(self.history):
                atomic_write_csv(stage / "train_loss.csv", self.history)
            seal_bundle(stage, {"config": self.config.to_dict(), "layout": self.layout.to_dict(),
                                "n_sources": self.n_sources, "source_names": self.source_names,
                                "seconds": self.seconds}, MARKER)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> "RPG":
        """Inverse of :meth:`save`; every file is checked against its recorded checksum."""
        d = Path(directory)
        meta = open_bundle(d, MARKER, "RPG generator")
        with bundle_errors(d, "RPG generator"):
            check_bundle(d, meta, MARKER)
            self = cls(RPGConfig.from_dict(meta["config"]), device=device)
            self.layout = TokenLayout.from_dict(meta["layout"])
            self.n_sources = int(meta["n_sources"])
            self.source_names = list(meta["source_names"])
            self.seconds = dict(meta.get("seconds", {}))
            self.stats = load_token_stats(load_tensors(d / "token_stats.safetensors"))
            self.net = _RPGNet(self.config, self.n_sources)
            self.net.load_state_dict(load_tensors(d / "weights.safetensors"))
            self.net.to(self.device).eval().requires_grad_(False)
        p = d / "train_loss.csv"
        records = read_history(p) if p.exists() else None
        if records is not None:
            self.history = pd.DataFrame(records)
        return self


def _source_fingerprint(src: VectorSource) -> str:
    """What the vectors are, cheaply: their shape and a strided sample of values (a full hash would read the whole
    zoo, which for the largest models is what the streaming reader avoids)."""
    n, p = len(src), src.n_params
    idx = sorted({0, n - 1, n // 2})
    step = max(1, p // 4096)
    sample = torch.cat([src.read([i], 0, p)[0, ::step] for i in idx]) if p <= 2 ** 22 else torch.cat(
        [src.read([i], lo, min(lo + 64, p))[0] for i in idx for lo in range(0, p, max(64, p // 64))])
    return data_fingerprint(sample, config={"n": n, "p": p})


def fit_or_load_rpg(vectors: torch.Tensor | VectorSource, spec: ParamSpec, config: RPGConfig,
                    directory: str | Path, *, sources: Sequence[int] | None = None,
                    conditions: torch.Tensor | None = None, source_names: Sequence[str] | None = None,
                    progress: bool = True, device: DeviceLike = "cpu") -> RPG:
    """Load the generator saved in ``directory`` if it was fitted with ``config`` on these vectors; else fit
    (resuming from ``directory/checkpoints``) and save; on ``device`` either way."""
    d = Path(directory)
    src = as_vector_source(vectors)
    key = {"config": config.to_dict(), "data": _source_fingerprint(src), "spec": spec.to_dict(),
           "sources": data_fingerprint(torch.as_tensor(list(sources)) if sources is not None else None,
                                       torch.as_tensor(conditions) if conditions is not None else None)}
    if (d / MARKER).exists() and (d / "fit_key.json").exists() and read_json(d / "fit_key.json") == key:
        return RPG.load(d, device=device)
    with progress_label(d.name):  # bars say which generator they train
        gen = RPG(config, device=device).fit(src, spec, sources=sources, conditions=conditions, source_names=source_names,
                              directory=d / "checkpoints", progress=progress)
    gen.save(d)
    atomic_write_json(d / "fit_key.json", key)
    return gen
