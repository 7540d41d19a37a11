"""ipywidgets apps for JupyterLab. Each app's callback is a plain method (``run``) so tests can drive it headlessly."""

from __future__ import annotations

import html
import json
import time
from typing import Any, Callable, Sequence

import ipywidgets as w
import pandas as pd
import plotly.io as pio
import torch
from IPython.display import display

from workbench.app.plots import (
    accuracy_distribution,
    finetune_curves,
    head_accuracy_bars,
    image_grid,
    support_grid,
)
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.evaluation.memorisation import interpolate_latent, interpolate_weights
from workbench.evaluation.tables import zoo_evaluator
from workbench.systems.cond_pdiff.style.evaluation import style_path
from workbench.systems.d2nwg.baselines import fewshot_probe, prototype, random_heads, retrieved_head
from workbench.systems.d2nwg.domains import DOMAINS
from workbench.systems.d2nwg.evaluation import select_by_support, steps_to_match
from workbench.systems.d2nwg.heads import finetune_curve, head_accuracy, train_head
from workbench.systems.d2nwg.meta_dataset import DatasetRecipe
from workbench.systems.d2nwg.sources import SOURCES, available_sources, load_source
from workbench.zoo.protocol import Condition

__all__ = ["SamplingApp", "InterpolationApp", "TaskPromptApp", "StyleInterpolationApp", "DatasetComposerApp",
           "TaskCodeApp", "code_accuracy_bars", "compose_recipe", "compose_and_generate", "parse_classes"]


class _App:
    """What every app shares: ``compute()`` does the work and draws nothing; ``run()`` — the widget callback —
    computes and then redraws inside the app's output area (``_draw``)."""

    out: Any
    table: pd.DataFrame | None

    def compute(self) -> pd.DataFrame:
        raise NotImplementedError

    def _draw(self) -> None:
        raise NotImplementedError

    def widget(self) -> Any:
        raise NotImplementedError

    def run(self) -> pd.DataFrame | None:
        """The widget's callback: compute, then redraw the app's output area by setting ``Output.outputs`` directly
        (capturing with ``with out:`` has stalled nbclient in headless runs)."""
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        display(self.widget())


class _ButtonApp(_App):
    """An app driven by one button, a status line and an output area written directly (``Output.outputs``): the
    button is disabled while it computes, a bad input shows its message in the app instead of a traceback."""

    button: Any
    status: Any
    label: str
    busy: str = "Working …"
    result: dict[str, Any] | None
    error: str | None

    def _attempt(self) -> bool:
        """``compute()`` with the button disabled and saying so; a failure becomes ``error``. True on success.
        The caller re-enables the button (``_ready``) once the output area shows the result."""
        self.button.disabled, self.button.description = True, self.busy
        self.error = None
        try:
            self.compute()
            return True
        except Exception as e:  # shown in the app: a ValueError is a bad input, anything else a failure
            self.error = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            return False

    def _ready(self) -> None:
        self.button.disabled, self.button.description = False, self.label

    def _draw_error(self) -> bool:
        """Show ``error`` in the output area (True), or do nothing when there is none (False)."""
        if self.error is None:
            return False
        self.status.value = ""
        self.out.outputs = (_text_output(f"⚠ {self.error}", colour="#b00020"),)
        return True

    def run(self) -> pd.DataFrame | None:
        """The button's callback: disable the button, compute (the status line follows the stages), then redraw
        the output area."""
        try:
            if not self._attempt():
                self.result, self.table = None, None
            self._draw()
        finally:  # enabled again only once the figure matches: a reader (or a test) never sees the old one as new
            self._ready()
        return self.table

    def _outputs(self) -> tuple:
        raise NotImplementedError

    def _draw(self) -> None:
        if self._draw_error():
            return
        self.out.outputs = self._outputs()  # the figure first: "done" never stands beside the previous one
        self.status.value = f"<span style='color:green'>done in {self.result['seconds']:.1f} s</span>"


class _ControlledApp(_ButtonApp):
    """A button app whose figure remembers the controls it was computed with: the result for the starting values
    is shown at once, the button is disabled (and says so) while computing, a changed control marks the figure
    stale, and an error is shown in the app instead of a traceback. Subclasses give ``_controls``, ``_describe``,
    ``compute`` and ``_outputs``."""

    shown: dict[str, Any] | None = None  # the controls the figure was computed with
    seconds: float | None = None
    error: str | None = None

    def _controls(self) -> dict[str, Any]:
        raise NotImplementedError

    def _describe(self, c: dict[str, Any]) -> str:
        raise NotImplementedError

    def _watch(self, controls: Sequence[Any]) -> None:
        for c in controls:
            c.observe(lambda _c: self._stale(), names="value")

    def _stale(self) -> None:
        if self.shown is not None and self._controls() != self.shown:
            self.status.value = ("<span style='color:#b36b00'>⟳ stale: the figure shows "
                                 f"{html.escape(self._describe(self.shown))}; press the button</span>")

    def run(self) -> pd.DataFrame | None:
        """The button's callback: disable the button while computing, then redraw the output area."""
        controls, t0 = self._controls(), time.perf_counter()
        self.status.value = f"<i>⏳ {html.escape(self._describe(controls))} …</i>"
        try:
            if self._attempt():
                self.shown, self.seconds = controls, time.perf_counter() - t0
            self._draw()
        finally:
            self._ready()
        return self.table

    def _draw(self) -> None:
        if self._draw_error() or self.shown is None:  # shown is None: computed headlessly, nothing recorded
            return
        self.out.outputs = self._outputs()
        self.status.value = (f"<span style='color:green'>{html.escape(self._describe(self.shown))}: done in "
                             f"{self.seconds:.1f} s</span>")

    def _first_result(self) -> None:
        if self.shown is None and self.error is None:
            self.run()


