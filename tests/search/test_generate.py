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
    generate_crystals,
    molecular_volume,
    random_crystals,
)
from crystalflow.search.spacegroups import COMMON_SPACE_GROUPS
from crystalflow.structure.contacts import max_overlap
from crystalflow.structure.geometry import kabsch
from crystalflow.structure.molecules import centre_of_mass


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
