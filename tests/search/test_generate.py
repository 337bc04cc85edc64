"""Random Z' = 1 crystals: the requested space group, no overlap beyond the tolerance, the target volume,
determinism and rigid copies of the input molecule."""
from __future__ import annotations

import numpy as np
import pytest
import spglib
from toys import MOL_A, Z_A

from crystalflow.search.generate import (
    MAX_EXPANSION,
    OVERLAP,
    PACKING_RANGE,
    REFERENCE_PACKING,
    GenerationError,
    centrosymmetric,
    generate_crystals,
    molecular_volume,
    random_crystals,
)
from crystalflow.physics.relax import relax_crystal
from crystalflow.search.spacegroups import COMMON_SPACE_GROUPS, inversion_centres
from crystalflow.structure.contacts import max_overlap
from crystalflow.structure.geometry import kabsch
from crystalflow.structure.molecules import centre_of_mass, inversion_partners

# trans-1,2-dichloroethene, planar: centrosymmetric about the C=C midpoint (hand-built, Å)
DCE = np.array([[0.67, 0.0, 0.0], [-0.67, 0.0, 0.0], [1.40, 1.55, 0.0], [-1.40, -1.55, 0.0],
                [1.23, -0.93, 0.0], [-1.23, 0.93, 0.0]])
Z_DCE = np.array([6, 6, 17, 17, 1, 1])


@pytest.mark.parametrize("sg", COMMON_SPACE_GROUPS, ids=lambda g: g.symbol)
def test_crystals_have_the_space_group_and_no_overlap(sg) -> None:
    gen = generate_crystals(MOL_A, Z_A, sg.number, 2, np.random.default_rng(sg.number))
    assert len(gen.crystals) == 2
    for c, expansion in zip(gen.crystals, gen.expansion):
        number, _ = c.space_group()
        if number != sg.number:  # a supergroup: more operators than the requested group
            frac, z = c.cell_atoms()
            assert len(spglib.get_symmetry((c.lattice, frac, z), symprec=0.1)["rotations"]) > sg.z
        assert c.n_molecules == sg.z
        assert max_overlap(c.cluster(), Z_A) <= OVERLAP + 1e-6
        drawn = c.volume / expansion / (sg.z * molecular_volume(Z_A))  # the drawn cell: Z·V_Hofmann·0.70/c
        assert REFERENCE_PACKING / PACKING_RANGE[1] - 1e-9 <= drawn <= REFERENCE_PACKING / PACKING_RANGE[0] + 1e-9
        assert expansion <= MAX_EXPANSION
        for mol in c.molecules():  # rigid copies, mirrored where the group has improper operations
            assert kabsch(MOL_A, mol, allow_reflection=True)[2] < 1e-6


def test_volume_follows_the_molecular_volume_and_is_deterministic() -> None:
    a = generate_crystals(MOL_A, Z_A, "P21/c", 8, np.random.default_rng(1))
    b = random_crystals(MOL_A, Z_A, "P21/c", 8, np.random.default_rng(1))
    for x, y in zip(a.crystals, b):
        assert np.array_equal(x.lattice, y.lattice) and np.array_equal(x.molecule, y.molecule)
    density = np.array([c.density() for c in a.crystals])
    assert np.all(np.diff(density) != 0)  # independent draws
    assert np.all(np.array(a.expansion) <= MAX_EXPANSION)

def test_uniform_expansion_is_the_smallest_without_overlap() -> None:
    gen = generate_crystals(MOL_A, Z_A, "P-1", 6, np.random.default_rng(3), compress_rounds=0)
    tight = 0
    for c in gen.crystals:
        com = centre_of_mass(c.molecule_frac(), Z_A)
        smaller = 0.99 * c.lattice
        shrunk = c.with_pose(lattice=smaller, molecule=com @ smaller + c.molecule - com @ c.lattice)
        if max_overlap(shrunk.cluster(), Z_A) > OVERLAP:
            tight += 1
    assert tight >= 1  # those that had to grow touch at the tolerance


