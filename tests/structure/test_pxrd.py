"""Simulated powder patterns (Bragg positions, absences, form factors, profile), measured-pattern files and
de Gelder's similarity on hand-computed cases."""
from __future__ import annotations

import csv
import importlib.util
import math
import re

import gemmi
import numpy as np
import pytest
from conftest import write

from crystalflow.structure.cif import read_cif
from crystalflow.structure.pxrd import (
    CU_KA,
    PatternError,
    PowderPattern,
    form_factors,
    pattern_similarity,
    powder_pattern,
    read_pattern,
)

#: an orthorhombic cell (Å) and one atom in it: every reflection is allowed
A, B, C = 5.0, 6.0, 7.0
ORTHO = np.diag([A, B, C])


def bragg_two_theta(h: int, k: int, l: int) -> float:
    d = 1.0 / math.sqrt((h / A) ** 2 + (k / B) ** 2 + (l / C) ** 2)
    return math.degrees(2.0 * math.asin(CU_KA / (2.0 * d)))


def stick(pattern: PowderPattern, two_theta: float):
    near = [p for p in pattern.peaks if abs(p.two_theta - two_theta) < 1e-6]
    return near[0] if near else None


def test_peaks_at_bragg_angles_of_an_orthorhombic_cell():
    p = powder_pattern(ORTHO, [[0.1, 0.2, 0.3]], [6])
    for hkl, mult in [((1, 0, 0), 2), ((0, 1, 0), 2), ((0, 0, 1), 2), ((1, 1, 0), 4), ((1, 1, 1), 8),
                      ((2, 1, 1), 8)]:
        s = stick(p, bragg_two_theta(*hkl))
        assert s is not None, hkl
        assert s.hkl == hkl and s.multiplicity == mult
        assert s.d == pytest.approx(1.0 / math.sqrt(sum((h / x) ** 2 for h, x in zip(hkl, (A, B, C)))))
    # the first peak: d = 7 Å, 2θ = 2 asin(1.5406 / 14) = 12.6356°
    assert p.peaks[0].hkl == (0, 0, 1) and p.peaks[0].two_theta == pytest.approx(12.6356, abs=1e-4)
    assert max(s.intensity for s in p.peaks) == pytest.approx(100.0)
    # the profile peaks where the sticks are, and is scaled to 100
    assert p.intensity.max() == pytest.approx(100.0)
    assert p.two_theta[0] == pytest.approx(5.0) and p.two_theta[-1] == pytest.approx(50.0)
    assert np.allclose(np.diff(p.two_theta), 0.02)
    top = p.two_theta[np.argmax(p.intensity)]
    strongest = max(p.peaks, key=lambda s: s.intensity)
    assert abs(top - strongest.two_theta) <= 0.011


def test_one_atom_intensities_are_f_squared_times_lp_times_multiplicity():
    p = powder_pattern(ORTHO, [[0.0, 0.0, 0.0]], [6])

    def expected(s):
        theta = math.radians(s.two_theta / 2)
        f = form_factors(np.array([6]), np.array([1.0 / (4 * s.d**2)]))[0, 0]
        return s.multiplicity * f**2 * (1 + math.cos(2 * theta) ** 2) / (math.sin(theta) ** 2 * math.cos(theta))

    ref = np.array([expected(s) for s in p.peaks])
    assert np.allclose([s.intensity for s in p.peaks], 100 * ref / ref.max())


def test_form_factors_are_gemmi_it92():
    stol2 = np.array([0.0, 0.05, 0.2])
    ours = form_factors(np.array([1, 6, 8, 16]), stol2)
    for j, el in enumerate(["H", "C", "O", "S"]):
        assert np.allclose(ours[:, j], [gemmi.Element(el).it92.calculate_sf(s) for s in stol2], rtol=1e-6)
    assert ours[0, 1] == pytest.approx(6.0, abs=0.01)  # f(0) = Z


def test_body_centred_cubic_loses_h_plus_k_plus_l_odd():
    a = 3.0
    bcc = powder_pattern(np.eye(3) * a, [[0, 0, 0], [0.5, 0.5, 0.5]], [26, 26], two_theta=(5, 120))
    # up to 120°: d ≥ 1.5406 / (2 sin 60°) = 0.889 Å, i.e. h² + k² + l² ≤ 11 (d = 3 / sqrt(h² + k² + l²))
    assert [s.hkl for s in bcc.peaks] == [(1, 1, 0), (2, 0, 0), (2, 1, 1), (2, 2, 0), (3, 1, 0)]
    assert [s.multiplicity for s in bcc.peaks] == [12, 6, 24, 12, 24]
    assert all(sum(s.hkl) % 2 == 0 for s in bcc.peaks)
    primitive = powder_pattern(np.eye(3) * a, [[0, 0, 0]], [26], two_theta=(5, 120))
    assert (1, 0, 0) in [s.hkl for s in primitive.peaks] and (1, 1, 1) in [s.hkl for s in primitive.peaks]


