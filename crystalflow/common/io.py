"""Writing files atomically: a file that exists is whole, never half-written.

Every writer goes through :func:`atomic_path`: the content is written to ``PATH.tmp-<pid>`` (see
:func:`temp_path`), flushed to disk and renamed onto ``PATH``; on any error the temporary file is
removed and ``PATH`` is left as it was. One killed by the system can leave a temporary file behind,
which :func:`is_temp_name` recognises. Text is UTF-8 and written as given (``\\n`` stays ``\\n``).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np

#: what a temporary file adds to the name of the file it becomes
TEMP_MARK = ".tmp-"
_TEMP_NAME = re.compile(re.escape(TEMP_MARK) + r"\d+$")


def temp_path(path: str) -> str:
    """The temporary name ``path`` is written under by this process: ``PATH.tmp-<pid>``."""
    return f"{path}{TEMP_MARK}{os.getpid()}"


def is_temp_name(name: str) -> bool:
    """Whether the file name ``name`` is a temporary file of :func:`atomic_path` (left by a killed writer)."""
    return _TEMP_NAME.search(name) is not None


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """The temporary path to write ``path`` under, for writers that want a file name (HDF5, figures).

    After the block the file is synced to disk and renamed onto ``path``; on an error it is removed.
    """
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO[Any]]:
    """``open(path, mode)`` that replaces ``path`` only when the block finishes without an error.

    ``mode`` is ``"w"`` (UTF-8 text, no newline translation: fit for :mod:`csv`) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    text = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    with atomic_path(path) as tmp, open(tmp, mode, **text) as f:
        yield f


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(text)


def copy_file(src: str, dst: str) -> None:
    """Copy the bytes of ``src`` to ``dst`` atomically."""
    with open(src, "rb") as f, atomic_open(dst, "wb") as g:
        shutil.copyfileobj(f, g)


def json_default(obj: Any) -> Any:
    """JSON encoder fallback: numpy scalars as Python numbers, numpy arrays as lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as JSON (indent 2, NaN and infinities allowed, numpy values converted) and a newline."""
    write_text(path, json.dumps(data, indent=2, default=json_default, allow_nan=True) + "\n")


def write_csv(path: str, rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str] | None = None,
              extrasaction: str = "raise") -> None:
    """Write a CSV file (``csv`` module defaults) with the header ``columns`` atomically.

    ``rows`` are dicts (missing keys become empty cells; keys not in ``columns`` are an error unless
    ``extrasaction="ignore"``) or, with ``columns`` given, sequences in column order. Without
    ``columns`` the header is every key of the dict rows in order of first appearance. ``rows`` may be a
    generator when ``columns`` is given: it is written as it is consumed.
    """
    if columns is None:
        rows = list(rows)
        columns = []
        for row in rows:
            columns += [c for c in row if c not in columns]  # type: ignore[union-attr]
    with atomic_open(path) as f:
        plain = csv.writer(f)
        plain.writerow(columns)
        by_name = csv.DictWriter(f, fieldnames=list(columns), extrasaction=extrasaction)  # type: ignore[arg-type]
        for row in rows:
            if isinstance(row, Mapping):
                by_name.writerow(row)
            else:
                plain.writerow(row)
