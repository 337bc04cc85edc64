"""Powder X-ray diffraction: a simulated pattern of a periodic crystal, measured patterns, and their similarity.

A pattern is computed kinematically from every atom of the unit cell (``lattice`` [3, 3] rows in Å,
fractional ``frac`` [N, 3], atomic numbers ``z`` [N]; a :class:`crystalflow.structure.cif.Crystal` or
``SymmetricCrystal.cell_atoms()``):

* every reflection ``hkl`` with ``d ≥ λ / (2 sin θ_max)`` is enumerated (Friedel mates included, so
  multiplicities come out of the sum); reflections at the same 2θ (within :data:`MERGE_TOL` degrees)
  form one stick;
* structure factor ``F(hkl) = Σ_j f_j(s) exp(-B s²) exp(2πi h·x_j)``, ``s = sin θ / λ = 1 / (2d)``, with
  the atomic form factors ``f_j`` of International Tables Vol. C, Table 6.1.1.4 (the IT92 four-Gaussian
  coefficients that gemmi ships and its ``StructureFactorCalculatorX`` uses) and an optional isotropic
  displacement parameter ``B`` (Å²);
* stick intensity ``Σ |F|² · LP`` with the Lorentz–polarisation factor of an unpolarised beam without
  monochromator, ``LP = (1 + cos² 2θ) / (sin² θ cos θ)``; sticks are scaled to a maximum of 100 and
  those below :data:`MIN_STICK` are dropped (systematic absences come out as zero up to rounding);
* a profile: a pseudo-Voigt of full width at half maximum ``fwhm`` (degrees 2θ) and Lorentzian
  fraction ``eta`` (0: Gaussian) on a 2θ grid of step ``step``, scaled to a maximum of 100.

Similarity is de Gelder's weighted cross-correlation (R. de Gelder, R. Wehrens, J. A. Hageman,
J. Comput. Chem. 22, 273 (2001)), see :func:`pattern_similarity`.

Example::

    crystal = read_cif(path)
    pattern = powder_pattern(crystal.lattice, crystal.frac, crystal.z)
    pattern.peaks[0]                  # Peak(two_theta=..., d=..., hkl=(h, k, l), multiplicity=..., intensity=...)
    pattern.write_xy("pattern.csv")   # two_theta,intensity
    pattern_similarity(pattern, read_pattern("measured.xy"))
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import gemmi
import numpy as np

from crystalflow.common.io import atomic_open, atomic_path
from crystalflow.common.vocabulary import DEFAULT_FWHM, DEFAULT_SIMILARITY_WIDTH
from crystalflow.structure.elements import MAX_Z

#: Cu Kα1 wavelength (Å)
CU_KA = 1.5406
#: default 2θ range (degrees)
DEFAULT_TWO_THETA = (5.0, 50.0)
#: default 2θ grid step (degrees)
DEFAULT_STEP = 0.02
#: reflections whose 2θ differ by less than this (degrees) are one stick
MERGE_TOL = 1e-4
#: sticks weaker than this (on the 0-100 scale) are dropped
MIN_STICK = 1e-3
#: profiles are summed over sticks up to this many FWHM outside the 2θ range
_TAIL_FWHM = 5.0
_IT92 = np.array([gemmi.Element(z).it92.get_coefs() if z and gemmi.Element(z).it92 else [math.nan] * 9
                  for z in range(MAX_Z)], dtype=np.float64)  # [MAX_Z, 9]: a1..a4, b1..b4, c; NaN: none tabulated
#: largest atomic number with tabulated form factors
MAX_FORM_FACTOR_Z = int(np.flatnonzero(np.isfinite(_IT92[:, 0])).max())


class PatternError(ValueError):
    """A pattern that cannot be read or compared (a bad file, no intensity, no common 2θ range)."""


@dataclass(frozen=True)
class Peak:
    """One stick of a simulated pattern: all reflections at one 2θ."""

    two_theta: float  #: degrees
    d: float  #: lattice-plane spacing (Å)
    hkl: tuple[int, int, int]  #: one of its reflections (the largest h, then k, then l)
    multiplicity: int  #: reflections at this 2θ (Friedel mates counted)
    intensity: float  #: scaled to a maximum of 100 over the pattern's sticks


@dataclass
class PowderPattern:
    """A powder pattern on a 2θ grid; ``peaks`` are the sticks of a simulated one (empty for a measured one)."""

    two_theta: np.ndarray  #: [m] degrees, increasing
    intensity: np.ndarray  #: [m] scaled to a maximum of 100 (all zero when nothing diffracts in range)
    peaks: list[Peak] = field(default_factory=list)
    wavelength: float = CU_KA  #: Å
    name: str = ""

    def write_xy(self, path: str | os.PathLike) -> None:
        """Write the pattern as two-column CSV with the header ``two_theta,intensity`` (atomically)."""
        with atomic_open(os.fspath(path)) as f:
            f.write("two_theta,intensity\n")
            for t, i in zip(self.two_theta.tolist(), self.intensity.tolist()):
                f.write(f"{t:.4f},{i:.4f}\n")

    def plot(self, path: str | os.PathLike, *others: PowderPattern) -> None:
        """Write a PNG of this pattern, overlaid with ``others`` (each labelled by its ``name``)."""
        plot_patterns(path, [self, *others])


def plot_patterns(path: str | os.PathLike, patterns: list[PowderPattern], title: str = "") -> None:
    """Write a PNG (matplotlib, Agg) overlaying ``patterns``, each labelled by its ``name``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=120)
    for k, p in enumerate(patterns):  # later patterns dashed: identical ones stay visible
        ax.plot(p.two_theta, p.intensity, lw=0.9, ls="-" if k == 0 else (0, (4, 2)), alpha=1.0 if k == 0 else 0.85,
                label=p.name or f"pattern {k + 1}")
    ax.set_xlabel("2θ (degrees)")
    ax.set_ylabel("intensity (max 100)")
    if title:
        ax.set_title(title, fontsize=9)
    if len(patterns) > 1 or patterns[0].name:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(os.fspath(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def form_factors(z: np.ndarray, stol2: np.ndarray) -> np.ndarray:
    """[len(stol2), len(z)] X-ray atomic form factors (IT92) at ``s² = (sin θ / λ)²`` (Å⁻²)."""
    c = _IT92[np.asarray(z, dtype=np.int64)]  # [N, 9]
    s2 = np.asarray(stol2, dtype=np.float64)[:, None, None]
    return (c[None, :, :4] * np.exp(-c[None, :, 4:8] * s2)).sum(-1) + c[None, :, 8]


def reflections(lattice: np.ndarray, d_min: float) -> tuple[np.ndarray, np.ndarray]:
    """Every reflection ``hkl`` (≠ 0) with ``d ≥ d_min``: integer [M, 3] and their d-spacings [M] (Å)."""
    lattice = np.asarray(lattice, dtype=np.float64)
    recip = np.linalg.inv(lattice).T  # rows a*, b*, c*: |h @ recip| = 1 / d
    bound = np.floor(np.linalg.norm(lattice, axis=1) / d_min).astype(int)  # |h| = |g·a| ≤ |a| / d_min
    axes = [np.arange(-m, m + 1) for m in bound]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inv_d = np.linalg.norm(hkl @ recip, axis=1)
    keep = (inv_d > 0) & (inv_d <= 1.0 / d_min)
    return hkl[keep], 1.0 / inv_d[keep]


def structure_factors(hkl: np.ndarray, d: np.ndarray, frac: np.ndarray, z: np.ndarray, b_iso: float = 0.0,
                      chunk: int = 4096) -> np.ndarray:
    """[M] complex X-ray structure factors of reflections ``hkl`` (d-spacings ``d``) of the atoms ``frac``, ``z``."""
    frac = np.asarray(frac, dtype=np.float64)
    zz = np.asarray(z, dtype=np.int64)
    kinds, index = np.unique(zz, return_inverse=True)
    out = np.empty(len(hkl), dtype=np.complex128)
    for s in range(0, len(hkl), chunk):
        h, dd = hkl[s:s + chunk], d[s:s + chunk]
        stol2 = 1.0 / (4.0 * dd**2)
        f = form_factors(kinds, stol2)[:, index] * np.exp(-b_iso * stol2)[:, None]  # [m, N]
        out[s:s + chunk] = (f * np.exp(2j * np.pi * (h @ frac.T))).sum(axis=1)
    return out


def _sticks(hkl: np.ndarray, d: np.ndarray, two_theta: np.ndarray, raw: np.ndarray, mates: int = 1) -> list[tuple]:
    """Group reflections by 2θ: (2θ, d, hkl, multiplicity, summed intensity) per stick, by increasing 2θ;
    each reflection stands for ``mates`` (2: itself and its Friedel mate)."""
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], two_theta))
    t = two_theta[order]
    starts = np.flatnonzero(np.concatenate([[True], np.diff(t) > MERGE_TOL]))
    ends = np.append(starts[1:], len(t))
    sticks = []
    for a, b in zip(starts, ends):
        idx = order[a:b]
        first = idx[np.lexsort((-hkl[idx, 2], -hkl[idx, 1], -hkl[idx, 0]))[0]]
        sticks.append((float(two_theta[idx].mean()), float(d[idx].mean()), tuple(int(v) for v in hkl[first]),
                       mates * int(b - a), float(raw[idx].sum())))
    return sticks


