"""ipywidgets apps for JupyterLab. Each app's callback is a plain method (``run``) so tests can drive it headlessly."""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["SamplingApp"]


class SamplingApp:
    """Number of models, sampler, steps, seed → sample, evaluate on the test split, redraw the histogram."""

    def __init__(self, generator: Any, zoo: Any, *, evaluator: Any = None, n: int = 50, max_n: int = 200) -> None:
        import ipywidgets as w

        from .evaluate import MemberEvaluator

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

    def run(self) -> pd.DataFrame:
        """Sample with the current settings, evaluate, redraw; returns the summary table."""
        from IPython.display import clear_output, display

        from .plots import accuracy_distribution

        vectors = self.generator.sample(self.n.value, sampler=self.sampler.value, steps=self.steps.value,
                                        seed=self.seed.value)
        res = self.evaluator(vectors, self.data.x_test, self.data.y_test)
        label = f"generated ({self.sampler.value}{'-' + str(self.steps.value) if self.sampler.value == 'ddim' else ''})"
        self.figure, self.table = accuracy_distribution({"original": self.zoo.accuracies().values,
                                                         label: res.accuracy},
                                                        title=f"{self.zoo.config.name}: seed {self.seed.value}")
        with self.out:
            clear_output(wait=True)
            display(self.figure)
            display(self.table)
        return self.table

    def widget(self) -> Any:
        """The assembled app."""
        import ipywidgets as w

        return w.VBox([w.HBox([self.n, self.sampler]), w.HBox([self.steps, self.seed]), self.button, self.out])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget())
