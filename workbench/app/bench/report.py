"""``bench report``: the whole report in a fresh temporary run folder, then again with nothing changed."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from workbench.app.report import run_report

__all__ = ["bench_report"]


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bench_report(preset: str, device: str = "cpu") -> dict[str, Any]:
    """Seconds of the first report (fresh run folder) and of the second (everything cached), per notebook, and the
    sizes of the pages it writes."""
    root = Path(tempfile.mkdtemp(prefix="workbench-bench-report-"))
    try:
        out, run = root / "report", root / "run"
        t0 = time.perf_counter()
        run_report(preset, out_dir=out, run_dir=run, device=device)
        first = time.perf_counter() - t0
        seconds = json.loads((out / "metrics.json").read_text())["seconds"]
        t1 = time.perf_counter()
        run_report(preset, out_dir=out, run_dir=run, device=device)
        rerun = time.perf_counter() - t1
        reseconds = json.loads((out / "metrics.json").read_text())["seconds"]
        pages = sorted(out.glob("*.html"))
        widgets = out / "widgets"
        return {"preset": preset, "device": device, "seconds_total": round(first, 1), "seconds": seconds,
                "seconds_rerun": round(rerun, 1), "seconds_rerun_per_notebook": reseconds,
                "index_html_bytes": (out / "index.html").stat().st_size,
                "largest_page_bytes": max(p.stat().st_size for p in pages),
                "largest_page": max(pages, key=lambda p: p.stat().st_size).name,
                "report_bytes": _folder_bytes(out),
                "widgets_checked": len(list(widgets.glob("*.png"))) // 2 if widgets.exists() else None}
    finally:
        shutil.rmtree(root, ignore_errors=True)