class SamplingApp(_ControlledApp):
    """Number of models, sampler, steps, seed → sample, evaluate on the test split, redraw the histogram.

    Shows the result for its starting values at once; while sampling the button is disabled and says so; the figure
    is marked stale when the controls no longer match it; the steps slider is disabled for DDPM (all T steps)."""

    label, busy = "Sample and evaluate", "Sampling …"

    def __init__(self, generator: Any, zoo: Any, *, evaluator: Any = None, n: int = 50, max_n: int = 200) -> None:
        self.generator, self.zoo = generator, zoo
        self.data = zoo.data()
        # evaluated where the generator runs (its device)
        self.evaluator = evaluator or MemberEvaluator(zoo.model(), zoo.spec, probe=self.data.x_test,
                                                      device=getattr(generator, "device", None))
        self.n = w.IntSlider(value=n, min=1, max=max_n, description="models", continuous_update=False)
        self.sampler = w.Dropdown(options=["ddim", "ddpm"], value="ddim", description="sampler")
        self.steps = w.IntSlider(value=50, min=2, max=generator.schedule.num_steps, description="DDIM steps",
                                 continuous_update=False)
        self.seed = w.IntText(value=0, description="seed", layout=w.Layout(width="180px"))
        self.button = w.Button(description=self.label, button_style="primary", icon="play",
                               layout=w.Layout(width="auto"))
        self.status = w.HTML(value="")
        self.out = w.Output()
        self.button.on_click(lambda _b: self.run())
        self.sampler.observe(lambda _c: self._sync(), names="value")
        self._watch((self.n, self.sampler, self.steps, self.seed))
        self.table: pd.DataFrame | None = None
        self.figure = None

    def _controls(self) -> dict[str, Any]:
        return {"n": self.n.value, "sampler": self.sampler.value, "steps": self.steps.value, "seed": self.seed.value}

    def _describe(self, c: dict[str, Any]) -> str:
        steps = f"-{c['steps']}" if c["sampler"] == "ddim" else ""
        return f"{c['n']} models, {c['sampler']}{steps}, seed {c['seed']}"

    def _sync(self) -> None:
        self.steps.disabled = self.sampler.value != "ddim"  # DDPM always runs all T steps

    def compute(self) -> pd.DataFrame:
        """Sample with the current settings and evaluate; sets ``figure`` and ``table`` (draws nothing)."""
        c = self._controls()
        ddim = c["sampler"] == "ddim"  # DDPM always runs all T steps: the slider is DDIM's
        vectors = self.generator.sample(c["n"], sampler=c["sampler"], steps=c["steps"] if ddim else None,
                                        seed=c["seed"])
        res = self.evaluator(vectors, self.data.x_test, self.data.y_test)
        label = f"generated ({c['sampler']}{'-' + str(c['steps']) if ddim else ''})"
        name = getattr(getattr(self.zoo, "config", None), "name", None) or self.zoo.conditions[0].name
        self.figure, self.table = accuracy_distribution({"original": self.zoo.accuracies(), label: res.accuracy},
                                                        title=f"{name}: seed {c['seed']}")
        return self.table

    def _outputs(self) -> tuple:
        return (_figure_output(self.figure), _table_output(self.table.round(2)))

    def widget(self) -> Any:
        """The assembled app (computed for the starting values on first use, so it never shows empty)."""
        self._first_result()
        self._sync()
        return w.VBox([w.HBox([self.n, self.sampler]), w.HBox([self.steps, self.seed]),
                       w.HBox([self.button, self.status]), self.out])