def profile(two_theta: np.ndarray, centres: np.ndarray, heights: np.ndarray, fwhm: float, eta: float = 0.0,
            chunk: int = 512) -> np.ndarray:
    """Sum of pseudo-Voigt peaks (area ∝ ``heights``, FWHM ``fwhm``, Lorentzian fraction ``eta``) on ``two_theta``."""
    x = np.asarray(two_theta, dtype=np.float64)
    out = np.zeros_like(x)
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    gamma = fwhm / 2.0
    for s in range(0, len(centres), chunk):
        dx = x[:, None] - centres[None, s:s + chunk]
        shape = (1.0 - eta) * np.exp(-0.5 * (dx / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
        if eta > 0.0:
            shape = shape + eta * (gamma / math.pi) / (dx**2 + gamma**2)
        out += shape @ heights[s:s + chunk]
    return out


def _scaled(values: np.ndarray) -> np.ndarray:
    top = float(values.max()) if values.size else 0.0
    return values * (100.0 / top) if top > 0.0 else np.zeros_like(values)


def powder_pattern(
    lattice: np.ndarray, frac: np.ndarray, z: np.ndarray, wavelength: float = CU_KA,
    two_theta: tuple[float, float] = DEFAULT_TWO_THETA, step: float = DEFAULT_STEP, fwhm: float = DEFAULT_FWHM,
    b_iso: float = 0.0, eta: float = 0.0, name: str = "",
) -> PowderPattern:
    """The simulated powder pattern of the crystal ``lattice`` (rows, Å), ``frac`` [N, 3], ``z`` [N].

    ``wavelength`` in Å; ``two_theta`` = (low, high) degrees with 0 < low < high < 180; grid ``step`` and
    peak ``fwhm`` in degrees 2θ; ``b_iso``: isotropic displacement parameter B (Å²) of every atom;
    ``eta``: Lorentzian fraction of the pseudo-Voigt profile (0: Gaussian, 1: Lorentzian).

    Example::

        a = 4.0  # a cubic cell with one carbon atom: the 100 reflection at 2θ = 2 asin(λ / 2a)
        p = powder_pattern(np.eye(3) * a, [[0, 0, 0]], [6])
        p.peaks[0].hkl, round(p.peaks[0].two_theta, 3)   # ((1, 0, 0), 22.206)
    """
    lattice = np.asarray(lattice, dtype=np.float64)
    frac = np.asarray(frac, dtype=np.float64).reshape(-1, 3)
    zz = np.asarray(z, dtype=np.int64).reshape(-1)
    low, high = (float(v) for v in two_theta)
    if lattice.shape != (3, 3) or not np.all(np.isfinite(lattice)) or abs(np.linalg.det(lattice)) < 1e-6:
        raise ValueError("lattice must be a finite, non-singular [3, 3] matrix (rows a, b, c in Å)")
    if len(frac) == 0 or len(frac) != len(zz) or not np.all(np.isfinite(frac)):
        raise ValueError(f"need one finite fractional position per atom ({len(frac)} positions, {len(zz)} atoms)")
    if np.any((zz < 1) | (zz > MAX_FORM_FACTOR_Z)):
        raise ValueError(f"atomic numbers must be in 1..{MAX_FORM_FACTOR_Z} (elements with IT92 form factors)")
    if not (0.0 < low < high < 180.0) or not step > 0.0 or not fwhm > 0.0 or not wavelength > 0.0:
        raise ValueError(f"need 0 < low < high < 180 degrees and positive step, fwhm and wavelength "
                         f"(two_theta={two_theta}, step={step}, fwhm={fwhm}, wavelength={wavelength})")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    grid = np.arange(low, high + 0.5 * step, step)
    top = min(high + _TAIL_FWHM * fwhm, 179.0)
    hkl, d = reflections(lattice, wavelength / (2.0 * math.sin(math.radians(top / 2.0))))
    ratio = wavelength / (2.0 * d)
    ok = ratio < 1.0
    hkl, d = hkl[ok], d[ok]
    tt = np.degrees(2.0 * np.arcsin(ratio[ok]))
    inside = tt >= low - _TAIL_FWHM * fwhm
    hkl, d, tt = hkl[inside], d[inside], tt[inside]
    if len(hkl) == 0:
        return PowderPattern(grid, np.zeros_like(grid), [], wavelength, name)
    # Friedel's law |F(-h)| = |F(h)|: compute one of each pair and count it twice
    half = (hkl[:, 0] > 0) | ((hkl[:, 0] == 0) & ((hkl[:, 1] > 0) | ((hkl[:, 1] == 0) & (hkl[:, 2] > 0))))
    hkl, d, tt = hkl[half], d[half], tt[half]
    theta = np.radians(tt / 2.0)
    lp = (1.0 + np.cos(2.0 * theta) ** 2) / (np.sin(theta) ** 2 * np.cos(theta))
    raw = 2.0 * np.abs(structure_factors(hkl, d, frac, zz, b_iso)) ** 2 * lp
    sticks = _sticks(hkl, d, tt, raw, mates=2)
    centres = np.array([s[0] for s in sticks])
    heights = _scaled(np.array([s[4] for s in sticks]))
    strong = heights >= MIN_STICK
    centres, heights = centres[strong], heights[strong]
    shown = (centres >= low) & (centres <= high)
    peak_heights = _scaled(heights[shown])
    peaks = [Peak(s[0], s[1], s[2], s[3], float(h))
             for s, h in zip([s for s, k in zip(sticks, strong) if k and low <= s[0] <= high], peak_heights)]
    return PowderPattern(grid, _scaled(profile(grid, centres, heights, fwhm, eta)), peaks, wavelength, name)


# ------------------------------------------------------------------------------------------ measured
_SPLIT = re.compile(r"[\s,;]+")


def read_pattern(path: str | os.PathLike, wavelength: float = CU_KA) -> PowderPattern:
    """A measured pattern from a text file of two or three columns (2θ in degrees, intensity, [error]).

    Columns are separated by whitespace, commas or semicolons; empty lines, lines starting with ``#``,
    ``!``, ``'`` or ``;`` and a leading header line that is not numbers are skipped. Rows are sorted by
    2θ; the intensity is scaled to a maximum of 100. Raises :class:`PatternError` (one line) on a bad file.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise PatternError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PatternError(f"{path}: cannot read as text ({exc})") from None
    rows: list[tuple[float, float]] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text[0] in "#!';":
            continue
        cells = [c for c in _SPLIT.split(text) if c]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if not rows:  # a header line such as "two_theta,intensity"
                continue
            raise PatternError(f"{path}: line {number} is not numbers: {text[:60]!r}") from None
        if len(values) not in (2, 3):
            raise PatternError(f"{path}: line {number} has {len(values)} columns, expected 2 or 3 (2θ, I[, σ])")
        if not all(math.isfinite(v) for v in values[:2]):
            raise PatternError(f"{path}: line {number} has a value that is not a finite number")
        rows.append((values[0], values[1]))
    if len(rows) < 2:
        raise PatternError(f"{path}: fewer than two data rows (2θ, intensity)")
    data = np.array(sorted(rows))
    if np.any(np.diff(data[:, 0]) <= 0.0):
        raise PatternError(f"{path}: repeated 2θ values")
    if not (0.0 < data[0, 0] and data[-1, 0] < 180.0):
        raise PatternError(f"{path}: 2θ values outside (0, 180) degrees: is the first column 2θ?")
    if not data[:, 1].max() > 0.0:
        raise PatternError(f"{path}: no positive intensity")
    return PowderPattern(data[:, 0], _scaled(data[:, 1]), [], wavelength, name)


# ------------------------------------------------------------------------------------------ similarity
def pattern_similarity(a: PowderPattern, b: PowderPattern, width: float = DEFAULT_SIMILARITY_WIDTH,
                       step: float | None = None) -> float:
    """de Gelder's weighted cross-correlation similarity of two patterns, in [0, 1] (1: identical).

    ``S = c_fg / sqrt(c_ff c_gg)`` with ``c_fg = Σ_r w(r) Σ_x f(x) g(x + r)``, the triangular weight
    ``w(r) = max(0, 1 - |r| / width)`` (``width`` = l in degrees 2θ), and f, g the two intensities
    interpolated linearly onto a common grid over the 2θ range both cover, of step ``step`` (default: the
    finer of the two grids). Negative intensities (over-subtracted background) count as zero.
    R. de Gelder, R. Wehrens, J. A. Hageman, J. Comput. Chem. 22, 273 (2001).

    Example: two single-point peaks 0.25° apart, width 1° → ``S = 1 - 0.25 / 1 = 0.75``.
    """
    if not width > 0.0:
        raise ValueError(f"width must be positive, got {width}")
    low = max(float(a.two_theta[0]), float(b.two_theta[0]))
    high = min(float(a.two_theta[-1]), float(b.two_theta[-1]))
    if not high > low:
        raise PatternError(f"the patterns share no 2θ range ({a.two_theta[0]:g}-{a.two_theta[-1]:g} and "
                           f"{b.two_theta[0]:g}-{b.two_theta[-1]:g} degrees)")
    if step is None:
        step = min(float(np.diff(a.two_theta).min()), float(np.diff(b.two_theta).min()))
    n = math.floor((high - low) / step + 1e-9) + 1
    grid = low + step * np.arange(n)
    f = np.clip(np.interp(grid, a.two_theta, a.intensity), 0.0, None)
    g = np.clip(np.interp(grid, b.two_theta, b.intensity), 0.0, None)
    lags = min(math.floor(width / step + 1e-9), n - 1)

    def weighted(u: np.ndarray, v: np.ndarray) -> float:
        total = float(u @ v)
        for k in range(1, lags + 1):
            w = 1.0 - k * step / width
            total += w * (float(u[:-k] @ v[k:]) + float(u[k:] @ v[:-k]))
        return total

    cff, cgg = weighted(f, f), weighted(g, g)
    if not (cff > 0.0 and cgg > 0.0):
        which = " and ".join(p.name or k for p, k, c in ((a, "a", cff), (b, "b", cgg)) if not c > 0.0)
        raise PatternError(f"no intensity in the common 2θ range {low:g}-{high:g} degrees: {which}")
    return float(min(1.0, max(0.0, weighted(f, g) / math.sqrt(cff * cgg))))
