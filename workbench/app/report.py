"""The report: execute the numbered notebooks with papermill, export HTML, gather metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from workbench.app.presets import is_preset_path, load_preset
from workbench.app.report_pages import (
    index_page,
    metrics_json,
    notebook_digest,
    notebook_page,
    summary_markdown,
)
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
                     timeout: int | None = None, progress: bool = False) -> None:
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
                            progress_bar=progress, execution_timeout=timeout)
    except PapermillExecutionError as e:
        failed = out.with_name(f"{out.stem}.failed{out.suffix}")
        os.replace(partial, failed)
        raise ReportError(f"notebook {nb.name} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                          f"the partly executed notebook is {failed}") from None
    os.replace(partial, out)


def _estimate(out: Path) -> dict[str, float]:
    """Seconds per notebook of the last report in ``out`` (what the progress line's estimate is based on)."""
    path = out / "metrics.json"
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).get("seconds", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def run_report(preset: str, *, out_dir: str | Path | None = None, run_dir: str | Path | None = None,
               seed: int = 0, device: str = "cpu", only: list[str] | None = None,
               notebooks_dir: str | Path | None = None, html: bool = True, progress: bool = True) -> Path:
    """Execute the notebooks in order for ``preset``; returns the report directory.

    Everything is checked before any folder is made: the preset (a bundled name or a .json path), the notebooks
    (``only`` must match one), and ``out_dir``/``run_dir`` (not a file, not empty). The default folders are
    ``reports/<preset>`` and ``runs/<preset>`` (for a preset given as a path: its ``name``). Writes, per notebook,
    the executed ``.ipynb`` and its offline ``.html`` page, then ``index.html``, ``summary.md`` and
    ``metrics.json``. ``progress``: a line per notebook (elapsed, estimate from the last report) and papermill's
    bar over its cells."""

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
    previous = _estimate(out)
    parameters = {"preset": nb_param, "seed": seed, "device": device, "run_dir": str(run)}
    t_start = time.perf_counter()
    for i, nb in enumerate(nbs, 1):
        t0 = time.perf_counter()
        if progress:
            left = [previous.get(n.stem) for n in nbs[i - 1:]]
            eta = f", about {_clock(sum(left))} left (last report)" if all(v is not None for v in left) else ""
            print(f"[report {_clock(t0 - t_start)}] {i}/{len(nbs)} {nb.name} (preset {preset}){eta} ...", flush=True)
        executed = out / nb.name
        execute_notebook(nb, executed, parameters, progress=progress)
        if html:
            notebook_page(executed, parameters)
        timings[nb.stem] = round(time.perf_counter() - t0, 1)
        if progress:
            print(f"[report {_clock(time.perf_counter() - t_start)}] {nb.name} done in {timings[nb.stem]} s",
                  flush=True)
    metrics = {}
    for p in sorted((run / "metrics").glob("*.json")):
        if p.stem in timings:
            metrics[p.stem] = json.loads(p.read_text())
    digests = [notebook_digest(out / nb.name) for nb in nbs]
    atomic_write_text(out / "metrics.json", metrics_json(preset, timings, metrics))
    atomic_write_text(out / "summary.md", summary_markdown(preset, digests, timings, metrics))
    if html:
        index_page(out, preset, digests, timings, metrics, parameters)
    return out