def test_isotropic_b_weakens_high_angles():
    cold = powder_pattern(ORTHO, [[0, 0, 0]], [6])
    warm = powder_pattern(ORTHO, [[0, 0, 0]], [6], b_iso=4.0)
    assert warm.peaks[-1].intensity < cold.peaks[-1].intensity
    assert [s.two_theta for s in warm.peaks] == [s.two_theta for s in cold.peaks]


def test_pseudo_voigt_has_the_asked_width():
    for eta in (0.0, 0.5, 1.0):
        p = powder_pattern(np.eye(3) * 4.0, [[0, 0, 0]], [6], two_theta=(19, 25), step=0.001, fwhm=0.2, eta=eta)
        above = p.two_theta[p.intensity >= 50.0]
        assert above[-1] - above[0] == pytest.approx(0.2, abs=0.003)


def test_embedded_crystal_pattern_and_files(embedded_dir, tmp_path):
    c = read_cif(embedded_dir / "2100348-benzene.cif")
    p = powder_pattern(c.lattice, c.frac, c.z, name="benzene")
    assert len(p.peaks) > 20 and all(5 <= s.two_theta <= 50 for s in p.peaks)
    # Pbca: 0kl with k odd, h0l with l odd and hk0 with h odd are absent
    for s in p.peaks:
        h, k, l = s.hkl
        assert not (h == 0 and k % 2) and not (k == 0 and l % 2) and not (l == 0 and h % 2), s
    out = tmp_path / "p.csv"
    p.write_xy(out)
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["two_theta", "intensity"] and len(rows) == len(p.two_theta) + 1
    back = read_pattern(out)
    assert np.allclose(back.two_theta, p.two_theta) and np.allclose(back.intensity, p.intensity, atol=1e-3)
    assert pattern_similarity(p, back) == pytest.approx(1.0, abs=1e-6)
    png = tmp_path / "p.png"
    p.plot(png, back)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="fractional"):
        powder_pattern(ORTHO, np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="lattice"):
        powder_pattern(np.zeros((3, 3)), [[0, 0, 0]], [6])
    with pytest.raises(ValueError, match="atomic numbers"):
        powder_pattern(ORTHO, [[0, 0, 0]], [0])
    with pytest.raises(ValueError, match="low < high"):
        powder_pattern(ORTHO, [[0, 0, 0]], [6], two_theta=(50, 5))


# ------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("text", [
    "# 2theta I\n10.0 1.0\n10.02 5.0\n10.04 2.0\n",
    "two_theta,intensity\n10.0,1.0\n10.02,5.0\n10.04,2.0\n",
    "! xye\n10.0 1.0 0.1\n10.02 5.0 0.2\n\n10.04\t2.0\t0.1\n",
    "10.04;2.0\n10.0;1.0\n10.02;5.0\n",
], ids=["whitespace", "csv-header", "xye", "unsorted-semicolons"])
def test_read_pattern_formats(tmp_path, text):
    p = read_pattern(write(tmp_path / "m.xy", text))
    assert np.allclose(p.two_theta, [10.0, 10.02, 10.04])
    assert np.allclose(p.intensity, [20.0, 100.0, 40.0]) and p.peaks == []


@pytest.mark.parametrize("text, message", [
    ("", "fewer than two"),
    ("10 1\n11 2 3 4\n", "4 columns"),
    ("10 1\nabc def\n", "line 2 is not numbers"),
    ("10 1\n10 2\n", "repeated"),
    ("10 0\n11 0\n", "no positive intensity"),
    ("200 1\n300 2\n", "outside (0, 180)"),
    ("10 nan\n11 1\n", "finite"),
], ids=["empty", "columns", "text", "repeated", "zero", "range", "nan"])
def test_read_pattern_bad_files(tmp_path, text, message):
    with pytest.raises(PatternError, match=re.escape(message)) as info:
        read_pattern(write(tmp_path / "bad.xy", text))
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_read_pattern_missing_and_binary(tmp_path):
    with pytest.raises(PatternError, match="no such file"):
        read_pattern(tmp_path / "missing.xy")
    with pytest.raises(PatternError, match="cannot read"):
        read_pattern(write(tmp_path / "b.xy", bytes(range(128, 256))))


