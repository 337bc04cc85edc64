"""Shared fixtures: the embedded COD CIFs, the optional ../shared data, small datasets (one built once per session)."""
from __future__ import annotations

import shutil
import stat
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
#: the crystals of ``tiny_dataset``: SMALL_COD and two more small accepted ones (8 crystals)
TINY_CIFS = [*SMALL_COD, "2221562.cif", "2200223-decomposition-temperature.cif"]
TINY_SAMPLES = 2  #: noise draws per crystal in ``tiny_dataset``: 8 x 2 = 16 clusters, 12 of them train
TINY_CLUSTERS = len(TINY_CIFS) * TINY_SAMPLES


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


def build_embedded(names, root: Path, settings=None, **kwargs) -> Path:  # noqa: ANN001 - BuildSettings
    """Copy the embedded COD CIFs ``names`` into ``root/cifs`` and build them into ``root/data``; returns the latter."""
    from crystalflow.data.build import build_dataset

    cifs = root / "cifs"
    cifs.mkdir()
    for name in names:
        shutil.copy(Path(crystalflow.embedded_cif_dir()) / name, cifs / name)
    out = root / "data"
    if settings is not None:
        kwargs["settings"] = settings
    build_dataset(str(cifs), str(out), progress=False, **kwargs)
    return out


def _read_only(root: Path) -> None:
    """Clear the write bits under ``root``, so a test that writes into the shared dataset fails loudly."""
    for path in [*root.rglob("*"), root]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny built dataset for the whole session: TINY_CIFS x TINY_SAMPLES noise draws, built once.

    Read-only: a test that changes a dataset copies it first (``shutil.copytree(tiny_dataset, tmp_path / "ds")``
    and then makes the copy writable, or builds its own)."""
    from crystalflow.data.pipeline import BuildSettings

    root = tmp_path_factory.mktemp("tiny-dataset")
    out = build_embedded(TINY_CIFS, root, BuildSettings(samples_per_crystal=TINY_SAMPLES), workers=1)
    _read_only(out)
    return out
