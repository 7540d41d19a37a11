"""Checking a plain dict (from JSON) against a config dataclass, from the fields' annotations.

``check_fields(cls, d, what)`` refuses unknown keys, missing required keys and values of the wrong type with one
ValueError that names the key, the value and what is expected; ``build(cls, d, what)`` checks and then constructs
``cls`` (nested config dataclasses built from their dicts the same way). The rules follow JSON: an ``int`` is an
int (not a bool, not a string), a ``float`` is any number (not a bool), a ``bool`` is true/false, a tuple or list is
a JSON list (or a tuple), a ``dict`` is an object, ``X | None`` also accepts null. Annotations it does not know
(``Any``, callables, ...) accept anything, so the check can be added to any config without false alarms.

``JSONConfig`` is the base of every config dataclass saved as JSON (beside weights, in zoos, in presets):
``to_dict()`` is the plain-JSON view (tuples as lists, nested configs as dicts, keys in field order: the files
and fingerprints written from it depend on that order) and ``from_dict(d, what=None)`` is ``build`` with the
class's error name. A subclass names itself in the class statement::

    @dataclass(frozen=True)
    class PDiffConfig(JSONConfig, name="p-diff config", unknown_keys=NAMED_UNKNOWN_KEYS):

``name`` is how errors call the config (default: the class name), ``required`` the keys ``from_dict`` insists on
(default: the fields without a default; a nested config field left out is built from ``{}``), ``unknown_keys`` the
error for unknown top-level keys (a template with ``{what}``, ``{keys}``, ``{valid}``, ``{cls}``; default
:data:`UNKNOWN_KEYS`, or :data:`NAMED_UNKNOWN_KEYS` where an older wording — "unknown p-diff config keys [...]" —
must keep reading the same).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from typing import Any, ClassVar, Self, TypeVar, Union

__all__ = ["offset_seed", "NAMED_UNKNOWN_KEYS", "UNKNOWN_KEYS", "JSONConfig", "build", "check_fields", "check_value", "describe_type",
           "to_json"]

T = TypeVar("T")

#: The error for unknown keys, top level (``of`` empty) or inside a nested config (``of`` = " of <path>").
UNKNOWN_KEYS = "{what}: unknown keys {keys}; valid keys{of} ({cls}): {valid}"
#: The older wording some configs keep at their top level ("unknown p-diff config keys ['depth'] ...").
NAMED_UNKNOWN_KEYS = "unknown {what} keys {keys} ({cls}); valid keys: {valid}"


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def describe_type(tp: Any) -> str:
    """A short human description of an annotation ("an integer", "a list of integers or null")."""
    if tp is type(None):
        return "null"
    if _is_union(tp):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin in (tuple, list) or tp in (tuple, list):
        if args and (len(args) == 2 and args[1] is Ellipsis or origin is list):
            inner = describe_type(args[0])
            return f"a list (each {inner})"
        if args:
            return f"a list of {len(args)} ({', '.join(describe_type(a) for a in args)})"
        return "a list"
    if origin is dict or tp is dict:
        return "an object"
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return f"an object ({tp.__name__} settings)"
    return getattr(tp, "__name__", str(tp))


def _ok(value: Any, tp: Any) -> bool:
    """Does ``value`` (parsed JSON, or the Python value itself) fit the annotation ``tp``?"""
    if tp is Any or tp is object:
        return True
    if tp is type(None):
        return value is None
    if _is_union(tp):
        return any(_ok(value, a) for a in typing.get_args(tp))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return all(_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_ok(v, a) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            return False
        if len(args) == 2:
            return all(_ok(k, args[0]) and _ok(v, args[1]) for k, v in value.items())
        return True
    if origin is typing.Literal:
        return value in args
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (Mapping, tp))
    return True  # an annotation this check does not know: no false alarms


def check_value(value: Any, tp: Any, what: str) -> None:
    """ValueError naming ``what`` if ``value`` does not fit the annotation ``tp``."""
    if not _ok(value, tp):
        raise ValueError(f"{what} = {value!r} is not valid: expected {describe_type(tp)}")


def _at(what: str, path: str) -> str:
    """``what`` (the config, e.g. "zoo config my.json") with the dotted key path inside it, if any."""
    return f"{what}: {path}" if path else what


def check_fields(cls: type, d: Any, what: str, *, path: str = "",
                 required: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Check the dict ``d`` against the dataclass ``cls`` and return a copy of it.

    Unknown keys, missing keys (fields without a default, or ``required``) and values whose type does not match
    the field's annotation raise one ValueError that names ``what`` (the config), the key (dotted, after ``path``
    for a nested config), the value and what is expected."""
    dot = f"{path}." if path else ""
    if not isinstance(d, Mapping):
        raise ValueError(  # noqa: TRY004 — bad input from a JSON file: the configs' one error type
            f"{_at(what, path)} must be a JSON object of {cls.__name__} settings, got {type(d).__name__} {d!r:.80}")
    flds = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(d) - set(flds), key=str)
    if unknown:
        # a config's own wording at the top level (JSONConfig's ``unknown_keys``); nested keys are named by path
        template = UNKNOWN_KEYS if path else getattr(cls, "_unknown_keys", UNKNOWN_KEYS)
        raise ValueError(template.format(what=what, keys=[dot + str(k) for k in unknown], valid=sorted(flds),
                                         of=f" of {path}" if path else "", cls=cls.__name__))
    if required is None:
        required = tuple(n for n, f in flds.items()
                         if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    missing = [dot + k for k in required if k not in d]
    if missing:
        raise ValueError(f"{what}: missing required keys {missing} ({cls.__name__} needs {list(required)})")
    hints = _hints(cls)
    for k, v in d.items():
        check_value(v, hints.get(k, Any), f"{what}: {dot}{k}")
    return dict(d)


def build(cls: type[T], d: Any, what: str, *, path: str = "", required: tuple[str, ...] | None = None) -> T:
    """``cls(**d)`` after :func:`check_fields`; fields that are config dataclasses are built from their dicts the
    same way (their keys named ``path.key``), and one left out that has no default (not ``required``) from ``{}``.
    A ValueError from the class's own checks is prefixed with ``what`` and ``path``."""
    d = check_fields(cls, d, what, path=path, required=required)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints.get(f.name)
        cands = typing.get_args(tp) if _is_union(tp) else (tp,)
        sub = next((c for c in cands if dataclasses.is_dataclass(c)), None)
        if sub is None:
            continue
        if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            d[f.name] = {}  # a nested config without a default: all its own defaults (ZooConfig's data, train)
        if isinstance(d.get(f.name), Mapping):
            d[f.name] = build(sub, d[f.name], what, path=f"{path}.{f.name}" if path else f.name)
    try:
        return cls(**d)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(what) else f"{_at(what, path)}: {msg}") from None


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: config dataclasses as dicts (in field order), tuples as lists."""
    if isinstance(value, JSONConfig):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    return value


class JSONConfig:
    """Base of the config dataclasses saved as JSON: ``to_dict`` / ``from_dict`` from the fields' annotations.

    Settings come as class keywords (see the module docstring): ``name``, ``required``, ``unknown_keys``."""

    _config_name: ClassVar[str | None] = None
    _required: ClassVar[tuple[str, ...] | None] = None
    _unknown_keys: ClassVar[str] = UNKNOWN_KEYS

    def __init_subclass__(cls, *, name: str | None = None, required: tuple[str, ...] | None = None,
                          unknown_keys: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # only what a class states: a subclass of a configured base (LoRAZooConfig of TaskZooConfig) inherits the rest
        if name is not None:
            cls._config_name = name
        if required is not None:
            cls._required = tuple(required)
        if unknown_keys is not None:
            cls._unknown_keys = unknown_keys

    @classmethod
    def config_name(cls) -> str:
        """How errors name this config ("p-diff config"), the class name unless the class says otherwise."""
        return cls._config_name or cls.__name__

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view: every field in order, tuples as lists, nested configs as dicts."""
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Any, what: str | None = None) -> Self:
        """Inverse of :meth:`to_dict`: unknown keys, missing required keys and values of the wrong type (nested
        configs too) are one ValueError naming ``what`` (default: the config's name), the key and the value."""
        return build(cls, d, what or cls.config_name(), required=cls._required)


def offset_seed(config: T, seed: int, *, stride: int = 1) -> T:
    """``config`` (a dataclass with a ``seed`` field) with ``stride * seed`` added to its seed; seed 0 returns the
    config itself, so a run of seed 0 is exactly the preset's."""
    return replace(config, seed=config.seed + stride * seed) if seed else config