# ------------------------------------------------------------------------------------------ similarity
def spike(at: float, low: float = 10.0, high: float = 20.0, step: float = 0.01) -> PowderPattern:
    """A pattern that is zero but at one grid point."""
    x = low + step * np.arange(round((high - low) / step) + 1)
    y = np.zeros_like(x)
    y[round((at - low) / step)] = 100.0
    return PowderPattern(x, y)


def test_similarity_identical_is_one():
    p = powder_pattern(ORTHO, [[0.1, 0.2, 0.3]], [6])
    assert pattern_similarity(p, p) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shift, width, expected", [
    # one spike each: c_ff = c_gg = w(0) = 1 and c_fg = w(shift), so S = 1 - |shift| / width
    (0.25, 1.0, 0.75), (0.5, 1.0, 0.5), (0.1, 0.4, 0.75), (0.9, 1.0, 0.1), (-0.3, 2.0, 0.85),
])
def test_similarity_of_shifted_spikes_is_the_triangle(shift, width, expected):
    assert pattern_similarity(spike(15.0), spike(15.0 + shift), width=width) == pytest.approx(expected, abs=1e-9)


def test_similarity_of_two_peak_patterns_by_hand():
    # f: spikes of height 1 at 12 and 13; g: one spike of height 1 at 12.5; width 1, step 0.01
    # c_ff = 1 + 1 + 2 w(1) = 2, c_gg = 1, c_fg = w(0.5) + w(0.5) = 1  ->  S = 1 / sqrt(2)
    f = spike(12.0)
    f.intensity[round((13.0 - 10.0) / 0.01)] = 100.0
    assert pattern_similarity(f, spike(12.5), width=1.0) == pytest.approx(1 / math.sqrt(2), abs=1e-9)


def test_similarity_beyond_the_width_is_zero_and_symmetric():
    assert pattern_similarity(spike(12.0), spike(13.5), width=1.0) == 0.0
    a = powder_pattern(ORTHO, [[0.1, 0.2, 0.3]], [6])
    b = powder_pattern(ORTHO * 1.02, [[0.1, 0.2, 0.3]], [6])
    s = pattern_similarity(a, b)
    assert 0.0 < s < 1.0
    assert pattern_similarity(b, a) == pytest.approx(s, abs=1e-12)
    # a wider triangle forgives the shifts more
    assert pattern_similarity(a, b, width=3.0) > s


def test_similarity_needs_a_common_range_and_intensity():
    with pytest.raises(PatternError, match="share no"):
        pattern_similarity(spike(12.0, 10, 20), spike(32.0, 30, 40))
    empty = PowderPattern(np.linspace(10, 20, 11), np.zeros(11))
    with pytest.raises(PatternError, match="no intensity"):
        pattern_similarity(spike(12.0), empty)


@pytest.mark.skipif(importlib.util.find_spec("pymatgen") is None, reason="pymatgen is not installed (dev extra)")
def test_positions_and_intensities_agree_with_pymatgen(embedded_dir):
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Lattice, Structure

    c = read_cif(embedded_dir / "2100348-benzene.cif")
    ours = powder_pattern(c.lattice, c.frac, c.z)
    pm = XRDCalculator(wavelength=CU_KA).get_pattern(
        Structure(Lattice(c.lattice), [int(z) for z in c.z], c.frac), two_theta_range=(5, 50))
    strong = [(t, i) for t, i in zip(pm.x, pm.y) if i >= 1.0]
    assert strong
    for t, i in strong:
        near = [s for s in ours.peaks if abs(s.two_theta - t) < 1e-3]
        assert near, t
        assert sum(s.intensity for s in near) == pytest.approx(i, abs=3.0)
    assert len([s for s in ours.peaks if s.intensity >= 1.0]) == len(strong)



def test_symmetric_crystal_cell_gives_the_cif_pattern(embedded_dir):
    from crystalflow.data.pipeline import BuildSettings, select
    from crystalflow.structure.crystal import SymmetricCrystal

    c = read_cif(embedded_dir / "2205750.cif")
    molecules, _, _ = select(c, BuildSettings())
    sc = SymmetricCrystal.from_crystal(c, molecules[0])
    frac, z = sc.cell_atoms()
    a, b = powder_pattern(sc.lattice, frac, z), powder_pattern(c.lattice, c.frac, c.z)
    assert pattern_similarity(a, b) == pytest.approx(1.0, abs=1e-9)
