"""Reference predictors that need no training, written as a PRED_DIR for ``evaluate``.

- ``identity``: the prediction is the input x_w (K = 1); how good "doing nothing" is.
- ``packmol``: PackMol (Martínez et al. 2009; Debian package ``packmol``) packs 17 rigid copies of the
  true conformer (x_s's central molecule, as the CrystalFlow successors do) at random into a sphere
  sized for the crystal's density, keeping every intermolecular atom pair ≥ ``PACKMOL_TOLERANCE`` Å
  apart. The copy nearest the sphere centre becomes molecule 0 (the central molecule), the others
  follow by distance. A cluster PackMol cannot pack (timeout, error) is written with a NaN
  prediction and ``meta['failure']``; a packing that did not fully converge is kept and flagged
  with ``meta['packmol_converged'] = False``.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from crystalflow.common.errors import UserError
from crystalflow.common.version import __version__
from crystalflow.common.vocabulary import BASELINES
from crystalflow.data.dataset import ClusterDataset
from crystalflow.evaluation.predictions import PredictionWriter
from crystalflow.structure.elements import ATOMIC_MASS, symbol

#: PackMol's minimum distance (Å) between atoms of different molecules
PACKMOL_TOLERANCE = 2.0
#: crystal density (g/cm³) assumed when a cluster's meta has none (typical of organic crystals)
FALLBACK_DENSITY = 1.2
#: Å³ per (u per g/cm³): V[Å³] = mass[u] / density[g/cm³] × this (1 u = 1.66054e-24 g, 1 cm³ = 1e24 Å³)
A3_PER_U_PER_G_CM3 = 1.66053907
#: the density sphere holds the molecules' nuclei, not their van der Waals shells, and random
#: rigid copies at PACKMOL_TOLERANCE pack less well than a crystal; at scale 1.0 PackMol converges on
#: about half of the COD clusters within PACKMOL_NLOOP, at 1.15 on nearly all (measured on 16 clusters)
PACKMOL_RADIUS_SCALE = 1.15
#: the sphere is at least this much (Å) larger than the molecule's own radius, so a copy always fits
PACKMOL_MIN_MARGIN = 1.0
#: PackMol GENCAN loops per molecule type: a few seconds for ~50-atom molecules
PACKMOL_NLOOP = 20
#: wall-clock limit (s) of one PackMol run before the cluster is recorded as failed
PACKMOL_TIMEOUT_S = 60.0
#: PackMol seeds are drawn in 1 .. PACKMOL_MAX_SEED
PACKMOL_MAX_SEED = 2**31 - 2
#: decimals of the coordinates handed to PackMol
XYZ_DECIMALS = 6


@dataclass
class PackResult:
    """One PackMol packing: positions [M, n, 3] (or None), whether it converged, failure reason."""

    x: np.ndarray | None
    converged: bool
    failure: str = ""


def packmol_path() -> str:
    """Path of the ``packmol`` executable; :class:`UserError` when it is not installed."""
    path = shutil.which("packmol")
    if path is None:
        raise UserError("the packmol baseline needs the 'packmol' program on PATH (Debian/Ubuntu: apt install packmol)")
    return path


def sphere_radius(z: np.ndarray, mol: np.ndarray, n_copies: int, density: float | None) -> float:
    """Radius (Å) of the sphere for ``n_copies`` molecules at ``density`` g/cm³ (fallback when None/invalid).

    ``R = PACKMOL_RADIUS_SCALE * (3 V / 4π)^(1/3)`` with ``V = n_copies * mass / density``, but at
    least the molecule's largest atom distance from its centroid plus ``PACKMOL_MIN_MARGIN``.
    """
    rho = density if density is not None and math.isfinite(density) and density > 0 else FALLBACK_DENSITY
    volume = n_copies * float(ATOMIC_MASS[np.asarray(z, dtype=np.int64)].sum()) / rho * A3_PER_U_PER_G_CM3
    r_density = PACKMOL_RADIUS_SCALE * (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)
    r_mol = float(np.linalg.norm(mol - mol.mean(0), axis=1).max())
    return max(r_density, r_mol + PACKMOL_MIN_MARGIN)


def _xyz_text(x: np.ndarray, z: np.ndarray, comment: str) -> str:
    lines = [str(len(z)), comment]
    lines += [f"{symbol(int(zi))} " + " ".join(f"{v:.{XYZ_DECIMALS}f}" for v in p) for zi, p in zip(z, x)]
    return "\n".join(lines) + "\n"


def _read_packmol_xyz(path: str, n_copies: int, z: np.ndarray) -> np.ndarray:
    """Positions [n_copies, n, 3] from PackMol's xyz output (copies in order, input atom order)."""
    with open(path) as f:
        lines = f.read().splitlines()
    n = len(z)
    body = [line.split() for line in lines[2 : 2 + n_copies * n]]
    if len(body) != n_copies * n or any(len(b) < 4 for b in body):
        raise ValueError(f"expected {n_copies * n} atoms in {os.path.basename(path)}")
    expected = [symbol(int(zi)).upper() for zi in z] * n_copies
    if [b[0].upper() for b in body] != expected:
        raise ValueError("PackMol changed the atom order")
    return np.array([[float(v) for v in b[1:4]] for b in body]).reshape(n_copies, n, 3)