class InterpolationApp(_App):
    """A λ slider between two models, in weight space or in the autoencoder's latent space: the interpolated
    model's test accuracy on the accuracy-vs-λ curve (current λ marked), and its predictions on the first test
    examples (shown as images when the inputs are images). Updates when the slider is released."""

    def __init__(self, zoo: Any, v1: Any, v2: Any, *, generator: Any = None, evaluator: Any = None,
                 n_examples: int = 12, grid: int = 21) -> None:
        self.zoo, self.v1, self.v2, self.generator = zoo, v1, v2, generator
        self.data = zoo.data()
        self.evaluator = evaluator or MemberEvaluator(zoo.model(), zoo.spec, probe=self.data.x_test,
                                                      device=getattr(generator, "device", None))
        self.n_examples = n_examples
        self.lam = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="λ", continuous_update=False)
        modes = ["weights"] + (["latent"] if generator is not None else [])
        self.mode = w.ToggleButtons(options=modes, value="weights", description="space")
        self.status = w.HTML(value="")
        self.out = w.Output()
        self.lam.observe(lambda _c: self.run(), names="value")
        self.mode.observe(lambda _c: self.run(), names="value")
        self.table: pd.DataFrame | None = None
        self.accuracy: float | None = None
        self.lambdas = [round(float(x), 4) for x in torch.linspace(0, 1, grid)]
        self._curves: dict[str, Any] = {}

    def curve(self, mode: str | None = None) -> Any:
        """Test accuracy at every λ of the grid in ``mode`` (computed once per space)."""
        from workbench.evaluation.memorisation import interpolation_accuracy

        mode = mode or self.mode.value
        if mode not in self._curves:
            gen = self.generator if mode == "latent" else None
            acc = interpolation_accuracy(self.evaluator, self.data, self.v1, self.v2, self.lambdas, generator=gen)
            self._curves.update({k: v for k, v in acc.items() if k == mode or k == "weights"})
        return self._curves[mode]

    def compute(self) -> pd.DataFrame:
        """Interpolate at the current λ and evaluate; sets ``accuracy`` and ``table`` (draws nothing)."""
        if self.mode.value == "latent":
            v = interpolate_latent(self.generator, self.v1, self.v2, [self.lam.value])
        else:
            v = interpolate_weights(self.v1, self.v2, [self.lam.value])
        res = self.evaluator(v, self.data.x_test, self.data.y_test)
        self.accuracy = float(res.accuracy[0])
        k = self.n_examples
        self.table = pd.DataFrame({"label": res.targets[:k].cpu().numpy(),
                                   "prediction": res.predictions[0, :k].cpu().numpy()})
        self.table["correct"] = self.table["label"] == self.table["prediction"]
        return self.table

    def figure(self) -> Any:
        """The accuracy-vs-λ curve of the current space with the current λ marked."""
        import plotly.graph_objects as go

        mode = self.mode.value
        fig = go.Figure(go.Scatter(x=self.lambdas, y=self.curve(mode), mode="lines+markers", name=f"{mode} space"))
        fig.add_trace(go.Scatter(x=[self.lam.value], y=[self.accuracy], mode="markers", name=f"λ = {self.lam.value:.2f}",
                                 marker=dict(size=14, symbol="diamond", color="crimson")))
        fig.update_layout(title=f"Test accuracy along the interpolation ({mode} space)", height=340,
                          xaxis_title="λ", yaxis_title="test accuracy (%)")
        return fig

    def digits(self) -> Any | None:
        """The first test inputs with label → prediction (None when the inputs are not images)."""
        x = self.data.x_test[:self.n_examples].detach().float().cpu()
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            return None
        x = (x - x.amin(dim=(1, 2, 3), keepdim=True)) / (x.amax(dim=(1, 2, 3), keepdim=True)
                                                         - x.amin(dim=(1, 2, 3), keepdim=True)).clamp_min(1e-8)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        cols = [f"{'✓' if c else '✗'} {lab}→{pred}" for lab, pred, c in self.table.itertuples(index=False)]
        return image_grid(x[None], ["test"], cols, title="First test examples: label → prediction", scale=2)

    def run(self) -> pd.DataFrame:
        """The slider's callback (on release): compute, then redraw the output area."""
        self.status.value = "<i>⏳ evaluating …</i>"
        self.compute()
        self._draw()
        return self.table

    def _draw(self) -> None:
        outs = [_figure_output(self.figure())]
        digits = self.digits()
        if digits is not None:
            outs.append(_figure_output(digits))
        outs.append(_table_output(self.table.T))
        self.out.outputs = tuple(outs)
        self.status.value = (f"λ = {self.lam.value:.2f} ({self.mode.value}): test accuracy "
                             f"<b>{self.accuracy:.2f} %</b>")  # after the figure: it describes what is shown

    def widget(self) -> Any:
        """The assembled app (computed for the starting λ on first use, so it never shows empty)."""
        if self.accuracy is None:
            self.run()
        return w.VBox([w.HBox([self.lam, self.mode]), self.status, self.out])


