"""Names that become paths, and output folders, checked before anything is written.

A name from a preset (a zoo key, a generator key) or from the command line (a preset name) becomes a directory
name under a run or report folder; :func:`safe_name` makes sure it cannot be an absolute path, climb out with
``..`` or nest with ``/``. :func:`check_output_dir` makes sure a folder the caller is about to create can be created
(not empty, not a file, no file on its way) *before* any folder is made, so a bad argument leaves nothing behind.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["SAFE_NAME", "check_input_file", "check_output_dir", "safe_name", "seeded_name", "seeded_path"]

#: A name that may become one directory name: starts with a letter or digit, then letters, digits, ``_ . -``.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SAFE_NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit, without '..'"


def safe_name(value: object, what: str, pattern: re.Pattern[str] = SAFE_NAME, rule: str = SAFE_NAME_RULE) -> str:
    """``value`` if it is a string that is safe as one directory name, else a ValueError naming ``what``."""
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} is not a valid name: use {rule} (it becomes a directory name)")
    return value


def check_output_dir(path: str | Path | None, what: str) -> Path | None:
    """``Path(path)`` if a directory can be there (it exists as a directory, or can be created), else ValueError.

    Nothing is created. ``None`` passes through (the caller's default applies); an empty string is an error."""
    if path is None:
        return None
    if not isinstance(path, (str, Path)) or str(path).strip() == "":
        raise ValueError(f"{what} is empty: pass a directory path (or leave the option out for the default)")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a file, not a directory: pass a directory path")
    for parent in p.parents:  # the first existing ancestor must be a directory, or mkdir fails half-way
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file, "
                                 "not a directory")
            break
    return p


def check_input_file(path: str | Path | None, what: str) -> Path:
    """``Path(path)`` if it is an existing file, else a ValueError naming ``what``."""
    if path is None or str(path).strip() == "":
        raise ValueError(f"{what} is empty: pass the path of an existing file")
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{what} {str(path)!r} does not exist: pass the path of an existing file")
    if not p.is_file():
        raise ValueError(f"{what} {str(path)!r} is not a file")
    return p


def seeded_name(name: str, seed: int) -> str:
    """The name of a run of ``seed``: ``name`` itself for seed 0, ``<name>_seed<k>`` otherwise (one convention for
    every zoo, generator and table, so a run of one seed never resumes another's)."""
    return name if seed == 0 else f"{name}_seed{seed}"


def seeded_path(path: str | Path, seed: int) -> Path:
    """``path`` with its last part renamed by :func:`seeded_name`."""
    path = Path(path)
    return path.with_name(seeded_name(path.name, seed))
