"""Plotly figures for the notebooks. Every function returns ``(figure, table)``: the table holds the plotted
numbers, rounded, so that nbval can check them and a reader can quote them."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import torch

from workbench.evaluation.memorisation import median, pairwise_distances

__all__ = ["setup_notebook", "accuracy_distribution", "parameter_spread", "zoo_table", "distance_table",
           "pairwise_distance_summary", "loss_curves", "accuracy_histogram", "novelty_plane", "embedding_scatter",
           "trajectory_plot", "interpolation_curves", "image_grid", "style_distance_curves", "task_bars",
           "distance_accuracy", "meta_dataset_counts", "domain_gallery", "support_grid", "method_bars",
           "finetune_curves", "shots_curves", "ablation_bars", "seen_scatter", "head_accuracy_bars", "scale_curves",
           "novelty_bars"]


def setup_notebook() -> None:
    """Figures as plotly's mimetype only (JupyterLab renders it; the report embeds plotly.js once per page, offline)."""
    pio.renderers.default = "plotly_mimetype"
    pio.templates.default = "plotly_white"


def zoo_table(zoos: Mapping[str, "object"], decimals: int = 2) -> pd.DataFrame:
    """One row per zoo: protocol, members, generated parameters, accuracy statistics."""
    rows = [{"key": k, **z.describe()} for k, z in zoos.items()]
    return pd.DataFrame(rows).set_index("key").round(decimals)


def accuracy_distribution(accuracies: Mapping[str, np.ndarray | pd.Series], title: str = "Test accuracy",
                          decimals: int = 2) -> tuple[go.Figure, pd.DataFrame]:
    """Box + points of accuracy per group (zoo or method), and their summary table."""
    fig = go.Figure()
    rows = []
    for name, acc in accuracies.items():
        a = np.asarray(acc, dtype=float)
        fig.add_trace(go.Box(y=a, name=name, boxpoints="all", jitter=0.4, pointpos=0, marker_size=3))
        rows.append({"group": name, "n": len(a), "min": a.min(), "median": float(np.median(a)), "mean": a.mean(),
                     "max": a.max(), "std": a.std(), "distinct": len(np.unique(np.round(a, 4)))})
    fig.update_layout(title=title, yaxis_title="accuracy (%)", showlegend=False, height=420)
    return fig, pd.DataFrame(rows).set_index("group").round(decimals)


def parameter_spread(zoo: "object", decimals: int = 6) -> tuple[go.Figure, pd.DataFrame]:
    """Per-position standard deviation of the generated parameters across members, by tensor."""
    vec = zoo.vectors().double()
    std = vec.std(0, unbiased=False)
    mean_abs = vec.mean(0).abs()
    fig = go.Figure()
    rows = []
    for name, sl in zoo.spec.slices().items():
        s = std[sl].numpy()
        order = np.argsort(s)[::-1]
        fig.add_trace(go.Scatter(x=np.arange(sl.start, sl.stop), y=s[order], mode="lines", name=name))
        rows.append({"tensor": name, "numel": sl.stop - sl.start, "mean_abs_value": float(mean_abs[sl].mean()),
                     "mean_std": float(s.mean()), "max_std": float(s.max()),
                     "relative_spread": float(s.mean() / max(float(mean_abs[sl].mean()), 1e-12))})
    fig.update_layout(title=f"{zoo.config.name}: per-position std across {len(zoo)} members (sorted within tensor)",
                      xaxis_title="position in the flat vector", yaxis_title="std", yaxis_type="log", height=380)
    return fig, pd.DataFrame(rows).set_index("tensor").round(decimals)


def pairwise_distance_summary(vectors: torch.Tensor) -> dict[str, float]:
    """Median and min exact L2 distance between members (float64, no matmul shortcut)."""
    d = pairwise_distances(vectors, vectors)
    iu = torch.triu_indices(len(d), len(d), 1)
    vals = d[iu[0], iu[1]]
    return {"median_l2": median(vals), "min_l2": float(vals.min()), "max_l2": float(vals.max())}