class TaskPromptApp(_ControlledApp):
    """Type a task description and two examples → generate LoRA weights → accuracy on a chosen task's test split
    and a few predictions (Cond P-Diff). Choosing a task pre-fills its text; edit it freely."""

    label, busy = "Generate and evaluate", "Generating …"

    def __init__(self, generator: Any, zoo: Any, *, task: str | None = None, n: int = 8, n_examples: int = 10,
                 evaluator: Any = None) -> None:
        self.generator, self.zoo = generator, zoo
        self.evaluator = evaluator or zoo_evaluator(zoo)
        self.n_examples = n_examples
        self.conditions = {c.name: c for c in zoo.conditions}  # seen, then unseen: the zoo interface's order
        names = list(self.conditions)
        start = self.conditions[task or names[0]]
        self.task = w.Dropdown(options=names, value=start.name, description="evaluate on")
        self.description = w.Text(value=start.description, description="task", layout=w.Layout(width="70%"))
        self.example1 = w.Text(value=_example(start, 0), description="example 1", layout=w.Layout(width="70%"))
        self.example2 = w.Text(value=_example(start, 1), description="example 2", layout=w.Layout(width="70%"))
        self.n = w.IntSlider(value=n, min=1, max=64, description="models", continuous_update=False)
        self.seed = w.IntText(value=0, description="seed", layout=w.Layout(width="180px"))
        self.button = w.Button(description=self.label, button_style="primary", icon="play",
                               layout=w.Layout(width="auto"))
        self.status = w.HTML(value="")
        self.out = w.Output()
        self.task.observe(lambda _c: self._prefill(), names="value")
        self.button.on_click(lambda _b: self.run())
        self._watch((self.task, self.description, self.example1, self.example2, self.n, self.seed))
        self.table: pd.DataFrame | None = None
        self.predictions: pd.DataFrame | None = None
        self.nearest_seen: str | None = None

    def _controls(self) -> dict[str, Any]:
        return {"task": self.task.value, "text": self.description.value, "examples": (self.example1.value,
                self.example2.value), "n": self.n.value, "seed": self.seed.value}

    def _describe(self, c: dict[str, Any]) -> str:
        text = c["text"] if len(c["text"]) <= 40 else c["text"][:37] + "…"
        return f"{c['n']} models for “{text}” on {c['task']}, seed {c['seed']}"

    def _prefill(self) -> None:
        t = self.conditions[self.task.value]
        self.description.value, self.example1.value, self.example2.value = t.description, _example(t, 0), \
            _example(t, 1)

    def compute(self) -> pd.DataFrame:
        """Generate from the current text and evaluate on the chosen task; sets ``table`` and ``predictions``."""
        examples = [e for e in (self.example1.value, self.example2.value) if e.strip()]
        vectors, self.nearest_seen = self.generator.sample_text(self.description.value, examples, n=self.n.value,
                                                                seed=self.seed.value)
        data = self.zoo.data(self.task.value)
        res = self.evaluator(vectors, data.x_test, data.y_test)
        orig = self.zoo.accuracies(self.task.value)
        best = int(res.accuracy.argmax())
        self.table = pd.DataFrame([
            {"set": "generated", "models": len(res), "mean": res.accuracy.mean(), "best": res.accuracy.max(),
             "min": res.accuracy.min()},
            {"set": f"original ({self.task.value})", "models": len(orig), "mean": orig.mean(), "best": orig.max(),
             "min": orig.min()}]).set_index("set")
        k = self.n_examples
        self.predictions = pd.DataFrame({"label": res.targets[:k].cpu().numpy(),
                                         "prediction (best generated)": res.predictions[best, :k].cpu().numpy()})
        return self.table

    def _outputs(self) -> tuple:
        return (_text_output(f"statistics of the nearest seen task: {self.nearest_seen}"),
                _table_output(self.table.round(2)), _table_output(self.predictions.T))

    def widget(self) -> Any:
        """The assembled app (computed for the starting task on first use, so it never shows empty)."""
        self._first_result()
        return w.VBox([self.task, self.description, self.example1, self.example2, w.HBox([self.n, self.seed]),
                       w.HBox([self.button, self.status]), self.out])


def _example(condition: Condition, i: int) -> str:
    """A condition's i-th example text ("" where it has fewer)."""
    return condition.examples[i] if i < len(condition.examples) else ""


class StyleInterpolationApp(_App):
    """Style interpolation (Cond P-Diff): λ slider, style pair, content image and space (weights or the generator's
    latent space) → the stylised image between two generated style LoRAs, and its style distance to both ends."""

    def __init__(self, generator: Any, zoo: Any, *, vectors: dict | None = None, first: str | None = None,
                 second: str | None = None, seed: int = 0) -> None:

        self.generator, self.zoo, self.seed = generator, zoo, seed
        self.vectors = dict(vectors or {})  # style → one generated vector (sampled on demand)
        styles = zoo.styles
        self.first = w.Dropdown(options=styles, value=first or styles[0], description="from")
        self.second = w.Dropdown(options=styles, value=second or styles[-1], description="to")
        # each move renders images: update when a slider is released, not on every drag step
        self.content = w.IntSlider(value=0, min=0, max=len(zoo.eval_content) - 1, description="content",
                                   continuous_update=False)
        self.lam = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="λ", continuous_update=False)
        self.mode = w.ToggleButtons(options=["weights", "latent"], value="weights", description="space")
        self.status = w.HTML(value="")
        self.out = w.Output()
        for c in (self.first, self.second, self.content, self.lam, self.mode):
            c.observe(lambda _c: self.run(), names="value")
        self.table: pd.DataFrame | None = None
        self.images: Any = None

    def _vector(self, style: str) -> Any:
        if style not in self.vectors:
            self.vectors[style] = self.generator.sample(style, 1, seed=self.seed)[0]
        return self.vectors[style]

    def compute(self) -> pd.DataFrame:
        """Stylise the content at λ (and both ends); sets ``images`` (3, 3, H, W) and ``table`` (draws nothing)."""
        a, b = self.first.value, self.second.value
        lams = [0.0, self.lam.value, 1.0]
        space = "latent" if self.mode.value == "latent" else "weight"
        path = style_path(self.generator, (a, b), self._vector(a), self._vector(b), lams, space)
        content = self.zoo.eval_content[self.content.value:self.content.value + 1]
        self.images = self.zoo.apply(path, content)[:, 0]
        rep = content.repeat(3, 1, 1, 1)
        self.table = pd.DataFrame({"λ": lams, f"distance to {a}": self.zoo.style_distance(a, self.images, rep).numpy(),
                                   f"distance to {b}": self.zoo.style_distance(b, self.images, rep).numpy()}
                                  ).set_index("λ")
        return self.table

    def figure(self) -> Any:
        """The content, both ends and the image at λ as one plotly figure."""
        content = self.zoo.eval_content[self.content.value]
        row = torch.stack([content, self.images[0], self.images[1], self.images[2]])[None]
        return image_grid(row, [self.mode.value], ["content", self.first.value, f"λ = {self.lam.value:.2f}",
                                                   self.second.value])

    def run(self) -> pd.DataFrame:
        """A control's callback: stylise at the current settings, then redraw the output area."""
        self.status.value = "<i>⏳ stylising …</i>"
        t0 = time.perf_counter()
        self.compute()
        self._draw()
        self.status.value = (f"{html.escape(self.first.value)} → {html.escape(self.second.value)} at λ = "
                             f"{self.lam.value:.2f} ({self.mode.value}): {time.perf_counter() - t0:.1f} s")
        return self.table

    def _draw(self) -> None:
        self.out.outputs = (_figure_output(self.figure()), _table_output(self.table.round(3)))

    def widget(self) -> Any:
        """The assembled app (computed for the starting pair on first use, so it never shows empty)."""
        if self.table is None:
            self.run()
        return w.VBox([w.HBox([self.first, self.second]), w.HBox([self.content, self.mode]), self.lam, self.status,
                       self.out])