def test_bad_input_is_one_line_value_error() -> None:
    with pytest.raises(GenerationError, match=r"shape \[5, 3\]"):
        random_crystals(MOL_A[:4], Z_A, "P21/c", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not one of the common"):
        random_crystals(MOL_A, Z_A, "P6/mmm", 1, np.random.default_rng(0))
    with pytest.raises(GenerationError, match="Hofmann volume"):
        random_crystals(MOL_A, np.array([6, 6, 8, 7, 2]), "P21/c", 1, np.random.default_rng(0))


def test_inversion_partners_pair_each_atom_with_its_inverted_image() -> None:
    assert inversion_partners(DCE, Z_DCE).tolist() == [1, 0, 3, 2, 5, 4]
    shaken = DCE + np.array([[0.05, 0, 0], [0, 0, 0], [0, 0.1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert inversion_partners(shaken, Z_DCE) is not None  # within the tolerance
    cis = DCE.copy()
    cis[3] = [-1.40, 1.55, 0.0]  # cis isomer: no inversion centre
    assert inversion_partners(cis, Z_DCE) is None
    assert inversion_partners(MOL_A, Z_A) is None
    sym = centrosymmetric(shaken, Z_DCE)
    rel = sym - centre_of_mass(sym, Z_DCE)
    assert np.allclose(rel, -rel[[1, 0, 3, 2, 5, 4]], atol=1e-12)


@pytest.mark.parametrize("symbol", ["P21/c", "P-1", "C2/c", "Pbca"])
def test_inversion_site_puts_the_molecule_on_a_centre_with_half_the_molecules(symbol) -> None:
    sg = next(g for g in COMMON_SPACE_GROUPS if g.symbol == symbol)
    gen = generate_crystals(DCE, Z_DCE, sg, 3, np.random.default_rng(5), site="inversion")
    assert len(gen.crystals) == 3
    centres = inversion_centres(sg)
    for c in gen.crystals:
        com = centre_of_mass(c.molecule_frac(), Z_DCE)
        assert np.min(np.linalg.norm(((centres - com + 0.5) % 1.0 - 0.5) @ c.lattice, axis=1)) < 1e-9
        assert c.n_molecules == sg.z // 2 and len(c.site_ops()) == 2
        assert max_overlap(c.cluster(), Z_DCE) <= OVERLAP + 1e-6
        frac, z = c.cell_atoms()
        assert len(frac) == sg.z // 2 * len(Z_DCE)  # the molecule's own inversion image is not doubled
        number = c.space_group()[0]
        assert number == sg.number or len(spglib.get_symmetry((c.lattice, frac, z), symprec=0.1)["rotations"]) > sg.z


def test_relaxation_keeps_a_molecule_on_its_inversion_centre() -> None:
    c = generate_crystals(DCE, Z_DCE, "P21/c", 1, np.random.default_rng(2), site="inversion").crystals[0]
    r = relax_crystal(c, max_steps=60)
    assert r.energy_after < r.energy_before
    before, after = (centre_of_mass(x.molecule_frac(), Z_DCE) for x in (c, r.crystal))
    assert np.allclose(before, after, atol=1e-6) and len(r.crystal.site_ops()) == 2
    assert r.crystal.space_group()[0] == 14 and r.crystal.n_molecules == 2


def test_inversion_site_needs_a_centrosymmetric_molecule_and_group() -> None:
    with pytest.raises(GenerationError, match="centrosymmetric molecule"):
        generate_crystals(MOL_A, Z_A, "P21/c", 1, np.random.default_rng(0), site="inversion")
    with pytest.raises(GenerationError, match="no inversion centre"):
        generate_crystals(DCE, Z_DCE, "P212121", 1, np.random.default_rng(0), site="inversion")
    with pytest.raises(GenerationError, match="site must be one of"):
        generate_crystals(DCE, Z_DCE, "P21/c", 1, np.random.default_rng(0), site="mirror")