def pack_molecules(mol: np.ndarray, z: np.ndarray, n_copies: int, radius: float, seed: int,
                   tolerance: float = PACKMOL_TOLERANCE, nloop: int = PACKMOL_NLOOP,
                   timeout: float | None = None) -> PackResult:
    """Pack ``n_copies`` rigid copies of ``mol`` [n, 3] inside a sphere of ``radius`` Å around the origin.

    Copies are ordered by the distance of their centroid from the origin (nearest first). ``timeout``
    defaults to :data:`PACKMOL_TIMEOUT_S`. Returns a :class:`PackResult`; a PackMol failure (timeout,
    error, unreadable output) is its ``failure``, not an exception.
    """
    exe = packmol_path()
    timeout = PACKMOL_TIMEOUT_S if timeout is None else timeout
    z = np.asarray(z, dtype=np.int64)
    centred = np.asarray(mol, dtype=np.float64) - np.asarray(mol, dtype=np.float64).mean(0)
    with tempfile.TemporaryDirectory(prefix="crystalflow-packmol-") as tmp:
        with open(os.path.join(tmp, "molecule.xyz"), "w") as f:
            f.write(_xyz_text(centred, z, "crystalflow molecule"))
        inp = (
            f"tolerance {tolerance:.4f}\nfiletype xyz\noutput packed.xyz\nseed {int(seed)}\nnloop {int(nloop)}\n"
            f"structure molecule.xyz\n  number {int(n_copies)}\n  inside sphere 0. 0. 0. {radius:.4f}\nend structure\n"
        )
        with open(os.path.join(tmp, "input.inp"), "w") as f:
            f.write(inp)
        try:
            with open(os.path.join(tmp, "input.inp")) as stdin:
                proc = subprocess.run([exe], stdin=stdin, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return PackResult(None, False, f"packmol timed out after {timeout:g} s")
        except OSError as e:
            return PackResult(None, False, f"packmol could not run: {e}")
        out = os.path.join(tmp, "packed.xyz")
        converged = "Success!" in proc.stdout
        if not os.path.isfile(out):
            errors = [ln.strip() for ln in proc.stdout.splitlines() if "ERROR" in ln]
            detail = errors[0] if errors else f"exit status {proc.returncode}, no output"
            return PackResult(None, False, f"packmol failed: {detail}")
        try:
            x = _read_packmol_xyz(out, n_copies, z)
        except (ValueError, OSError) as e:
            return PackResult(None, False, f"unreadable packmol output: {e}")
    order = np.argsort(np.linalg.norm(x.mean(axis=1), axis=1), kind="stable")
    return PackResult(x[order], converged)


def _cluster_seed(seed: int, index: int, sample: int) -> int:
    """A fixed PackMol seed in 1 .. PACKMOL_MAX_SEED for (run seed, cluster index, sample)."""
    state = np.random.SeedSequence([int(seed), int(index), int(sample)]).generate_state(1)[0]
    return int(state) % PACKMOL_MAX_SEED + 1


def identity_predict(x_w: np.ndarray, x_s: np.ndarray, z: np.ndarray, meta: dict, samples: int,
                     seed: int) -> tuple[np.ndarray, dict]:
    """The input itself as the single sample, ``[1, M, n, 3]``."""
    return np.asarray(x_w, dtype=np.float32)[None], {}


def packmol_predict(x_w: np.ndarray, x_s: np.ndarray, z: np.ndarray, meta: dict, samples: int,
                    seed: int) -> tuple[np.ndarray, dict]:
    """``samples`` PackMol packings ``[K, M, n, 3]`` centred on x_w's centroid, and meta additions.

    A failed sample is NaN; if every sample failed, ``meta['failure']`` gives the first reason.
    """
    m = x_s.shape[0]
    mol = np.asarray(x_s[0], dtype=np.float64)
    density = meta.get("density")
    radius = sphere_radius(z, mol, m, float(density) if density not in (None, "") else None)
    centre = np.asarray(x_w, dtype=np.float64).reshape(-1, 3).mean(0)
    out = np.full((samples, *x_s.shape), np.nan, dtype=np.float32)
    reasons, converged = [], []
    for k in range(samples):
        res = pack_molecules(mol, z, m, radius, _cluster_seed(seed, int(meta.get("index", 0)), k))
        if res.x is None:
            reasons.append(res.failure)
            continue
        out[k] = res.x + centre
        converged.append(res.converged)
    extra: dict = {"packmol_radius": round(radius, 4), "packmol_converged": bool(converged) and all(converged)}
    if not converged:
        extra["failure"] = reasons[0]
    return out, extra


_PREDICTORS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
    "identity": identity_predict, "packmol": packmol_predict,
}