# -- D2NWG: compose a dataset, generate its classifier heads (notebook 07) -----------------------------------------
N_SOURCE_CLASSES = 10  # every source of the meta-dataset has 10 classes (ids 0..9)
MAX_SHOTS = 10


def parse_classes(classes: str | Sequence[int], ways: int, n_classes: int = N_SOURCE_CLASSES) -> tuple[int, ...]:
    """The ordered class ids of a composed dataset, from text such as ``"3,7,1,0,9"`` (commas, spaces or
    semicolons) or a sequence of ints. ValueError (a sentence for the widget) unless they are exactly ``ways``
    distinct integers in 0..n_classes-1."""
    if isinstance(classes, str):
        parts = [p for p in classes.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
        try:
            ids = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"classes: {classes!r} is not a list of class ids; type {ways} distinct digits "
                             f"0–{n_classes - 1} separated by commas, e.g. "
                             f"{','.join(str(c) for c in range(ways))}") from None
    else:
        try:
            ids = [int(c) for c in classes]
        except (TypeError, ValueError):
            raise ValueError(f"classes must be {ways} class ids 0–{n_classes - 1}, got {classes!r}") from None
        if any(float(c) != i for c, i in zip(classes, ids)):
            raise ValueError(f"classes must be whole numbers 0–{n_classes - 1}, got {list(classes)}")
    if len(ids) != ways:
        raise ValueError(f"classes: the generator makes {ways}-way heads, so give exactly {ways} classes; got "
                         f"{len(ids)} ({ids})")
    dup = sorted({c for c in ids if ids.count(c) > 1})
    if dup:
        raise ValueError(f"classes must be distinct; {dup} appear{'s' if len(dup) == 1 else ''} more than once "
                         f"in {ids}")
    bad = [c for c in ids if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f"classes must be in 0–{n_classes - 1} (the sources have {n_classes} classes); {bad} "
                         f"{'is' if len(bad) == 1 else 'are'} not")
    return tuple(ids)


def _source_role(zoo: Any, source: str) -> str:
    cfg = zoo.config
    return ("seen source" if source in cfg.sources else "held-out source" if source in cfg.unseen_sources
            else "not in the meta-dataset")


def _domain_role(zoo: Any, domain: str) -> str:
    cfg = zoo.config
    return ("seen domain" if domain in cfg.seen_domains else "held-out domain" if domain in cfg.unseen_domains
            else "not in the meta-dataset")


def compose_recipe(zoo: Any, source: str, classes: str | Sequence[int], domain: str) -> tuple[DatasetRecipe, str]:
    """Validate a composed dataset against a D2NWG dataset zoo and say how new it is: ``(recipe, novelty)``. A
    dataset of the zoo keeps its recipe; a new one gets the held-out kind of its strongest shift (a source no seen
    dataset comes from, then a domain none is in, else a new combination of classes). ValueError: a sentence."""
    avail = available_sources()
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is unknown; choose one of {[s for s, ok in avail.items() if ok]}")
    if not avail[source]:
        raise ValueError(f"source {source!r} needs its torchvision files, which are not on this machine; choose "
                         f"one of {[s for s, ok in avail.items() if ok]}")
    if domain not in DOMAINS:
        raise ValueError(f"domain {domain!r} is unknown; choose one of {list(DOMAINS)}")
    ids = parse_classes(classes, zoo.ways)
    probe = DatasetRecipe(source, domain, ids)
    if probe.name in zoo.recipes:
        r = zoo.recipes[probe.name]
        what = ("a seen dataset: the generator was trained on its heads" if r.seen else
                f"a held-out dataset of the zoo ({r.kind.replace('_', ' ')}): no part of the generator saw it")
        return r, f"{r.name} is {what}."
    cfg = zoo.config
    seen_sets = {frozenset(r.classes) for r in zoo.recipes.values() if r.seen and r.source == source}
    kind = ("unseen_source" if source not in cfg.sources else "unseen_domain" if domain not in cfg.seen_domains
            else "unseen_combination")
    classes_note = ("a class set some seen dataset of this source has, in another label order" if frozenset(ids)
                    in seen_sets else "a class set no seen dataset has")
    r = DatasetRecipe(source, domain, ids, kind=kind)
    return r, (f"{r.name} is a new dataset ({kind.replace('_', ' ')}) — source: {_source_role(zoo, source)}; "
               f"domain: {_domain_role(zoo, domain)}; classes: {classes_note}.")


