"""Two crystals compared: OXtalign packing match (RMSD_15, molecules matched) and simulated-PXRD similarity.

Both CIFs are read by :func:`crystalflow.structure.cif.read_cif` (its rejections are the errors here)
and every atom of each unit cell goes to OXtalign as a periodic structure (molecules perceived from
covalent radii, hydrogens left out) and to :func:`crystalflow.structure.pxrd.powder_pattern`. The match
criterion is the one of :mod:`crystalflow.evaluation.matching` (at least ``MIN_MATCHED`` of ``SHELL``
molecules within ``MAX_RMSD`` Å).

Example::

    from crystalflow.evaluation.compare import compare_crystals

    result = compare_crystals("a.cif", "b.cif", pxrd_out="patterns")
    result["rmsd_n"], result["n_matched"], result["pxrd_similarity"]
"""
from __future__ import annotations

import math
import os
from typing import Any

import oxtalign

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import REASONS, RejectError, UserError
from crystalflow.evaluation.matching import MAX_RMSD, MIN_MATCHED, SHELL
from crystalflow.structure.cif import Crystal, read_cif
from crystalflow.structure.elements import formula, symbol
from crystalflow.structure.pxrd import (
    CU_KA,
    DEFAULT_FWHM,
    DEFAULT_SIMILARITY_WIDTH,
    DEFAULT_STEP,
    DEFAULT_TWO_THETA,
    PatternError,
    PowderPattern,
    pattern_similarity,
    plot_patterns,
    powder_pattern,
)

#: files ``compare_crystals`` writes into ``pxrd_out``
PATTERN_FILES = ("pattern_a.csv", "pattern_b.csv", "overlay.png")


def _read(path: str) -> Crystal:
    if not os.path.exists(path):
        raise UserError(f"{path!r}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{path!r} is a directory, not a CIF file")
    try:
        return read_cif(path)
    except RejectError as exc:
        detail = f" ({exc.detail})" if exc.detail else ""
        raise UserError(f"cannot use {path!r}: {REASONS[exc.reason]}{detail}") from None


def _structure(crystal: Crystal, name: str) -> oxtalign.Structure:
    return oxtalign.from_arrays([symbol(int(z)) for z in crystal.z], crystal.frac, cell=crystal.lattice, source=name)


def _pattern(crystal: Crystal, name: str, settings: dict[str, Any]) -> PowderPattern:
    try:
        return powder_pattern(crystal.lattice, crystal.frac, crystal.z, name=name, **settings)
    except ValueError as exc:  # e.g. an element without tabulated form factors, or bad settings
        raise UserError(f"cannot simulate the powder pattern of {crystal.source!r}: {exc}") from None


def compare_crystals(
    path_a: str | os.PathLike, path_b: str | os.PathLike, *, n: int = SHELL,
    width: float = DEFAULT_SIMILARITY_WIDTH, wavelength: float = CU_KA,
    two_theta: tuple[float, float] = DEFAULT_TWO_THETA, step: float = DEFAULT_STEP, fwhm: float = DEFAULT_FWHM,
    pxrd_out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Compare the crystals of two CIF files; :class:`UserError` for a file that cannot be used.

    Returns a JSON-ready dict: ``a``, ``b`` (paths), ``formula_a``, ``formula_b`` (Hill formulas of the
    unit cells), ``n`` (the shell size), ``n_matched`` (molecules overlaid, the central one included),
    ``rmsd_n`` (Å; None when nothing matched), ``status`` (OXtalign's: full, partial, failed),
    ``message`` (OXtalign's reason when it failed), ``matched`` (the criterion), ``pxrd_similarity``
    (de Gelder, in [0, 1]) and ``pxrd`` (the pattern settings). With ``pxrd_out`` the two patterns are
    written there as ``pattern_a.csv``, ``pattern_b.csv`` (two_theta,intensity) and ``overlay.png``,
    listed under ``files``.

    Example::

        r = compare_crystals("candidate_01.cif", "experiment.cif")
        r["n_matched"], r["rmsd_n"], r["pxrd_similarity"]
    """
    path_a, path_b = os.fspath(path_a), os.fspath(path_b)
    a, b = _read(path_a), _read(path_b)
    if pxrd_out is not None:
        prepare_output_dir(os.fspath(pxrd_out))
    name_a, name_b = os.path.basename(path_a), os.path.basename(path_b)
    result = oxtalign.compare(_structure(a, name_a), _structure(b, name_b), n=n)
    n_matched = int(result.n_matched)
    rmsd = float(result.rmsd_n) if n_matched > 0 and math.isfinite(result.rmsd_n) else None
    settings = {"wavelength": wavelength, "two_theta": tuple(two_theta), "step": step, "fwhm": fwhm}
    pa, pb = _pattern(a, f"A: {name_a}", settings), _pattern(b, f"B: {name_b}", settings)
    try:
        similarity = pattern_similarity(pa, pb, width=width)
    except PatternError as exc:
        raise UserError(f"cannot compare the powder patterns: {exc}") from None
    out: dict[str, Any] = {
        "a": path_a, "b": path_b, "formula_a": formula(a.z), "formula_b": formula(b.z),
        "n": n, "n_matched": n_matched, "rmsd_n": rmsd, "status": result.status, "message": result.message,
        "matched": bool(rmsd is not None and n_matched >= MIN_MATCHED and rmsd < MAX_RMSD),
        "pxrd_similarity": similarity,
        "pxrd": {**settings, "two_theta": list(settings["two_theta"]), "width": width, "profile": "gaussian"},
    }
    if pxrd_out is not None:
        files = [os.path.join(os.fspath(pxrd_out), f) for f in PATTERN_FILES]
        pa.write_xy(files[0])
        pb.write_xy(files[1])
        plot_patterns(files[2], [pa, pb], title=f"de Gelder similarity {similarity:.3f} (width {width:g}°)")
        out["files"] = files
    return out