def run_baseline(name: str, dataset_dir: str, split: str, pred_dir: str, samples: int = 1, seed: int = 0,
                 progress: bool = True, overwrite: bool = False, limit: int | None = None) -> str:
    """Predict every cluster of ``split`` of ``dataset_dir`` with baseline ``name``; write PRED_DIR.

    ``identity`` always has K = 1; ``packmol`` draws ``samples`` packings per cluster with seeds fixed
    by (``seed``, cluster index, sample). ``limit`` keeps the first clusters only. Returns ``pred_dir``.
    """
    if name not in _PREDICTORS:
        raise UserError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    if samples < 1:
        raise UserError(f"samples must be >= 1, got {samples}")
    if name == "packmol":
        packmol_path()
    ds = ClusterDataset(dataset_dir, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise UserError(f"split {split!r} of {dataset_dir!r} has no clusters")
    k = 1 if name == "identity" else samples
    info = {
        "method": f"baseline:{name}", "model": None, "dataset_dir": os.path.abspath(dataset_dir), "split": split,
        "K": k, "steps": None, "solver": None, "seed": seed, "version": __version__,
    }
    if name == "packmol":
        info["packmol"] = {
            "tolerance": PACKMOL_TOLERANCE, "nloop": PACKMOL_NLOOP, "radius_scale": PACKMOL_RADIUS_SCALE,
            "fallback_density": FALLBACK_DENSITY, "timeout_s": PACKMOL_TIMEOUT_S,
        }
    predict = _PREDICTORS[name]
    start = time.time()
    not_converged = 0
    with PredictionWriter(pred_dir, info, overwrite=overwrite) as writer:
        for i in tqdm(range(n), desc=name, unit="cluster", disable=not progress):
            rec = ds[i]
            pred, extra = predict(rec.x_w, rec.x_s, rec.z, rec.meta, k, seed)
            not_converged += extra.get("packmol_converged") is False and "failure" not in extra
            writer.add({**rec.meta, **extra}, rec.x_w, rec.x_s, rec.z, pred)
        writer.info["seconds"] = round(time.time() - start, 3)
        if name == "packmol":
            writer.info["packmol"]["not_converged"] = int(not_converged)
    return pred_dir
