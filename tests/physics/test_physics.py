"""crystalflow.physics: pair energy by hand, invariances, gradients, periodic images, rigid relaxations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.physics.energy import COULOMB, EnergySettings, PairTable, cluster_energy, cluster_pairs, crystal_energy
from crystalflow.physics.forcefield import W99, ForceField, ForceFieldError, assign
from crystalflow.physics.relax import relax_cluster, relax_crystal, rotation_matrix
from crystalflow.structure.cif import read_cif
from crystalflow.structure.contacts import is_valid, max_overlap
from crystalflow.structure.crystal import SymmetricCrystal

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def benzene(embedded_dir) -> SymmetricCrystal:
    crystal = read_cif(str(embedded_dir / "2100348-benzene.cif"))
    molecules, _, _ = select(crystal, BuildSettings())
    return SymmetricCrystal.from_crystal(crystal, molecules[0])


def one_atom_ff(a: float, b: float, c: float, q: float) -> ForceField:
    m = lambda v: np.array([[v]])  # noqa: E731
    return ForceField(z=np.array([6]), types=["X"], charges=np.array([q]), A=m(a), B=m(b), C=m(c), sites=np.eye(1))


def test_two_atoms_match_the_hand_computed_exp6_and_coulomb() -> None:
    a, b, c = W99["C3"]
    q, r, s = 0.3, 3.7, EnergySettings()
    x = np.array([[[0.0, 0.0, 0.0]], [[r, 0.0, 0.0]]])
    e = float(cluster_energy(x, one_atom_ff(a, b, c, q), s))
    rc, al = s.cutoff, s.alpha
    dsf = (math.erfc(al * r) / r - math.erfc(al * rc) / rc
           + (math.erfc(al * rc) / rc**2 + 2 * al / math.sqrt(math.pi) * math.exp(-(al * rc) ** 2) / rc) * (r - rc))
    expected = a * math.exp(-b * r) - c / r**6 + COULOMB * q * q * dsf
    assert e == pytest.approx(expected, rel=1e-10)
    far = np.array([[[0.0, 0.0, 0.0]], [[rc + 0.1, 0.0, 0.0]]])
    assert float(cluster_energy(far, one_atom_ff(a, b, c, q), s)) == 0.0


def test_short_range_wall_is_repulsive_where_exp6_turns_over() -> None:
    table = PairTable(one_atom_ff(*W99["H1"], 0.0))
    r = torch.linspace(0.05, 2.5, 200, dtype=torch.float64)
    e = table.energy(r[:, None, None])[:, 0, 0]
    assert bool((e[1:] < e[:-1]).all())  # strictly decreasing with distance: no catastrophe


def test_cluster_energy_is_invariant_under_a_rigid_motion(benzene) -> None:
    x = benzene.cluster()
    ff = assign(benzene.z, benzene.molecule)
    R = rotation_matrix(torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64)).numpy()
    moved = x @ R.T + np.array([3.0, -2.0, 10.0])
    assert float(cluster_energy(moved, ff)) == pytest.approx(float(cluster_energy(x, ff)), abs=1e-8)


def test_gradient_matches_finite_differences(benzene) -> None:
    ff = assign(benzene.z, benzene.molecule)
    table = PairTable(ff)
    x = torch.as_tensor(benzene.cluster()[:4].copy())
    x[1] -= 0.3 * (x[1].mean(0) - x[0].mean(0)) / (x[1].mean(0) - x[0].mean(0)).norm()  # closer contacts
    xg = x.clone().requires_grad_(True)
    cluster_energy(xg, table).backward()
    h = 1e-5
    for m, a, d in [(0, 0, 0), (1, 3, 2), (2, 7, 1), (3, 11, 0)]:
        xp, xm = x.clone(), x.clone()
        xp[m, a, d] += h
        xm[m, a, d] -= h
        fd = (float(cluster_energy(xp, table)) - float(cluster_energy(xm, table))) / (2 * h)
        assert float(xg.grad[m, a, d]) == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_lattice_energy_is_the_same_in_a_supercell_and_with_a_shifted_origin(benzene) -> None:
    ff = assign(benzene.z, benzene.molecule)
    e = crystal_energy(benzene, ff)
    assert -80 < e < -20  # benzene's lattice energy is about −50 kJ/mol
    P = np.diag([1.0, 2.0, 1.0])
    Pi = np.linalg.inv(P)
    W = np.einsum("ij,kjl,ml->kim", Pi.T, benzene.rotations.astype(float), P)  # P⁻ᵀ W Pᵀ
    assert np.allclose(W, np.round(W))
    rots, trans = [], []
    for Wk, wk in zip(W, benzene.translations):
        for t in ([0, 0, 0], [0, 1, 0]):
            rots.append(Wk)
            trans.append(Pi.T @ (wk + np.array(t, float)))
    supercell = SymmetricCrystal(P @ benzene.lattice, np.array(rots), np.array(trans), benzene.molecule, benzene.z)
    assert supercell.n_molecules == 2 * benzene.n_molecules
    assert crystal_energy(supercell, ff) == pytest.approx(e, abs=1e-6)
    s = np.array([0.13, 0.41, -0.27])
    shifted = SymmetricCrystal(benzene.lattice, benzene.rotations,
                               benzene.translations + s - np.einsum("kij,j->ki", benzene.rotations, s),
                               benzene.molecule + s @ benzene.lattice, benzene.z)
    assert crystal_energy(shifted, ff) == pytest.approx(e, abs=1e-6)


def test_relaxed_crystal_keeps_molecules_rigid_and_the_space_group(benzene) -> None:
    res = relax_crystal(benzene, max_steps=60)
    assert res.energy_after <= res.energy_before + 1e-9
    d0 = np.linalg.norm(benzene.molecule[:, None] - benzene.molecule[None], axis=-1)
    for mol in res.crystal.cluster():
        assert np.allclose(np.linalg.norm(mol[:, None] - mol[None], axis=-1), d0, atol=1e-6)
    assert res.crystal.space_group() == benzene.space_group()
    assert abs(res.crystal.volume / benzene.volume - 1) < 0.1


def test_relax_cluster_pushes_overlapping_molecules_apart(benzene) -> None:
    x = benzene.cluster()[:2].copy()
    direction = x[1].mean(0) - x[0].mean(0)
    x[1] -= 0.45 * direction  # far inside each other
    assert not is_valid(x, benzene.z)
    out = relax_cluster(x, benzene.z, restraint=0.5)
    assert is_valid(out.x[0], benzene.z) and max_overlap(out.x[0], benzene.z) < 0.5
    d0 = np.linalg.norm(x[1][:, None] - x[1][None], axis=-1)
    assert np.allclose(np.linalg.norm(out.x[0, 1][:, None] - out.x[0, 1][None], axis=-1), d0, atol=1e-6)
    assert out.energy_after[0] < out.energy_before[0]


def test_neighbour_listed_cluster_energy_equals_the_dense_sum(embedded_dir) -> None:
    crystal = read_cif(str(embedded_dir / "2000334.cif"))  # 52 atoms, 17-molecule cluster
    molecules, _, _ = select(crystal, BuildSettings())
    sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
    rng = np.random.default_rng(0)
    x = sc.cluster() + rng.normal(scale=0.5, size=(17, 1, 3))  # moved molecules, some contacts inside the wall
    table = PairTable(assign(sc.z, sc.molecule))
    grads = []
    for kw in (dict(dense=True), dict(), dict(pairs=cluster_pairs(torch.as_tensor(x), table, margin=1.0))):
        xt = torch.tensor(x, requires_grad=True)
        e = cluster_energy(xt, table, **kw)
        e.backward()
        grads.append((float(e.detach()), xt.grad))
    (e_dense, g_dense), *listed = grads
    for e, g in listed:
        assert e == pytest.approx(e_dense, rel=1e-6)
        assert torch.allclose(g, g_dense, rtol=1e-6, atol=1e-6 * float(g_dense.abs().max()))
    # a list built 1 Å wide stays exact while sites move less than 0.5 Å
    pairs = cluster_pairs(torch.as_tensor(x), table, margin=1.0)
    moved = x + rng.uniform(-0.25, 0.25, size=(17, 1, 3))
    assert float(cluster_energy(moved, table, pairs=pairs)) == pytest.approx(float(cluster_energy(moved, table, dense=True)), rel=1e-6)


def test_assign_falls_back_to_zero_charges_and_says_so() -> None:
    # CH5: five hydrogens on one carbon, which RDKit cannot give bond orders
    dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], float)
    x = np.vstack([[0, 0, 0], 1.09 * dirs])
    ff = assign(np.array([6, 1, 1, 1, 1, 1]), x)
    assert np.all(ff.charges == 0) and any("charges are zero" in n for n in ff.note)
    with pytest.raises(ForceFieldError):
        assign(np.array([6, 1]), np.zeros((3, 3)))


def test_mmff_charges_are_mmff94s_tabulated_values_and_fall_back_to_gasteiger() -> None:
    assert assign(np.array([8, 1, 1]), np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])).charges[0] == \
        pytest.approx(-0.86)  # the default
    # water and ammonia at their usual geometry: MMFF94 charges O -0.86 / H +0.43 and N -1.08 / H +0.36
    # (Halgren, J. Comput. Chem. 17, 490 (1996)); Gasteiger's are much smaller
    water = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])
    ff = assign(np.array([8, 1, 1]), water, charge_model="mmff")
    assert ff.charges == pytest.approx([-0.86, 0.43, 0.43], abs=1e-6) and not ff.note
    assert abs(assign(np.array([8, 1, 1]), water, charge_model="gasteiger").charges[0]) < 0.5
    h = 1.01 * np.array([[0.0, 0.94, -0.34], [0.81, -0.47, -0.34], [-0.81, -0.47, -0.34]])
    ammonia = assign(np.array([7, 1, 1, 1]), np.vstack([[0, 0, 0], h]), charge_model="mmff")
    assert ammonia.charges == pytest.approx([-1.08, 0.36, 0.36, 0.36], abs=1e-6)
    # BH3-NH3 (no MMFF94 type for boron): Gasteiger charges, and the note says so
    bh = 1.21 * np.array([[0.0, 0.94, 0.34], [0.81, -0.47, 0.34], [-0.81, -0.47, 0.34]])
    x = np.vstack([[0, 0, 0], [0, 0, 1.66], bh + [0, 0, 1.66], h])
    borane = assign(np.array([7, 5, 1, 1, 1, 1, 1, 1]), x, charge_model="mmff")
    assert any("Gasteiger charges used" in n for n in borane.note) and np.abs(borane.charges).max() > 0.1
    assert np.allclose(borane.charges, assign(borane.z, x, charge_model="gasteiger").charges)
    with pytest.raises(ForceFieldError, match="unknown charge model"):
        assign(np.array([8, 1, 1]), water, charge_model="esp")


def test_a_minimisation_stepping_into_a_broken_region_keeps_its_last_finite_state() -> None:
    from crystalflow.physics.relax import _lbfgs

    x = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)

    def energy():  # minimum at 2, undefined (NaN) beyond 1: the first line search steps there
        return torch.where(x < 1.0, (x - 2.0) ** 2, torch.full_like(x, float("nan")))

    steps, converged = _lbfgs([x], energy, max_steps=50, gtol=1e-8)
    assert not converged and torch.isfinite(x).all() and float(x.detach()) < 1.0
