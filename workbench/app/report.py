"""The report: execute the numbered notebooks with papermill, export HTML, gather metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from workbench.app.presets import is_preset_path, load_preset
from workbench.core.io import atomic_write_json, atomic_write_text
from workbench.core.paths import check_output_dir

__all__ = ["ReportError", "execute_notebook", "notebook_paths", "record_metrics", "run_report"]

REPO = Path(__file__).resolve().parents[2]


class ReportError(RuntimeError):
    """A notebook of the report failed; the message names the notebook and the cell."""


def record_metrics(run_dir: str | Path, notebook: str, metrics: dict[str, Any]) -> Path:
    """Write a notebook's metrics to ``<run_dir>/metrics/<notebook>.json`` (the report gathers them)."""
    path = Path(run_dir) / "metrics" / f"{Path(notebook).stem}.json"
    atomic_write_json(path, metrics)
    return path


def notebook_paths(notebooks_dir: str | Path | None = None, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in order (optionally those whose name starts with ``only``)."""
    d = Path(notebooks_dir) if notebooks_dir else REPO / "notebooks"
    every = sorted(p for p in d.glob("[0-9][0-9]_*.ipynb"))
    if not every:
        raise ReportError(f"no notebooks NN_*.ipynb found in {d}")
    if isinstance(only, str):
        only = [only]
    if only:
        if not all(isinstance(o, str) and o.strip() for o in only):
            raise ReportError(f"--only needs notebook numbers or name prefixes (e.g. 01, 03_sampling), got {only!r}")
        nbs = [p for p in every if any(p.name.startswith(o) for o in only)]
        if not nbs:
            raise ReportError(f"no notebook in {d} matches --only {only}; the notebooks are "
                              f"{[p.stem for p in every]} (pass a number such as 01 or a name prefix)")
        return nbs
    return every


def execute_notebook(nb: Path, out: Path, parameters: dict[str, Any], kernel: str = "python3",
                     timeout: int | None = None) -> None:
    """Run one notebook with papermill into ``out``; a failure raises :class:`ReportError` naming the cell."""
    # imported here: papermill takes ~4 s to import and only the report needs it
    import papermill as pm

    # imported here: papermill takes ~4 s to import and only the report needs it
    from papermill.exceptions import PapermillExecutionError

    out.parent.mkdir(parents=True, exist_ok=True)
    # papermill writes its output as it goes: run into a side file and publish it whole, so ``out`` is always the
    # last complete execution; a failed run is kept beside it for inspection
    partial = out.with_name(f"{out.stem}.partial{out.suffix}")
    try:
        pm.execute_notebook(str(nb), str(partial), parameters=parameters, kernel_name=kernel, cwd=str(nb.parent),
                            progress_bar=False, execution_timeout=timeout)
    except PapermillExecutionError as e:
        failed = out.with_name(f"{out.stem}.failed{out.suffix}")
        os.replace(partial, failed)
        raise ReportError(f"notebook {nb.name} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                          f"the partly executed notebook is {failed}") from None
    os.replace(partial, out)


def _html(executed: Path) -> Path:
    # imported here: nbformat takes ~2 s to import and only the report needs it
    import nbformat

    # imported here: nbconvert takes ~4 s to import and only the report needs it
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(executed), as_version=4))
    html = executed.with_suffix(".html")
    atomic_write_text(html, body)
    return html


def run_report(preset: str, *, out_dir: str | Path | None = None, run_dir: str | Path | None = None,
               seed: int = 0, device: str = "cpu", only: list[str] | None = None,
               notebooks_dir: str | Path | None = None, html: bool = True) -> Path:
    """Execute the notebooks in order for ``preset``; returns the report directory.

    Everything is checked before any folder is made: the preset (a bundled name or a .json path), the notebooks
    (``only`` must match one), and ``out_dir``/``run_dir`` (not a file, not empty). The default folders are
    ``reports/<preset>`` and ``runs/<preset>`` (for a preset given as a path: its ``name``)."""

    p = load_preset(preset)  # a ValueError naming the problem, before anything is written
    if is_preset_path(preset):  # the folders take the preset's name; the notebooks (run in notebooks/) its full path
        folder, nb_param = p.name, str(Path(preset).expanduser().resolve())
    else:
        folder, nb_param = str(preset), str(preset)
    out = check_output_dir(out_dir, "report folder (--out)") or REPO / "reports" / folder
    run = (check_output_dir(run_dir, "run folder (--run-dir)") or REPO / "runs" / folder).resolve()
    nbs = notebook_paths(notebooks_dir, only)
    out.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for nb in nbs:
        t0 = time.perf_counter()
        print(f"[report] {nb.name} (preset {preset}) ...", flush=True)
        executed = out / nb.name
        execute_notebook(nb, executed, {"preset": nb_param, "seed": seed, "device": device, "run_dir": str(run)})
        if html:
            _html(executed)
        timings[nb.stem] = round(time.perf_counter() - t0, 1)
        print(f"[report] {nb.name} done in {timings[nb.stem]} s", flush=True)
    metrics = {}
    for p in sorted((run / "metrics").glob("*.json")):
        if p.stem in timings:
            metrics[p.stem] = json.loads(p.read_text())
    atomic_write_json(out / "metrics.json", {"preset": preset, "seconds": timings, "notebooks": metrics})
    atomic_write_text(out / "summary.md", _summary(preset, timings, metrics))
    return out


def _summary(preset: str, timings: dict[str, float], metrics: dict[str, Any]) -> str:
    lines = [f"# workbench report — preset `{preset}`", "", "| notebook | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in timings.items()]
    for nb, m in metrics.items():
        lines += ["", f"## {nb}", ""]
        for k, v in m.items():
            if isinstance(v, dict):
                lines.append(f"- **{k}**: " + ", ".join(f"{kk} = {_fmt(vv)}" for kk, vv in v.items()))
            else:
                lines.append(f"- **{k}**: {_fmt(v)}")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)