def _support_images(zoo: Any, recipe: DatasetRecipe, shots: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``zoo.support(recipe, shots, seed=seed)``, in its order: the same seeded draw per class over the
    class's training images (``zoo.images`` lists them per class in training order, as ``zoo.data`` does)."""
    x, y = zoo.images(recipe, per_class=10 ** 9, split="train")
    g = torch.Generator().manual_seed(seed)
    idx, start = [], 0
    for c in range(len(recipe.classes)):
        n = int((y == c).sum())
        idx.append(start + torch.randperm(n, generator=g)[:shots])
        start += n
    idx = torch.cat(idx)
    return x[idx], y[idx]


def compose_and_generate(results: Any, source: str, classes: str | Sequence[int], domain: str, shots: int, *,
                         n: int = 10, seed: int = 0, steps: Sequence[int] = (0, 1, 5, 25, 100),
                         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compose a dataset (source, ordered classes, domain), draw ``shots`` support images per class from its
    training split, generate ``n`` heads with the fitted D2NWG generator of ``results`` (a ``D2NWGResults``), and
    score them on the dataset's test split beside every start that needs no diffusion — random initialisation, the
    retrieved seen head (as is and with rows matched), the class-prototype head, a linear probe on the support set —
    and, as the ceiling, a probe trained on the full training split (and the zoo's own heads where it has them).
    Then fine-tune from the generated head picked on the support set, from random and from the prototype.

    Returns a dict: ``recipe``, ``novelty`` (a sentence), ``nearest_seen``, ``support`` (a SupportSet), ``images`` and
    ``labels`` (the support images), ``accuracy`` (per method: heads, mean, min, max, percent), ``curves`` (long:
    start, step, test_acc), ``curve_table`` (mean at ``steps``), ``steps_to_match``, ``figures`` (``support``,
    ``accuracy``, ``curves``), ``summary`` (a sentence) and ``seconds``. Bad inputs raise ValueError with a sentence
    (the widget shows it). ``progress`` receives a short message before each stage."""
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    zoo, gen = results.zoo, results.generator
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS:
        raise ValueError(f"shots must be a whole number from 1 to {MAX_SHOTS} (support images per class), got "
                         f"{shots!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive whole number of heads to generate, got {n!r}")
    recipe, novelty = compose_recipe(zoo, source, classes, domain)
    cached = (zoo.root / "features" / f"{recipe.source}.{recipe.domain}.safetensors").exists()
    say(f"loading {recipe.source} under {recipe.domain}" + ("" if cached else
        " (not in the zoo: computing its backbone features once, which takes a while on a CPU)"))
    d = zoo.data(recipe)
    support = zoo.support(recipe, shots, seed=seed)
    images, labels = _support_images(zoo, recipe, shots, seed)
    if not torch.equal(labels, support.labels):  # the draw is the zoo's; a mismatch means zoo.support changed
        raise RuntimeError("the support images do not follow zoo.support's draw: update _support_images")
    ways = support.ways

    say(f"generating {n} heads from {shots} image{'s' if shots != 1 else ''} per class")
    generated = gen.sample(support, n, seed=seed)
    selected = generated[select_by_support(generated, support)][None]
    retrieved, nearest = retrieved_head(gen, zoo, support)
    matched, _ = retrieved_head(gen, zoo, support, match_rows=True)
    say("scoring the baselines")
    heads = {"generated": generated, "generated (picked on support)": selected,
             "random": random_heads(n, gen.in_features, ways, seed=seed), "retrieval": retrieved[None],
             "retrieval (rows matched)": matched[None], "prototype": prototype(support)[None],
             "few-shot probe": fewshot_probe(support, seed=seed)[None],
             "probe on the full training split": train_head(d.x_train, d.y_train, ways, seed=seed)[None]}
    rows = []
    for name, v in heads.items():
        a = head_accuracy(v, d.x_test, d.y_test, ways)
        rows.append({"method": name, "heads": len(a), "mean": float(a.mean()), "min": float(a.min()),
                     "max": float(a.max())})
    if recipe.name in zoo.recipes:
        a = zoo.accuracies(recipe.name)
        rows.append({"method": "zoo's trained heads", "heads": len(a), "mean": float(a.mean()), "min": float(a.min()),
                     "max": float(a.max())})
    accuracy = pd.DataFrame(rows).set_index("method")

    say(f"fine-tuning for {max(steps)} SGD steps from the generated, random and prototype heads")
    starts = {"generated": selected[0], "random": heads["random"][0], "prototype": heads["prototype"][0]}
    curves = pd.DataFrame([{"dataset": recipe.name, "start": label, "step": s, "test_acc": acc}
                           for label, v in starts.items()
                           for s, acc in finetune_curve(v, (d.x_train, d.y_train), (d.x_test, d.y_test), ways,
                                                        steps=steps, seed=seed, every_step=True).items()])
    k = steps_to_match(curves)
    class_names = load_source(recipe.source, n_per_class=1, seed=0).class_names
    names = [class_names[c] for c in recipe.classes]
    title = f"{recipe.source} / {recipe.domain}: classes {', '.join(names)}"
    fig_support = support_grid(images, labels, names, title=f"Support set ({shots} per class, training split) — "
                                                            f"{title}")
    fig_acc, _ = head_accuracy_bars(accuracy, title=f"Test accuracy — {title}")
    fig_curves, curve_table = finetune_curves(curves, steps=steps, title=f"Fine-tuning — {title}")
    g, p = accuracy.loc["generated", "mean"], accuracy.loc["prototype", "mean"]
    summary = (f"{novelty} Generated heads: {g:.1f} % on average (best {accuracy.loc['generated', 'max']:.1f} %, "
               f"picked on the support set {accuracy.loc['generated (picked on support)', 'mean']:.1f} %) vs prototype "
               f"{p:.1f} %, few-shot probe {accuracy.loc['few-shot probe', 'mean']:.1f} %, random "
               f"{accuracy.loc['random', 'mean']:.1f} %; nearest seen dataset {nearest}. Fine-tuning from the "
               f"generated head reaches random's {max(steps)}-step accuracy "
               + (f"after {k} step{'s' if k != 1 else ''}." if k is not None else f"in none of the {max(steps)} steps."))
    return {"recipe": recipe, "novelty": novelty, "nearest_seen": nearest, "support": support, "images": images,
            "labels": labels, "accuracy": accuracy, "curves": curves, "curve_table": curve_table,
            "steps_to_match": k, "figures": {"support": fig_support, "accuracy": fig_acc, "curves": fig_curves},
            "summary": summary, "seconds": time.perf_counter() - t0}


def _figure_output(fig: Any) -> dict:
    """An Output widget entry for a plotly figure: plotly's JSON mimetype (JupyterLab) and an HTML div that uses the
    plotly.js the notebook renderer loaded (the HTML report). Built here rather than through the figure's
    ``_repr_mimebundle_``, which re-embeds all of plotly.js (~5 MB) in the notebook on every call."""
    spec = json.loads(pio.to_json(fig, validate=False))
    return {"output_type": "display_data", "metadata": {},
            "data": {"application/vnd.plotly.v1+json": {**spec, "config": {"plotlyServerURL": "https://plot.ly"}},
                     "text/html": pio.to_html(fig, full_html=False, include_plotlyjs=False),
                     "text/plain": f"<plotly figure: {fig.layout.title.text or 'untitled'}>"}}


def _table_output(table: pd.DataFrame) -> dict:
    return {"output_type": "display_data", "data": {"text/plain": repr(table), "text/html": table._repr_html_()},
            "metadata": {}}


def _text_output(text: str, colour: str | None = None) -> dict:
    style = f" style='color:{colour}'" if colour else ""
    return {"output_type": "display_data", "data": {"text/plain": text,
                                                    "text/html": f"<p{style}>{html.escape(text)}</p>"},
            "metadata": {}}


class DatasetComposerApp(_ButtonApp):
    """D2NWG: compose a dataset — source, ``ways`` ordered classes, domain, shots — and see its support images, the
    heads generated for it against every baseline, and fine-tuning from them (:func:`compose_and_generate`).

    The output area is written directly (``Output.outputs``), so the first display fills it (with the first
    held-out dataset of the zoo, or ``source``/``classes``/``domain``) and headless runs never capture output."""

    def __init__(self, results: Any, *, source: str | None = None, classes: str | Sequence[int] | None = None,
                 domain: str | None = None, shots: int = 5, n: int = 10, seed: int = 0) -> None:
        self.results = results
        zoo = results.zoo
        start = zoo.recipe(zoo.names("unseen")[0]) if zoo.names("unseen") else next(iter(zoo.recipes.values()))
        sources = [s for s, ok in available_sources().items() if ok]
        self.source = w.Dropdown(options=[(f"{s} ({_source_role(zoo, s)})", s) for s in sources],
                                 value=source or start.source, description="source",
                                 layout=w.Layout(width="auto"))
        self.classes = w.Text(value=classes if isinstance(classes, str) else ",".join(
            str(c) for c in (classes or start.classes)), description="classes",
            placeholder=f"{zoo.ways} distinct digits, e.g. {','.join(str(c) for c in range(zoo.ways))}")
        self.domain = w.Dropdown(options=[(f"{d} ({_domain_role(zoo, d)})", d) for d in DOMAINS],
                                 value=domain or start.domain, description="domain", layout=w.Layout(width="auto"))
        self.shots = w.IntSlider(value=shots, min=1, max=MAX_SHOTS, description="shots")
        self.n = w.IntSlider(value=n, min=1, max=64, description="heads")
        self.seed = w.IntText(value=seed, description="seed", layout=w.Layout(width="180px"))
        self.label = "Generate heads for this dataset"
        self.button = w.Button(description=self.label, button_style="primary", icon="play",
                               layout=w.Layout(width="auto"))
        self.status = w.HTML(value="")
        self.out = w.Output()
        self.button.on_click(lambda _b: self.run())
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.table: pd.DataFrame | None = None

    def _progress(self, message: str) -> None:
        self.status.value = f"<i>⏳ {html.escape(message)} …</i>"

    def compute(self) -> pd.DataFrame:
        """Compose and generate with the current controls; sets ``result`` and ``table`` (draws nothing)."""
        self.result = compose_and_generate(self.results, self.source.value, self.classes.value, self.domain.value,
                                           self.shots.value, n=self.n.value, seed=self.seed.value,
                                           progress=self._progress)
        self.table = self.result["accuracy"]
        return self.table

    def _outputs(self) -> tuple:
        r = self.result
        return (_text_output(r["summary"]), _figure_output(r["figures"]["support"]),
                _figure_output(r["figures"]["accuracy"]), _table_output(r["accuracy"].round(1)),
                _figure_output(r["figures"]["curves"]), _table_output(r["curve_table"]))

    def widget(self) -> Any:
        """The assembled app (computed with the initial controls on first use, so it never shows empty)."""
        if self.result is None and self.error is None:
            self.run()
        return w.VBox([w.HBox([self.source, self.domain]), self.classes, w.HBox([self.shots, self.n, self.seed]),
                       w.HBox([self.button, self.status]), self.out])


def code_accuracy_bars(probe: dict) -> Any:
    """Bars of each model family's accuracy per digit (positive digits marked), from :func:`task_code_probe`."""
    import plotly.graph_objects as go
    frame = probe["per_digit"]
    labels = [f"{d}{' +' if p else ''}" for d, p in zip(frame.index, frame["positive"])]
    fig = go.Figure([go.Bar(x=labels, y=frame[c], name=c) for c in frame.columns if c != "positive"])
    fig.update_layout(barmode="group", height=380, yaxis_title="accuracy on the digit's test images (%)",
                      xaxis_title="digit (+: positive under this code)",
                      title=f"code {probe['code']} ({probe['status']}); nearest seen code {probe['nearest']} "
                            f"(Hamming {probe['hamming']})")
    return fig


class TaskCodeApp(_ButtonApp):
    """RPG: toggle the 10 bits of a task code (bit d: digit d is positive), generate models for it and see their
    accuracy per digit beside the model trained on that code (when the zoo has it) and the nearest seen code's
    model (:func:`workbench.systems.rpg.experiment.task_code_probe`)."""

    def __init__(self, run: Any, *, code: str | None = None, n: int = 8, seed: int = 0) -> None:
        self.run_ = run
        start = code or run.zoo.names[run.zoo.unseen_ids()[0] if run.zoo.unseen_ids() else 0]
        self.bits = [w.ToggleButton(value=start[d] == "1", description=str(d), layout=w.Layout(width="42px"))
                     for d in range(10)]
        self.n = w.IntSlider(value=n, min=1, max=32, description="models", continuous_update=False)
        self.seed = w.IntText(value=seed, description="seed", layout=w.Layout(width="180px"))
        self.label, self.busy = "Generate models for this code", "Generating …"
        self.button = w.Button(description=self.label, button_style="primary", icon="play",
                               layout=w.Layout(width="auto"))
        self.status = w.HTML(value="")
        self.out = w.Output()
        self.button.on_click(lambda _b: self.run())
        for b in self.bits:  # a figure that no longer matches the bits is marked stale until the next run
            b.observe(lambda _c: self._stale(), names="value")
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.table: pd.DataFrame | None = None

    @property
    def code(self) -> str:
        """The code the toggles spell, digit 0 first."""
        return "".join("1" if b.value else "0" for b in self.bits)

    def _stale(self) -> None:
        if self.result is not None and self.result["code"] != self.code:
            self.status.value = "<i>the figure shows another code: press the button</i>"

    def compute(self) -> pd.DataFrame:
        """Generate and score with the current toggles; sets ``result`` and ``table`` (draws nothing)."""
        from workbench.systems.rpg.experiment import task_code_probe
        t0 = time.perf_counter()
        self.result = task_code_probe(self.run_, self.code, n=self.n.value, seed=self.seed.value)
        self.result["seconds"] = time.perf_counter() - t0
        self.table = self.result["per_digit"]
        return self.table

    def _outputs(self) -> tuple:
        r = self.result
        return (_figure_output(code_accuracy_bars(r)), _table_output(r["accuracy"].round(1).to_frame()),
                _table_output(r["per_digit"].round(1)))

    def widget(self) -> Any:
        """The assembled app (computed for the starting code on first use, so it never shows empty)."""
        if self.result is None and self.error is None:
            self.run()
        return w.VBox([w.HBox(self.bits), w.HBox([self.n, self.seed]), w.HBox([self.button, self.status]),
                       self.out])
