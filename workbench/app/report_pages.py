"""The report's pages: each executed notebook as an offline HTML page (code hidden, the parameters actually used,
widgets and progress bars as their final text), and one index page that reads like a paper's results section."""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path
from typing import Any

from workbench.core.io import atomic_write_text

__all__ = ["clean_for_reading", "notebook_page", "notebook_digest", "headline_rows", "index_page", "summary_markdown"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("<p><em>Interactive widget: open this notebook in JupyterLab (<code>make lab</code>) to use it; the "
               "cell after it shows what it computes for its starting values.</em></p>")


def _final_text(text: str) -> str:
    """A progress bar's stream as a terminal shows it: on each line, only what follows the last carriage return."""
    lines = text.split("\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in lines)


def _is_plotly_bundle(data: dict) -> bool:
    # plotly's "notebook" renderer writes its whole library (~5 MB) into one output per notebook
    h = data.get("text/html", "")
    h = "".join(h) if isinstance(h, list) else h
    return len(data) == 1 and ("define('plotly'" in h or 'define("plotly"' in h or "plotly.js v" in h[:5000])


def _figure_html(fig: dict, div_id: str | None = None) -> str:
    # imported here: plotly.io takes ~1 s to import and only pages need it
    import plotly.io as pio

    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def clean_for_reading(nb: Any, parameters: dict[str, Any]) -> Any:
    """A copy of an executed notebook for readers: papermill's injected-parameters cell removed and the values used
    shown instead, widget outputs replaced by a note, progress bars reduced to their final line, plotly figures as
    static offline HTML (the page carries plotly.js once)."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            continue
        if "parameters" in tags:  # the cell the reader sees holds the values this run used
            cell.source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = _final_text("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
                outputs.append(out)
                continue
            data = out.get("data")
            if data is None:
                outputs.append(out)
                continue
            if WIDGET_MIME in data:
                out["data"] = {"text/html": WIDGET_NOTE}
            elif PLOTLY_MIME in data:
                out["data"] = {"text/html": _figure_html(data[PLOTLY_MIME])}
            elif _is_plotly_bundle(data):
                continue
            outputs.append(out)
        if "outputs" in cell:
            cell.outputs = outputs
        cells.append(cell)
    used = " · ".join(f"`{k}` = `{v!r}`" for k, v in parameters.items())
    import nbformat

    cells.insert(1 if cells and cells[0].cell_type == "markdown" else 0,
                 nbformat.v4.new_markdown_cell(f"**Run with** {used}"))
    nb.cells = cells
    nb.metadata.pop("widgets", None)  # no widget state: nothing for a widget manager to load
    return nb


def _plotly_js() -> str:
    # imported here: plotly takes ~1 s to import and only pages need it
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def notebook_page(executed: Path, parameters: dict[str, Any], out: Path | None = None) -> Path:
    """The offline HTML page of an executed notebook (code inputs hidden; see :func:`clean_for_reading`)."""
    # imported here: nbformat / nbconvert take ~4 s to import and only the report needs them
    import nbformat
    from nbconvert import HTMLExporter

    nb = clean_for_reading(nbformat.read(str(executed), as_version=4), parameters)
    exporter = HTMLExporter(template_name="workbench_offline", extra_template_basedirs=[str(TEMPLATES)],
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"plotly_js": _plotly_js()})
    out = out or executed.with_suffix(".html")
    atomic_write_text(out, body)
    return out


# ---------------------------------------------------------------------------------------------
# The index: what each notebook asked and found
# ---------------------------------------------------------------------------------------------

def _text_of(out: dict) -> str | None:
    if out.get("output_type") == "stream":
        t = out["text"]
        return _final_text("".join(t) if isinstance(t, list) else t).strip() or None
    data = out.get("data", {})
    if "text/markdown" in data:
        return "".join(data["text/markdown"]).strip()
    return None


def _md_to_html(text: str) -> str:
    # a small subset (paragraphs, bullets, **bold**, `code`): the notebooks' own markdown, without a dependency
    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"(?<!\*)\*(?!\s)([^*]+?)\*", r"<em>\1</em>", s)

    blocks = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = para.splitlines()
        if all(re.match(r"\s*[-*] ", ln) for ln in lines if ln.strip()):
            items = [re.sub(r"^\s*[-*] ", "", ln) for ln in lines if ln.strip()]
            blocks.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
        elif para.lstrip().startswith("|"):
            blocks.append(f"<pre>{html.escape(para)}</pre>")
        else:
            blocks.append(f"<p>{inline(' '.join(ln.strip() for ln in lines))}</p>")
    return "\n".join(blocks)


def notebook_digest(executed: Path) -> dict[str, Any]:
    """What the index shows of one executed notebook: title, question, computed reading, key figure and key table
    (cells tagged ``report-key``, else the first figure and the first checked table)."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    title, question = executed.stem, ""
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    if markdown:
        lines = markdown[0].source.strip().splitlines()
        if lines and lines[0].startswith("#"):
            title = lines[0].lstrip("# ").strip()
            lines = lines[1:]
        paras = re.split(r"\n\s*\n", "\n".join(lines).strip())
        question = paras[0] if paras else ""
    reading, figure, table = [], None, None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        outs = cell.get("outputs", [])
        if "report-reading" in tags:
            reading += [t for t in (_text_of(o) for o in outs) if t]
        keyed = "report-key" in tags
        for o in outs:
            data = o.get("data", {})
            if PLOTLY_MIME in data and (figure is None or keyed):
                figure = data[PLOTLY_MIME]
            if "text/html" in data and "<table" in "".join(data["text/html"]) and \
                    (keyed or (table is None and "NBVAL_CHECK_OUTPUT" in cell.source)):
                table = "".join(data["text/html"])
    return {"name": executed.stem, "title": title, "question": question, "reading": reading, "figure": figure,
            "table": table}


def _best_baseline(rows: dict[str, dict]) -> tuple[str, float] | None:
    base = {k: v["mean"] for k, v in rows.items() if k != "original" and not k.startswith("generated")
            and isinstance(v, dict) and "mean" in v}
    if not base:
        return None
    k = max(base, key=base.get)
    return k, float(base[k])


def headline_rows(metrics: dict[str, dict]) -> list[dict[str, Any]]:
    """The run's headline: per system and setting, generated vs originals vs the strongest baseline (test accuracy
    in percent, or the notebook's own measure), read from the notebooks' recorded metrics."""
    rows = []
    m = metrics.get("03_sampling_and_evaluation", {})
    for key, table in m.items():
        if not isinstance(table, dict) or "original" not in table:
            continue
        # the sampler the notebook's verdict reads (DDIM-50), else the first generated row
        gen = "generated (ddim-50)" if "generated (ddim-50)" in table else \
            next((k for k in table if k.startswith("generated")), None)
        best = _best_baseline(table)
        if gen and best:
            rows.append({"system": "p-diff" if key != "seeds" else "p-diff (independent seeds, aligned)",
                         "setting": key, "measure": "test acc %", "generated": table[gen]["mean"],
                         "original": table["original"]["mean"], "strongest baseline": best[0],
                         "baseline": best[1]})
    s = metrics.get("05_conditional_generation", {}).get("summary", {})
    if s:
        rows.append({"system": "Cond P-Diff (text → LoRA)", "setting": "seen tasks", "measure": "test acc %",
                     "generated": s.get("seen_selected_by_train_mean"), "original": s.get("seen_original_mean"),
                     "strongest baseline": "soup", "baseline": s.get("seen_soup_mean")})
    s = metrics.get("06_style_interpolation", {}).get("summary", {}).get("style_distance", {})
    if s:
        rows.append({"system": "Cond P-Diff (style image → LoRA)", "setting": "styles",
                     "measure": "style distance (lower is better)", "generated": s.get("generated"),
                     "original": s.get("original"), "strongest baseline": "soup", "baseline": s.get("soup")})
    s = metrics.get("07_dataset_conditioned_generation", {}).get("summary", {})
    if s:
        base = {k: s.get(f"unseen_{k}_mean") for k in ("prototype", "fewshot_probe", "regressor", "retrieval")
                if s.get(f"unseen_{k}_mean") is not None}
        best = max(base, key=base.get) if base else None
        rows.append({"system": "D2NWG", "setting": "held-out datasets", "measure": "test acc %",
                     "generated": s.get("unseen_generated_mean"), "original": s.get("unseen_original_mean"),
                     "strongest baseline": best, "baseline": base.get(best) if best else None})
    s = metrics.get("08_tokenised_generation", {}).get("summary", {})
    if s:
        base = {k: s.get(f"unseen_{k}_mean") for k in ("nearest_code", "regressor", "soup")
                if s.get(f"unseen_{k}_mean") is not None}
        best = max(base, key=base.get) if base else None
        rows.append({"system": "RPG", "setting": "unseen task codes", "measure": "test acc %",
                     "generated": s.get("unseen_generated_mean"), "original": s.get("unseen_trained_mean"),
                     "strongest baseline": best, "baseline": base.get(best) if best else None})
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else ("–" if v is None else str(v))


_COLUMNS = ("system", "setting", "measure", "generated", "original", "strongest baseline", "baseline")

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}td:first-child,
th:first-child{text-align:left}section{border-top:2px solid #ddd;margin-top:2em;padding-top:.5em}
.reading{background:#f7f9fc;border-left:4px solid #5b8def;padding:.4em 1em;white-space:pre-wrap;font-size:.92em}
.meta{color:#666;font-size:.9em}code{background:#f2f2f2;padding:0 .2em}"""


def index_page(out_dir: Path, preset: str, digests: list[dict[str, Any]], timings: dict[str, float],
               metrics: dict[str, dict], parameters: dict[str, Any]) -> Path:
    """``index.html``: the headline table, then per notebook its question, reading, key figure and table, runtime
    and a link to the full page; self-contained (plotly.js embedded once, nothing fetched)."""
    rows = headline_rows(metrics)
    parts = [f"<h1>workbench report · preset <code>{html.escape(preset)}</code></h1>",
             "<p class='meta'>Run with " + ", ".join(f"<code>{html.escape(k)}={html.escape(repr(v))}</code>"
                                                     for k, v in parameters.items())
             + f" · {sum(timings.values()):.0f} s in all</p>"]
    if rows:
        parts.append("<h2>Headline</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in _COLUMNS) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in _COLUMNS)
                               + "</tr>" for r in rows) + "</table>")
    parts.append("<ul>" + "".join(f"<li><a href='#{d['name']}'>{html.escape(d['title'])}</a></li>"
                                  for d in digests) + "</ul>")
    for i, d in enumerate(digests):
        sec = [f"<section id='{d['name']}'><h2>{html.escape(d['title'])}</h2>",
               f"<p class='meta'>{timings.get(d['name'], 0):.0f} s · <a href='{d['name']}.html'>the full notebook</a>"
               f" · <a href='{d['name']}.ipynb'>.ipynb</a></p>", _md_to_html(d["question"])]
        if d["reading"]:
            sec.append("<h3>Reading</h3><div class='reading'>" + html.escape("\n\n".join(d["reading"])) + "</div>")
        if d["figure"] is not None:
            sec.append(_figure_html(d["figure"], div_id=f"fig-{i}"))
        if d["table"]:
            sec.append(d["table"])
        sec.append("</section>")
        parts.append("\n".join(sec))
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>workbench report · "
            f"{html.escape(preset)}</title><style>{_CSS}</style><script type='text/javascript'>{_plotly_js()}"
            "</script></head><body>" + "\n".join(parts) + "</body></html>")
    path = out_dir / "index.html"
    atomic_write_text(path, page)
    return path


def summary_markdown(preset: str, digests: list[dict[str, Any]], timings: dict[str, float],
                     metrics: dict[str, dict]) -> str:
    """The index's content in Markdown (``summary.md``): headline, then per notebook its question and reading."""
    rows = headline_rows(metrics)
    lines = [f"# workbench report — preset `{preset}`", ""]
    if rows:
        lines += ["## Headline", "", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in _COLUMNS) + " |" for r in rows]
    for d in digests:
        lines += ["", f"## {d['title']}", "", f"{timings.get(d['name'], 0):.0f} s · [the full notebook]"
                  f"({d['name']}.html)", "", d["question"]]
        if d["reading"]:
            lines += ["", "**Reading**", ""] + ["    " + ln for r in d["reading"] for ln in r.splitlines()]
    return "\n".join(lines) + "\n"


def metrics_json(preset: str, timings: dict[str, float], metrics: dict[str, dict]) -> str:
    """``metrics.json``'s text."""
    return json.dumps({"preset": preset, "seconds": timings, "notebooks": metrics}, indent=1)
