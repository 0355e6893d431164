"""Plain values (YAML, ``--set`` text, a dict) checked against a config dataclass's fields.

Every config takes its values through here: a study's ``train:``/``data:`` blocks, ``--set``
pairs, ``TrainConfig.from_dict``, ``DataConfig.from_dict`` and ``mvlab train --set``, so a value
one of them accepts the others accept too. Values are hand-written: ``lr: 2e-3`` is a string to
YAML 1.1, ``branch: on`` is a bool. ``coerce`` accepts the forms a person means and rejects the
rest with what was expected. Torch-free: configs are read and checked before (and without)
loading the training stack."""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_NUMBER_WITH_SUFFIX = re.compile(r"^\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*([kKMGT]?)\s*$")


def parse_amount(value: Any) -> float:
    """A number, optionally with a k/M/G/T suffix (``5M`` params, ``0.3G`` MACs)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a bool")
    if isinstance(value, (int, float)):
        return float(value)
    match = _NUMBER_WITH_SUFFIX.match(str(value))
    if not match:
        raise ValueError(f"expected a number such as 5M or 0.3G, got {value!r}")
    return float(match[1]) * _SUFFIXES.get(match[2], 1.0)


def closest(word: str, options: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    match = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def describe(tp: Any) -> str:
    """A type annotation as a person would say it."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = describe(args[0]) if args else "values"
        return f"a list of {inner}"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            Path: "a path", dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any) -> Any:
    """``value`` converted to annotation ``tp``; ValueError when it cannot mean that type."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ValueError(f"expected {describe(tp)}, got null")
        # Try the exact kinds first so "3" stays a str in `str | int` and 3 stays an int.
        for arg in sorted(args, key=lambda a: 0 if _exact(value, a) else 1):
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except ValueError:
                continue
        raise ValueError(f"expected {describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError(f"expected {describe(tp)}, got {value!r}{closest(value, map(str, typing.get_args(tp)))}")
    if origin in (list, tuple):
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected {describe(tp)}, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"expected {len(args)} values, got {len(value)}")
            return tuple(coerce(v, a) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        items = [coerce(v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "yes", "no"):
            return value.lower() in ("true", "on", "yes")
        raise ValueError(f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ValueError(f"expected a path, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ValueError(f"expected a mapping, got {value!r}")
    return value


def _exact(value: Any, tp: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, float)
    if tp is str:
        return isinstance(value, str)
    origin = typing.get_origin(tp)
    return origin in (list, tuple) and isinstance(value, (list, tuple))


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's init fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def from_mapping(cls: type, values: dict[str, Any], error: type[Exception], section: str) -> Any:
    """``cls(**values)`` with every value coerced to its field's type. Unknown keys and values
    that cannot mean the field's type raise ``error`` naming ``section.key``."""
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        hint = closest(unknown[0], types_)
        raise error(f"unknown {section} option(s) {', '.join(unknown)}{hint}; known: "
                    f"{', '.join(sorted(types_))}")
    kwargs = {}
    for key, value in values.items():
        try:
            kwargs[key] = coerce(value, types_[key])
        except ValueError as exc:
            raise error(f"{section}.{key}: {exc}") from None
    return cls(**kwargs)


def changed_settings(before: Any, after: Any) -> list[str]:
    """``key.path: old -> new`` for every leaf that differs between two nested settings dicts.

    Both sides are compared as JSON stores them (tuples as lists, other objects as text): one
    side usually comes back from a file, and a tuple read back as a list is no change."""
    return _changed(_as_stored(before), _as_stored(after), "")


def _changed(before: Any, after: Any, prefix: str) -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after)):
            out += _changed(before.get(key), after.get(key), f"{prefix}{key}.")
        return out
    return [] if before == after else [f"{prefix.rstrip('.')}: {before!r} -> {after!r}"]


def _as_stored(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
