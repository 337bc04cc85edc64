"""The one atomic writer (crystalflow.common.io): whole files or none, JSON and CSV as the package writes them."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from crystalflow.common.io import (
    atomic_open,
    atomic_path,
    copy_file,
    is_temp_name,
    temp_path,
    write_csv,
    write_json,
    write_text,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    write_text(str(path), "old\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(str(path)) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["a.txt"]
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(str(tmp_path / "b.h5")) as tmp:
            Path(tmp).write_bytes(b"x")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["a.txt"]


def test_temporary_names(tmp_path: Path) -> None:
    tmp = temp_path(str(tmp_path / "shard-00000.h5"))
    assert tmp == f"{tmp_path / 'shard-00000.h5'}.tmp-{os.getpid()}"
    assert is_temp_name(os.path.basename(tmp))
    assert not is_temp_name("shard-00000.h5") and not is_temp_name("notes.tmp-x")
    with atomic_open(str(tmp_path / "c.bin"), "wb") as f:
        assert f.name == temp_path(str(tmp_path / "c.bin"))
        f.write(b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(str(tmp_path / "d.txt"), "a"):
            pass


def test_text_is_utf8_without_newline_translation(tmp_path: Path) -> None:
    write_text(str(tmp_path / "t.txt"), "Å\r\nb\n")
    assert (tmp_path / "t.txt").read_bytes() == "Å\r\nb\n".encode()
    copy_file(str(tmp_path / "t.txt"), str(tmp_path / "u.txt"))
    assert (tmp_path / "u.txt").read_bytes() == (tmp_path / "t.txt").read_bytes()


def test_json_allows_nan_and_numpy(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    data = {"a": np.float32(0.5), "b": np.arange(3), "c": math.nan, "d": np.int64(7)}
    write_json(str(path), data)
    text = path.read_text()
    assert text.endswith("}\n") and "NaN" in text and '\n  "a": 0.5' in text
    back = json.loads(text)
    assert back["b"] == [0, 1, 2] and back["d"] == 7 and math.isnan(back["c"])


def test_csv_from_dicts_and_sequences(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_csv(str(path), [{"a": 1, "b": 2}, {"b": 3, "c": "x,y"}])
    assert path.read_bytes() == b'a,b,c\r\n1,2,\r\n,3,"x,y"\r\n'
    write_csv(str(path), iter([(1, 2), (3, 4)]), ["lo", "hi"])
    assert path.read_bytes() == b"lo,hi\r\n1,2\r\n3,4\r\n"
    write_csv(str(path), [{"a": 1, "extra": 2}], ["a"], extrasaction="ignore")
    assert path.read_bytes() == b"a\r\n1\r\n"
    with pytest.raises(ValueError):
        write_csv(str(path), [{"a": 1, "extra": 2}], ["a"])
    assert path.read_bytes() == b"a\r\n1\r\n"
