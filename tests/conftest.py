"""Shared fixtures: the embedded COD CIFs, the optional ../shared data, small datasets."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import crystalflow

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
#: a few small, accepted COD crystals (fast to process)
SMALL_COD = [
    "2100348-benzene.cif", "2205750.cif", "2100438-cell-vol.cif", "7105573-no-Z.cif",
    "incorrect-multiplicity-values.cif", "2006609.cif",
]


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    return Path(crystalflow.embedded_cif_dir())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def small_cif_dir(tmp_path: Path, embedded_dir: Path) -> Path:
    d = tmp_path / "cifs"
    d.mkdir()
    for name in SMALL_COD:
        shutil.copy(embedded_dir / name, d / name)
    return d


def write(path: Path, text: str | bytes) -> Path:
    """Write text or bytes to ``path`` and return it."""
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def single_thread():
    """Tiny tensors: one torch thread avoids OpenMP synchronisation costs on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
