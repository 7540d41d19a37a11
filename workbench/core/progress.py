"""Progress bars that survive: plain-text tqdm (a widget bar shows "model not found" once its notebook is reopened),
labelled with what is being trained (``with progress_label("mlp_dense"): ...`` prefixes every bar inside)."""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator

from tqdm.std import tqdm as _text_tqdm

__all__ = ["tqdm", "progress_label", "current_label"]

_LABEL: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("workbench_progress_label", default=())


@contextlib.contextmanager
def progress_label(name: str) -> Iterator[None]:
    """Prefix every progress bar opened inside with ``name`` (nested labels join with " · ")."""
    token = _LABEL.set((*_LABEL.get(), str(name)))
    try:
        yield
    finally:
        _LABEL.reset(token)


def current_label() -> str:
    """The active label prefix ("" outside any :func:`progress_label`)."""
    return " · ".join(_LABEL.get())


def _widget_bars() -> bool:
    # WORKBENCH_PROGRESS=widget brings back tqdm's notebook widget (live only: not saved with the notebook)
    return os.environ.get("WORKBENCH_PROGRESS", "text") == "widget"


class tqdm(_text_tqdm):  # noqa: N801 - the drop-in name of tqdm's class
    """tqdm as text (kept when the notebook is saved and reopened), its ``desc`` prefixed with the active label."""

    def __new__(cls, *args, **kwargs):
        if _widget_bars():
            from tqdm.auto import tqdm as auto

            return auto(*args, **_labelled(kwargs))
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        kwargs = _labelled(kwargs)
        kwargs.setdefault("mininterval", 1.0)  # a saved notebook keeps every redraw: few of them
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        super().__init__(*args, **kwargs)


def _labelled(kwargs: dict) -> dict:
    label = current_label()
    if label:
        desc = kwargs.get("desc")
        kwargs = {**kwargs, "desc": f"{label} · {desc}" if desc else label}
    return kwargs