def distance_table(zoos: Mapping[str, "object"], decimals: int = 5) -> pd.DataFrame:
    """Exact pairwise L2 distance summary (median, min, max) for each zoo."""
    rows = {k: pairwise_distance_summary(z.vectors()) for k, z in zoos.items()}
    return pd.DataFrame(rows).T.round(decimals)


def loss_curves(histories: Mapping[str, pd.DataFrame], title: str = "Training loss",
                decimals: int = 4) -> tuple[go.Figure, pd.DataFrame]:
    """Loss against step for several training runs (log scale), and first/last loss per run."""
    fig = go.Figure()
    rows = []
    for name, h in histories.items():
        fig.add_trace(go.Scatter(x=h["step"], y=h["loss"], mode="lines", name=name))
        rows.append({"run": name, "steps": int(h["step"].iloc[-1]), "first_loss": float(h["loss"].iloc[0]),
                     "last_loss": float(h["loss"].iloc[-1]),
                     "mean_last_10pct": float(h["loss"].iloc[-max(1, len(h) // 10):].mean())})
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", yaxis_type="log", height=380)
    return fig, pd.DataFrame(rows).set_index("run").round(decimals)


def accuracy_histogram(accuracies: Mapping[str, np.ndarray], title: str = "Test accuracy",
                       decimals: int = 2) -> tuple[go.Figure, pd.DataFrame]:
    """Overlaid histograms of accuracy per method, with the same summary table as accuracy_distribution."""
    fig = go.Figure()
    for name, acc in accuracies.items():
        fig.add_trace(go.Histogram(x=np.asarray(acc, dtype=float), name=name, opacity=0.6, nbinsx=40))
    fig.update_layout(barmode="overlay", title=title, xaxis_title="accuracy (%)", yaxis_title="models", height=400)
    _, table = accuracy_distribution(accuracies, decimals=decimals)
    return fig, table


def novelty_plane(frame: pd.DataFrame, x: str = "max_iou_to_original", threshold: float | None = None,
                  title: str | None = None, decimals: int = 3) -> tuple[go.Figure, pd.DataFrame]:
    """Accuracy against novelty (max IoU to the nearest original, or L2 to it) for every method's models."""
    fig = go.Figure()
    for method, g in frame.groupby("method", sort=False):
        fig.add_trace(go.Scatter(x=g[x], y=g["accuracy"], mode="markers", name=method, marker_size=5, opacity=0.7))
    if threshold is not None and x == "max_iou_to_original":
        fig.add_vline(x=threshold, line_dash="dash", annotation_text="novelty threshold")
    label = "max IoU of wrong predictions to the nearest original" if x == "max_iou_to_original" \
        else "L2 distance to the nearest original"
    fig.update_layout(title=title or f"Accuracy vs novelty ({'IoU' if 'iou' in x else 'L2'})",
                      xaxis_title=label + " (← more novel)" if "iou" in x else label + " (more novel →)",
                      yaxis_title="test accuracy (%)", height=450)
    table = frame.groupby("method", sort=False).agg(n=("accuracy", "size"), accuracy_mean=("accuracy", "mean"),
                                                    novelty_median=(x, "median"), novelty_min=(x, "min"),
                                                    novelty_max=(x, "max"))
    return fig, table.round(decimals)


def embedding_scatter(frame: pd.DataFrame, title: str, decimals: int = 2) -> tuple[go.Figure, pd.DataFrame]:
    """Scatter of a 2-D embedding coloured by group; the table gives each group's centroid and spread."""
    fig = go.Figure()
    for group, g in frame.groupby("group", sort=False):
        fig.add_trace(go.Scatter(x=g["x"], y=g["y"], mode="markers", name=str(group), marker_size=5, opacity=0.75))
    fig.update_layout(title=title, height=450, xaxis_title="dim 1", yaxis_title="dim 2")
    table = frame.groupby("group", sort=False).agg(n=("x", "size"), x_mean=("x", "mean"), y_mean=("y", "mean"),
                                                   x_std=("x", "std"), y_std=("y", "std"))
    return fig, table.round(decimals)


def trajectory_plot(coords: pd.DataFrame, original_xy: np.ndarray, title: str = "Diffusion trajectories",
                    decimals: int = 3) -> tuple[go.Figure, pd.DataFrame]:
    """Trajectories (columns seed, step, x, y) over the originals' mean ± std band in the same projection."""
    fig = go.Figure()
    mx, my = original_xy.mean(0)
    sx, sy = original_xy.std(0)
    fig.add_shape(type="rect", x0=mx - sx, x1=mx + sx, y0=my - sy, y1=my + sy, fillcolor="lightgrey", opacity=0.4,
                  line_width=0)
    fig.add_trace(go.Scatter(x=original_xy[:, 0], y=original_xy[:, 1], mode="markers", name="originals",
                             marker=dict(size=4, color="grey")))
    rows = []
    for seed, g in coords.groupby("seed"):
        fig.add_trace(go.Scatter(x=g["x"], y=g["y"], mode="lines+markers", name=f"seed {seed}", marker_size=3))
        last = g.iloc[-1]
        rows.append({"seed": seed, "start_dist_to_mean": float(np.hypot(g["x"].iloc[0] - mx, g["y"].iloc[0] - my)),
                     "end_dist_to_mean": float(np.hypot(last["x"] - mx, last["y"] - my)),
                     "ends_inside_1std": bool(abs(last["x"] - mx) <= sx and abs(last["y"] - my) <= sy)})
    fig.update_layout(title=title + " (grey box: originals' mean ± std)", height=450, xaxis_title="PC 1",
                      yaxis_title="PC 2")
    return fig, pd.DataFrame(rows).set_index("seed").round(decimals)


def interpolation_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "Interpolation",
                         decimals: int = 2) -> tuple[go.Figure, pd.DataFrame]:
    """Accuracy along λ for several interpolations (name → (lambdas, accuracies))."""
    fig = go.Figure()
    table = {}
    for name, (lam, acc) in curves.items():
        fig.add_trace(go.Scatter(x=lam, y=acc, mode="lines+markers", name=name))
        table[name] = acc
    fig.update_layout(title=title, xaxis_title="λ", yaxis_title="test accuracy (%)", height=400)
    lam = next(iter(curves.values()))[0]
    return fig, pd.DataFrame(table, index=pd.Index(np.round(lam, 3), name="λ")).round(decimals)


def task_bars(table: pd.DataFrame, columns: Sequence[str], title: str = "Accuracy per task",
              decimals: int = 1) -> tuple[go.Figure, pd.DataFrame]:
    """Grouped bars of several accuracy columns per task (rows of ``table``)."""
    fig = go.Figure([go.Bar(name=c, x=list(table.index), y=table[c]) for c in columns])
    fig.update_layout(barmode="group", title=title, yaxis_title="test accuracy (%)", height=420)
    return fig, table[list(columns)].round(decimals)


def distance_accuracy(frame: pd.DataFrame, title: str = "Distance to the nearest original vs accuracy",
                      decimals: int = 3) -> tuple[go.Figure, pd.DataFrame]:
    """Scatter of L2 distance to the nearest original (x) against test accuracy (y), one trace per task."""
    fig = go.Figure()
    for task, g in frame.groupby("task", sort=False):
        fig.add_trace(go.Scatter(x=g["l2_to_nearest_original"], y=g["accuracy"], mode="markers", name=str(task)))
    fig.update_layout(title=title, xaxis_title="L2 distance to the nearest original of the task",
                      yaxis_title="test accuracy (%)", height=450)
    table = frame.groupby("task", sort=False).agg(n=("accuracy", "size"), l2_median=("l2_to_nearest_original", "median"),
                                                 accuracy_mean=("accuracy", "mean"))
    return fig, table.round(decimals)


def png_data_uri(pixels: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a compressed PNG data URI (what plotly's Image trace shows without its pixels in
    the figure's JSON)."""
    import base64
    import io

    # imported here: PIL takes ~0.3 s to import and only image figures need it
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_grid(images: torch.Tensor, row_labels: Sequence[str], col_labels: Sequence[str], title: str = "",
               gap: int = 2, scale: int = 3) -> go.Figure:
    """A labelled grid of RGB images (R, C, 3, H, W) in [0, 1] as one plotly image."""
    images = torch.as_tensor(images).detach().float().clamp(0, 1)
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"expected images (rows, cols, 3, H, W), got {tuple(images.shape)}")
    r, c, _, h, w = images.shape
    if len(row_labels) != r or len(col_labels) != c:
        raise ValueError(f"{r}×{c} images but {len(row_labels)} row and {len(col_labels)} column labels")
    canvas = np.ones((r * (h + gap) - gap, c * (w + gap) - gap, 3), dtype=np.float32)
    for i in range(r):
        for j in range(c):
            canvas[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = \
                images[i, j].permute(1, 2, 0).numpy()
    canvas = np.kron(canvas, np.ones((scale, scale, 1), dtype=np.float32))  # crisp pixels at a readable size
    # a PNG data URI, not the pixel array: the figure's JSON is ~20× smaller, so galleries keep pages light
    fig = go.Figure(go.Image(source=png_data_uri((canvas * 255).round().astype(np.uint8))))
    fig.update_layout(title=title, height=max(200, r * (h + gap) * scale + 120), width=max(400, c * (w + gap) * scale + 200),
                      margin=dict(l=140, r=20, t=60, b=20))
    fig.update_xaxes(tickvals=[(j * (w + gap) + w / 2) * scale for j in range(c)], ticktext=list(col_labels),
                     side="top", showgrid=False)
    fig.update_yaxes(tickvals=[(i * (h + gap) + h / 2) * scale for i in range(r)], ticktext=list(row_labels),
                     showgrid=False)
    return fig


def style_distance_curves(frame: pd.DataFrame, title: str = "Style distance along the interpolation",
                          decimals: int = 3) -> tuple[go.Figure, pd.DataFrame]:
    """Mean (over content images) distance to both ends along λ, per pair and space (columns of
    ``interpolation_frame``)."""
    mean = frame.groupby(["pair", "space", "lambda"])[["d_first", "d_second"]].mean().reset_index()
    fig = go.Figure()
    for (pair, space), g in mean.groupby(["pair", "space"]):
        a, b = pair.split(" → ")
        dash = "solid" if space == "weight" else "dot"
        fig.add_trace(go.Scatter(x=g["lambda"], y=g["d_first"], mode="lines+markers", line_dash=dash,
                                 name=f"to {a} ({space}, {pair})"))
        fig.add_trace(go.Scatter(x=g["lambda"], y=g["d_second"], mode="lines+markers", line_dash=dash,
                                 name=f"to {b} ({space}, {pair})"))
    fig.update_layout(title=title, xaxis_title="λ", yaxis_title="Gram distance (EfficientNet-Lite0)", height=450)
    table = mean.pivot_table(index="lambda", columns=["pair", "space"], values=["d_first", "d_second"])
    return fig, table.round(decimals)


# -- D2NWG (notebook 07) --------------------------------------------------------------------------------------------
_KIND_ORDER = ("seen", "unseen_combination", "unseen_domain", "unseen_source")


def _kind_label(kind: str) -> str:
    return kind.replace("_", " ")


def meta_dataset_counts(describe: pd.DataFrame, title: str = "The meta-dataset: datasets per kind and source",
                        decimals: int = 1) -> tuple[go.Figure, pd.DataFrame]:
    """Stacked bars of datasets per kind (seen and the three held-out kinds), one colour per source; the table gives
    per kind the datasets, sources, domains, distinct class sets and the trained heads' mean test accuracy
    (``describe``: :meth:`DatasetZoo.describe`)."""
    kinds = [k for k in _KIND_ORDER if k in set(describe["kind"])]
    counts = describe.groupby(["kind", "source"]).size().unstack(fill_value=0).reindex(kinds)
    fig = go.Figure([go.Bar(name=s, x=[_kind_label(k) for k in kinds], y=counts[s]) for s in counts.columns])
    fig.update_layout(barmode="stack", title=title, yaxis_title="datasets", legend_title="source", height=380)
    g = describe.groupby("kind")
    table = pd.DataFrame({"datasets": g.size(), "sources": g["source"].nunique(), "domains": g["domain"].nunique(),
                          "class_sets": g["classes"].apply(lambda c: len({frozenset(x.split("-")) for x in c})),
                          "trained_head_acc_mean": g["test_acc_mean"].mean()}).reindex(kinds)
    return fig, table.round(decimals)


def domain_gallery(grid: torch.Tensor, domains: Sequence[str], col_labels: Sequence[str],
                   seen_domains: Sequence[str] = (), unseen_domains: Sequence[str] = (),
                   descriptions: Mapping[str, str] | None = None,
                   title: str = "The same images under every domain") -> tuple[go.Figure, pd.DataFrame]:
    """The images of one dataset under each domain (``grid``: ``domain_grid(x, domains)``, (D, N, 3, H, W)), rows
    labelled with the domain's role in the meta-dataset; the table lists each domain's role and what it does."""
    def role(d: str) -> str:
        return "seen" if d in seen_domains else "held out (unseen domain)" if d in unseen_domains else "not used"

    fig = image_grid(grid, [f"{d} ({role(d)})" for d in domains], col_labels, title=title)
    table = pd.DataFrame({"domain": list(domains), "role": [role(d) for d in domains],
                          "what it does": [(descriptions or {}).get(d, "") for d in domains]}).set_index("domain")
    return fig, table


def support_grid(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
                 title: str = "Support set") -> go.Figure:
    """A support set's images (N, 3, H, W) in [0, 1]: one row per class (``labels`` in 0..ways-1, in label order),
    its shots along the row; rows are labelled ``label c: class name``. Classes with fewer shots are padded white."""
    images = torch.as_tensor(images).detach().float()
    labels = torch.as_tensor(labels).long()
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) != len(labels):
        raise ValueError(f"expected images (N, 1 or 3, H, W) and N labels, got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    ways = len(class_names)
    per = [images[labels == c] for c in range(ways)]
    shots = max(len(p) for p in per)
    grid = torch.ones(ways, shots, *images.shape[1:])
    for c, p in enumerate(per):
        grid[c, :len(p)] = p
    return image_grid(grid, [f"label {c}: {n}" for c, n in enumerate(class_names)],
                      [f"shot {k + 1}" for k in range(shots)], title=title)


def method_bars(table: pd.DataFrame, methods: Sequence[str], by: str = "kind",
                title: str = "Held-out datasets: test accuracy per method", decimals: int = 1
                ) -> tuple[go.Figure, pd.DataFrame]:
    """Grouped bars of the mean (over datasets) test accuracy of each method, per group of ``by`` (the held-out
    kind) and over all datasets; the table has one row per group and one column per method."""
    groups = [k for k in _KIND_ORDER if k in set(table[by])] + sorted(set(table[by]) - set(_KIND_ORDER))
    means = table.groupby(by)[list(methods)].mean().reindex(groups)
    means.index = [_kind_label(str(k)) for k in means.index]
    means.loc[f"all ({len(table)} datasets)"] = table[list(methods)].mean()
    means.insert(0, "datasets", [int((table[by] == k).sum()) for k in groups] + [len(table)])
    fig = go.Figure([go.Bar(name=m, x=list(means.index), y=means[m]) for m in methods])
    fig.update_layout(barmode="group", title=title, yaxis_title="test accuracy (%)", height=440,
                      legend_title="method")
    return fig, means.round(decimals)


def finetune_curves(curves: pd.DataFrame, title: str = "Fine-tuning from each start (mean over held-out datasets)",
                    steps: Sequence[int] = (0, 1, 5, 25, 100), decimals: int = 1) -> tuple[go.Figure, pd.DataFrame]:
    """Test accuracy against plain SGD steps from each start (``curves``: columns dataset, start, step, test_acc, as
    :func:`~workbench.systems.d2nwg.evaluation.finetune_table` gives them), averaged over datasets. The x axis is
    logarithmic in step + 1 (labelled with the step), so step 0 and the first few steps stay visible; the table
    gives the mean at ``steps`` (those in the curves)."""
    mean = curves.groupby(["start", "step"], sort=False)["test_acc"].mean().reset_index()
    fig = go.Figure()
    for start, g in mean.groupby("start", sort=False):
        fig.add_trace(go.Scatter(x=g["step"] + 1, y=g["test_acc"], mode="lines", name=str(start)))
    ticks = [s for s in (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000) if s <= int(mean["step"].max())]
    n = curves["dataset"].nunique() if "dataset" in curves else 1
    fig.update_layout(title=title, yaxis_title="test accuracy (%)" + (f" (mean of {n} datasets)" if n > 1 else ""),
                      height=420, legend_title="start")
    fig.update_xaxes(type="log", title="SGD steps (log scale of step + 1)", tickvals=[t + 1 for t in ticks],
                     ticktext=[str(t) for t in ticks])
    table = mean.pivot(index="step", columns="start", values="test_acc")
    table = table.loc[[s for s in steps if s in table.index], list(dict.fromkeys(mean["start"]))]
    return fig, table.round(decimals)


def shots_curves(table: pd.DataFrame, title: str = "Held-out accuracy against support shots per class",
                 decimals: int = 1) -> tuple[go.Figure, pd.DataFrame]:
    """Accuracy (columns: methods) against the number of support examples per class (the index)."""
    fig = go.Figure([go.Scatter(x=list(table.index), y=table[c], mode="lines+markers", name=c) for c in table])
    fig.update_layout(title=title, yaxis_title="test accuracy (%) (mean over held-out datasets)", height=400,
                      legend_title="method")
    fig.update_xaxes(title="support examples per class (shots)", tickvals=list(table.index))
    return fig, table.round(decimals)


def ablation_bars(table: pd.DataFrame, reference: str = "full", title: str = "Recipe ablations",
                  decimals: int = 1) -> tuple[go.Figure, pd.DataFrame]:
    """Grouped bars of each accuracy metric (the ``*_mean`` columns) per ablation (rows, ``reference`` = the full
    recipe); the table adds each metric's difference to the reference (``Δ …``, points) and keeps the other columns
    (e.g. the diffusion budget)."""
    metrics = [c for c in table.columns if c.endswith("_mean")]
    fig = go.Figure([go.Bar(name=c, x=list(table.index), y=table[c]) for c in metrics])
    fig.update_layout(barmode="group", title=title, yaxis_title="test accuracy (%)", height=420,
                      legend_title="metric")
    out = table.copy()
    if reference in table.index:
        for c in metrics:
            out[f"Δ {c}"] = table[c] - table.loc[reference, c]
    return fig, out.round(decimals)


def seen_scatter(seen: pd.DataFrame, reference: str = "original_mean",
                 methods: Sequence[str] = ("generated_mean", "selected_by_support", "prototype"),
                 title: str = "Seen datasets: generated heads vs the dataset's own trained heads",
                 decimals: int = 1) -> tuple[go.Figure, pd.DataFrame]:
    """One point per dataset and method: its own trained heads' accuracy (x) against the method's (y), with the
    diagonal (points on it match the trained heads). The table summarises each method over the datasets: mean,
    mean gap to the reference and the share of datasets within 1 point of it or above."""
    fig = go.Figure()
    lo = float(min(seen[reference].min(), *(seen[m].min() for m in methods))) - 2
    hi = float(max(seen[reference].max(), *(seen[m].max() for m in methods))) + 2
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(dash="dash",
                                                                                          color="grey")))
    rows = []
    for m in methods:
        fig.add_trace(go.Scatter(x=seen[reference], y=seen[m], mode="markers", name=m, text=list(seen.index),
                                 hovertemplate="%{text}<br>trained %{x:.1f} %<br>" + m + " %{y:.1f} %"))
        gap = seen[m] - seen[reference]
        rows.append({"method": m, "datasets": len(seen), "mean": float(seen[m].mean()),
                     "reference_mean": float(seen[reference].mean()), "mean_gap": float(gap.mean()),
                     "within_1pt_or_above": float((gap >= -1.0).mean())})
    fig.update_layout(title=title, height=460, xaxis_title=f"{reference}: the dataset's own trained heads (%)",
                      yaxis_title="test accuracy (%)")
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig, pd.DataFrame(rows).set_index("method").round(decimals)


def head_accuracy_bars(table: pd.DataFrame, title: str = "Test accuracy per method",
                       decimals: int = 1) -> tuple[go.Figure, pd.DataFrame]:
    """Bars of each method's mean test accuracy on one dataset (``table``: index methods, columns ``mean``, ``min``,
    ``max``), with whiskers from the worst to the best of its heads."""
    fig = go.Figure(go.Bar(x=list(table.index), y=table["mean"],
                           error_y=dict(type="data", symmetric=False, array=table["max"] - table["mean"],
                                        arrayminus=table["mean"] - table["min"])))
    fig.update_layout(title=title, yaxis_title="test accuracy (%) (whiskers: worst to best head)", height=400)
    return fig, table.round(decimals)


def scale_curves(curve: pd.DataFrame, title: str = "As the generated model grows: peak memory and time per step",
                 decimals: int = 2) -> tuple[go.Figure, pd.DataFrame]:
    """Log-log curves per generator of peak memory (MiB) and seconds per training step against the number of
    generated parameters; a failed point (over the memory budget) is drawn as a cross at the budget's failure. The
    table: one row per size, the two generators side by side ("failed" where a run did not finish)."""
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=2, subplot_titles=("peak resident memory (MiB)", "seconds per training step"))
    colours = {"rpg": "#1f77b4", "pdiff": "#d62728"}
    for g, part in curve.groupby("generator", sort=False):
        ok = part[part["ok"]]
        for col, y in ((1, "peak_rss_mb"), (2, "seconds_per_step")):
            fig.add_trace(go.Scatter(x=ok["params"], y=ok[y], mode="lines+markers", name=g, legendgroup=g,
                                     showlegend=col == 1, line=dict(color=colours.get(g))), row=1, col=col)
        bad = part[~part["ok"]]
        if len(bad):
            fig.add_trace(go.Scatter(x=bad["params"], y=bad["peak_rss_mb"], mode="markers", name=f"{g}: failed",
                                     marker=dict(symbol="x", size=12, color=colours.get(g)), text=bad["error"],
                                     hovertemplate="%{text}"), row=1, col=1)
    fig.update_xaxes(type="log", title="generated parameters")
    fig.update_yaxes(type="log")
    fig.update_layout(title=title, height=420)
    rows = {}
    for _, r in curve.iterrows():
        row = rows.setdefault(int(r["params"]), {})
        for k in ("peak_rss_mb", "seconds_per_step", "seconds_per_model"):
            row[f"{r['generator']} {k}"] = round(float(r[k]), decimals) if r["ok"] and pd.notna(r.get(k)) \
                else "failed"
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "params"
    return fig, table


def novelty_bars(frame: pd.DataFrame, column: str = "l2_to_nearest_aligned_median",
                 title: str = "Distance to the nearest original, both aligned to the reference member",
                 decimals: int = 3) -> tuple[go.Figure, pd.DataFrame]:
    """Bars of each method's median distance to its nearest original in the aligned frame, with the originals'
    distance to their nearest other original as the dashed reference line."""
    ref = float(frame.loc["original", column])
    fig = go.Figure(go.Bar(x=list(frame.index), y=frame[column]))
    fig.add_hline(y=ref, line_dash="dash", annotation_text="originals to their nearest other original")
    fig.update_layout(title=title, height=380, yaxis_title="L2 (aligned frame)")
    return fig, frame.round(decimals)
