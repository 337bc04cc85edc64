"""Checks made before any work starts: output directories are writable, settings have the right types."""
from __future__ import annotations

import dataclasses
import numbers
import os
from typing import Any

from crystalflow.common.errors import UserError

#: JSON-like Python types of the plain field annotations of the settings dataclasses
_ANNOTATION_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}
#: how an error message names each type
_TYPE_NAMES: dict[type, str] = {
    int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null",
}
_MAX_SHOWN = 40


def prepare_output_dir(path: str, subdirs: tuple[str, ...] = (), shown: str | None = None) -> None:
    """Create ``path`` (and ``subdirs``) and check it is writable, or :class:`UserError`.

    ``shown`` is the directory the message names (default ``path``; e.g. the final directory when
    ``path`` is its temporary sibling).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"output directory {shown or path!r} exists and is not a directory")
    try:
        for d in (path, *[os.path.join(path, s) for s in subdirs]):
            os.makedirs(d, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise UserError(f"cannot write to output directory {shown or path!r}: {exc.strerror or exc}") from None


def _allowed_types(annotation: Any) -> tuple[type, ...] | None:
    """The types a field annotated ``annotation`` accepts (``"float | None"``, ``int``); None if not plain."""
    if isinstance(annotation, type):
        names = [annotation.__name__]
    elif isinstance(annotation, str):
        names = [part.strip() for part in annotation.split("|")]
    else:
        return None
    if not all(name in _ANNOTATION_TYPES for name in names):
        return None
    return tuple(_ANNOTATION_TYPES[name] for name in names)


def _fits(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):  # JSON true/false is not a number, nor a number true/false
        return kind is bool and isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, kind)


def check_field_types(cls: type, values: dict) -> None:
    """TypeError naming the first entry of ``values`` that does not fit the type of the dataclass field.

    Fields annotated with a plain type (``int``, ``float``, ``bool``, ``str``, optionally ``| None``)
    are checked; an integer is a valid float. Other fields and unknown keys are left to the caller.
    """
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        allowed = _allowed_types(f.type)
        value = values[f.name]
        if allowed is None or any(_fits(value, kind) for kind in allowed):
            continue
        shown = repr(value)
        if len(shown) > _MAX_SHOWN:
            shown = shown[: _MAX_SHOWN - 3] + "..."
        expected = " or ".join(_TYPE_NAMES[kind] for kind in allowed)
        raise TypeError(f"{f.name} must be {expected}, got {shown} ({type(value).__name__})")
