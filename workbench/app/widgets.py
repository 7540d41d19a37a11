"""ipywidgets apps for JupyterLab. Each app's callback is a plain method (``run``) so tests can drive it headlessly."""

from __future__ import annotations

from typing import Any

import ipywidgets as w
import pandas as pd
import torch
from IPython.display import clear_output, display

from workbench.app.plots import accuracy_distribution, image_grid
from workbench.evaluation.evaluate import MemberEvaluator
from workbench.evaluation.memorisation import interpolate_latent, interpolate_weights
from workbench.evaluation.tables import zoo_evaluator
from workbench.systems.cond_pdiff.style.evaluation import style_path
from workbench.zoo.protocol import Condition

__all__ = ["SamplingApp", "InterpolationApp", "TaskPromptApp", "StyleInterpolationApp"]


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

    def run(self) -> pd.DataFrame:
        """The widget's callback: compute, then redraw inside the widget's output area.

        Headless runs (papermill, tests in a kernel) should call :meth:`compute`: output captured into an
        ``ipywidgets.Output`` without a frontend has stalled nbclient here."""

        self.compute()
        with self.out:
            clear_output(wait=True)
            self._draw()
        return self.table

    def _ipython_display_(self) -> None:
        display(self.widget())


class SamplingApp(_App):
    """Number of models, sampler, steps, seed → sample, evaluate on the test split, redraw the histogram."""

    def __init__(self, generator: Any, zoo: Any, *, evaluator: Any = None, n: int = 50, max_n: int = 200) -> None:
        self.generator, self.zoo = generator, zoo
        self.data = zoo.data()
        self.evaluator = evaluator or MemberEvaluator(zoo.model(), zoo.spec, probe=self.data.x_test)
        self.n = w.IntSlider(value=n, min=1, max=max_n, description="models")
        self.sampler = w.Dropdown(options=["ddim", "ddpm"], value="ddim", description="sampler")
        self.steps = w.IntSlider(value=50, min=2, max=generator.schedule.num_steps, description="DDIM steps")
        self.seed = w.IntText(value=0, description="seed")
        self.button = w.Button(description="Sample and evaluate", button_style="primary")
        self.out = w.Output()
        self.button.on_click(lambda _b: self.run())
        self.table: pd.DataFrame | None = None
        self.figure = None

    def compute(self) -> pd.DataFrame:
        """Sample with the current settings and evaluate; sets ``figure`` and ``table`` (draws nothing)."""
        ddim = self.sampler.value == "ddim"  # DDPM always runs all T steps: the slider is DDIM's
        vectors = self.generator.sample(self.n.value, sampler=self.sampler.value,
                                        steps=self.steps.value if ddim else None, seed=self.seed.value)
        res = self.evaluator(vectors, self.data.x_test, self.data.y_test)
        label = f"generated ({self.sampler.value}{'-' + str(self.steps.value) if self.sampler.value == 'ddim' else ''})"
        self.figure, self.table = accuracy_distribution({"original": self.zoo.accuracies(),
                                                         label: res.accuracy},
                                                        title=f"{self.zoo.config.name}: seed {self.seed.value}")
        return self.table

    def _draw(self) -> None:
        display(self.figure)
        display(self.table)

    def widget(self) -> Any:
        """The assembled app."""
        return w.VBox([w.HBox([self.n, self.sampler]), w.HBox([self.steps, self.seed]), self.button, self.out])


class InterpolationApp(_App):
    """A λ slider between two models, in weight space or in the autoencoder's latent space: shows the interpolated
    model's test accuracy and its predictions on the first test examples."""

    def __init__(self, zoo: Any, v1: Any, v2: Any, *, generator: Any = None, evaluator: Any = None,
                 n_examples: int = 12) -> None:


        self.zoo, self.v1, self.v2, self.generator = zoo, v1, v2, generator
        self.data = zoo.data()
        self.evaluator = evaluator or MemberEvaluator(zoo.model(), zoo.spec, probe=self.data.x_test)
        self.n_examples = n_examples
        self.lam = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="λ")
        modes = ["weights"] + (["latent"] if generator is not None else [])
        self.mode = w.ToggleButtons(options=modes, value="weights", description="space")
        self.out = w.Output()
        self.lam.observe(lambda _c: self.run(), names="value")
        self.mode.observe(lambda _c: self.run(), names="value")
        self.table: pd.DataFrame | None = None
        self.accuracy: float | None = None

    def compute(self) -> pd.DataFrame:
        """Interpolate at the current λ and evaluate; sets ``accuracy`` and ``table`` (draws nothing)."""
        if self.mode.value == "latent":
            v = interpolate_latent(self.generator, self.v1, self.v2, [self.lam.value])
        else:
            v = interpolate_weights(self.v1, self.v2, [self.lam.value])
        res = self.evaluator(v, self.data.x_test, self.data.y_test)
        self.accuracy = float(res.accuracy[0])
        k = self.n_examples
        self.table = pd.DataFrame({"label": res.targets[:k].numpy(), "prediction": res.predictions[0, :k].numpy()})
        self.table["correct"] = self.table["label"] == self.table["prediction"]
        return self.table

    def _draw(self) -> None:
        print(f"λ = {self.lam.value:.2f} ({self.mode.value}): test accuracy {self.accuracy:.2f} %")
        display(self.table.T)

    def widget(self) -> Any:
        """The assembled app."""
        return w.VBox([w.HBox([self.lam, self.mode]), self.out])


class TaskPromptApp(_App):
    """Type a task description and two examples → generate LoRA weights → accuracy on a chosen task's test split
    and a few predictions (Cond P-Diff). Choosing a task pre-fills its text; edit it freely."""

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
        self.n = w.IntSlider(value=n, min=1, max=64, description="models")
        self.seed = w.IntText(value=0, description="seed")
        self.button = w.Button(description="Generate and evaluate", button_style="primary")
        self.out = w.Output()
        self.task.observe(lambda _c: self._prefill(), names="value")
        self.button.on_click(lambda _b: self.run())
        self.table: pd.DataFrame | None = None
        self.predictions: pd.DataFrame | None = None
        self.nearest_seen: str | None = None

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
        self.predictions = pd.DataFrame({"label": res.targets[:k].numpy(),
                                         "prediction (best generated)": res.predictions[best, :k].numpy()})
        return self.table

    def _draw(self) -> None:
        print(f"statistics of the nearest seen task: {self.nearest_seen}")
        display(self.table.round(2))
        display(self.predictions.T)

    def widget(self) -> Any:
        """The assembled app."""
        return w.VBox([self.task, self.description, self.example1, self.example2, w.HBox([self.n, self.seed]),
                       self.button, self.out])


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
        self.content = w.IntSlider(value=0, min=0, max=len(zoo.eval_content) - 1, description="content")
        self.lam = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="λ")
        self.mode = w.ToggleButtons(options=["weights", "latent"], value="weights", description="space")
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

    def _draw(self) -> None:
        self.figure().show()
        display(self.table.round(3))

    def widget(self) -> Any:
        """The assembled app."""
        return w.VBox([w.HBox([self.first, self.second]), w.HBox([self.content, self.mode]), self.lam, self.out])
