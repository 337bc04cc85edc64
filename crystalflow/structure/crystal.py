"""A molecular crystal with Z' = 1 as its symmetry sees it: a lattice, the space group's operators and one
molecule (the asymmetric molecule); every other molecule is an image of it.

This is the form in which crystals are reconstructed from clusters, relaxed (molecules rigid, pose and
cell free) and written as CIF. Operators act on fractional coordinates as column vectors,
``f' = W f + w``; ``W`` is an integer matrix. The operators are those of the space group modulo the
lattice of ``lattice`` (centring translations included when the cell is centred).

Example::

    crystal = read_cif(path)
    molecules, _, _ = select(crystal, BuildSettings())      # crystalflow.data.pipeline
    sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
    sc.molecules().shape        # [Z, n, 3]: the distinct molecules of the cell, Cartesian (Å)
    sc.space_group()            # (14, 'P2_1/c')
    cluster = sc.cluster()      # [17, n, 3]: the molecule and its 16 nearest neighbours
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import spglib

from crystalflow.structure.cif import Crystal
from crystalflow.structure.cluster import N_NEIGHBOURS, nearest_images
from crystalflow.structure.elements import ATOMIC_MASS
from crystalflow.structure.molecules import Molecule, centre_of_mass

#: Å: spglib's position tolerance for operators and the space group
SYMPREC = 0.1
#: Å: two images of the molecule whose centres are closer are the same molecule (a special position)
SAME_MOLECULE = 0.5
#: Avogadro's number × 1e-24 (g/cm³ from amu/Å³)
_AMU_PER_A3_TO_G_PER_CM3 = 1.0 / 0.602214076


@dataclass
class SymmetricCrystal:
    """Lattice + space-group operators + one molecule.

    Example::

        sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
        sc.space_group(), sc.density(), sc.cluster().shape   # (14, 'P2_1/c'), 1.32, (17, n, 3)
    """

    lattice: np.ndarray  #: [3, 3] lattice vectors a, b, c as rows (Å)
    rotations: np.ndarray  #: [h, 3, 3] integer rotation parts of the operators (fractional)
    translations: np.ndarray  #: [h, 3] fractional translation parts, in [0, 1)
    molecule: np.ndarray  #: [n, 3] Cartesian coordinates of the asymmetric molecule (Å)
    z: np.ndarray  #: [n] atomic numbers

    def __post_init__(self) -> None:
        self.lattice = np.asarray(self.lattice, dtype=np.float64)
        self.rotations = np.rint(np.asarray(self.rotations)).astype(np.int64)
        self.translations = np.asarray(self.translations, dtype=np.float64) % 1.0
        self.molecule = np.asarray(self.molecule, dtype=np.float64)
        self.z = np.asarray(self.z, dtype=np.int64)

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_cell(
        cls, lattice: np.ndarray, frac: np.ndarray, z: np.ndarray, molecule: np.ndarray, molecule_z: np.ndarray,
        symprec: float = SYMPREC,
    ) -> "SymmetricCrystal":
        """From a full periodic structure (every atom of the cell: fractional ``frac``, atomic numbers
        ``z``) and one whole molecule of it (Cartesian ``molecule`` [n, 3], ``molecule_z`` [n]); the
        operators are spglib's at ``symprec`` (Å). Raises ValueError when the images of the molecule are not
        all the atoms of the cell: its molecules form more than one orbit (e.g. two independent molecules,
        each on an inversion centre), which one asymmetric molecule cannot describe."""
        lattice = np.asarray(lattice, dtype=np.float64)
        sym = spglib.get_symmetry((lattice, np.asarray(frac, dtype=np.float64) % 1.0, np.asarray(z)), symprec=symprec)
        if sym is None:
            raise ValueError(f"spglib found no symmetry: {spglib.get_error_message()}")
        sc = cls(lattice, sym["rotations"], sym["translations"], molecule, molecule_z)
        if sc.n_molecules * sc.n_atoms != len(z):
            raise ValueError(f"the cell holds {len(z)} atoms but the molecule's images only {sc.n_molecules * sc.n_atoms}: "
                             "its molecules form more than one symmetry orbit")
        return sc

    @classmethod
    def from_crystal(cls, crystal: Crystal, molecule: Molecule, symprec: float = SYMPREC) -> "SymmetricCrystal":
        """From a crystal read from CIF and one of its whole molecules (``select`` in the data pipeline)."""
        return cls.from_cell(crystal.lattice, crystal.frac, crystal.z, molecule.cart(crystal),
                             crystal.z[molecule.atoms], symprec)

    # --- derived quantities ---------------------------------------------------------------------

    @property
    def n_atoms(self) -> int:
        """Atoms per molecule."""
        return len(self.z)

    @property
    def volume(self) -> float:
        """Cell volume (Å³)."""
        return float(abs(np.linalg.det(self.lattice)))

    def molecule_frac(self) -> np.ndarray:
        """[n, 3] fractional coordinates of the asymmetric molecule."""
        return self.molecule @ np.linalg.inv(self.lattice)

    def images(self) -> np.ndarray:
        """[h, n, 3] fractional coordinates of the molecule under every operator, each image shifted by
        whole lattice vectors so its centre of mass lies in [0, 1)."""
        f = self.molecule_frac()
        img = np.einsum("hij,nj->hni", self.rotations, f) + self.translations[:, None, :]
        com = centre_of_mass(img, self.z)  # [h, 3]
        return img - np.floor(com)[:, None, :]

    def distinct_ops(self, tol: float = SAME_MOLECULE) -> np.ndarray:
        """Indices of the operators that give distinct molecules (the first of each set of images that
        coincide: a molecule on a special position is its own image under its site symmetry)."""
        com = centre_of_mass(self.images(), self.z)  # fractional, in [0, 1)
        keep: list[int] = []
        for k in range(len(com)):
            d = com[k] - com[keep] if keep else np.zeros((0, 3))
            d -= np.round(d)
            if not keep or np.linalg.norm(d @ self.lattice, axis=1).min() > tol:
                keep.append(k)
        return np.array(keep, dtype=np.int64)

    def site_ops(self, tol: float = SAME_MOLECULE) -> np.ndarray:
        """Indices of the operators that map the molecule onto itself up to a lattice vector (its site
        symmetry; the identity alone for a molecule on a general position)."""
        com = centre_of_mass(self.images(), self.z)
        ident = np.flatnonzero([np.array_equal(w, np.eye(3, dtype=np.int64)) and np.allclose(t, 0)
                                for w, t in zip(self.rotations, self.translations)])
        if not ident.size:
            raise ValueError("the operators do not include the identity")
        d = com - com[ident[0]]
        d -= np.round(d)
        return np.flatnonzero(np.linalg.norm(d @ self.lattice, axis=1) <= tol)

    @property
    def n_molecules(self) -> int:
        """Z: distinct molecules in the cell."""
        return len(self.distinct_ops())

    def molecules(self) -> np.ndarray:
        """[Z, n, 3] Cartesian coordinates of the cell's distinct molecules (centres of mass in the cell)."""
        return self.images()[self.distinct_ops()] @ self.lattice

    def cell_atoms(self) -> tuple[np.ndarray, np.ndarray]:
        """Every atom of the cell: fractional coordinates in [0, 1) [Z·n, 3] and atomic numbers [Z·n]."""
        f = self.images()[self.distinct_ops()].reshape(-1, 3)
        return f - np.floor(f), np.tile(self.z, len(self.distinct_ops()))

    def density(self) -> float:
        """Density (g/cm³)."""
        mass = float(ATOMIC_MASS[self.z].sum()) * self.n_molecules
        return mass / self.volume * _AMU_PER_A3_TO_G_PER_CM3

    def space_group(self, symprec: float = SYMPREC) -> tuple[int, str]:
        """(international number, Hermann–Mauguin symbol) of the cell's atoms as spglib finds them."""
        frac, z = self.cell_atoms()
        ds = spglib.get_symmetry_dataset((self.lattice, frac, z), symprec=symprec)
        if ds is None:
            return 1, "P1"
        return int(ds.number), str(ds.international)

    def cluster(self, k: int = N_NEIGHBOURS) -> np.ndarray:
        """[k + 1, n, 3] the asymmetric molecule and its ``k`` nearest neighbours by centre-of-mass distance
        (Cartesian, the molecule's centre of mass at the origin), as COD-Cluster17 builds clusters."""
        ops = self.distinct_ops()
        img = self.images()[ops]  # [Z, n, 3]
        com = centre_of_mass(img, self.z)
        # the identity operator's image is the molecule itself, possibly shifted into the cell
        ident = int(np.flatnonzero([np.array_equal(self.rotations[o], np.eye(3, dtype=np.int64)) and
                                    np.allclose(self.translations[o], 0) for o in ops])[0])
        mol, shift, _ = nearest_images(com, self.lattice, ident, k)
        frac = np.concatenate([img[[ident]], img[mol] + shift[:, None, :]])
        x = frac @ self.lattice
        return x - centre_of_mass(x[0], self.z)

    def with_pose(self, lattice: np.ndarray | None = None, molecule: np.ndarray | None = None) -> "SymmetricCrystal":
        """A copy with another cell and/or molecule pose (the operators kept)."""
        return replace(
            self,
            lattice=self.lattice if lattice is None else lattice,
            molecule=self.molecule if molecule is None else molecule,
        )
