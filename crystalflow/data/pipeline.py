"""One CIF file -> COD-Cluster17 records: read, select, complete molecules, cluster, add noise.

This is the paper's Appendix C selection and processing, applied to a single file; ``build`` runs it
over many files in parallel.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np

from crystalflow.common.errors import RejectError
from crystalflow.common.vocabulary import DEFAULT_MAX_ATOMS, DEFAULT_NOISE_PRESET
from crystalflow.data.noise import NoiseModel, apply_noise, noise_model
from crystalflow.data.shards import ClusterRecord
from crystalflow.structure.cif import Crystal, read_cif
from crystalflow.structure.cluster import N_NEIGHBOURS, build_cluster
from crystalflow.structure.contacts import max_overlap
from crystalflow.structure.elements import ATOMIC_MASS
from crystalflow.structure.molecules import (
    BOND_TOLERANCE,
    check_single_component,
    common_order,
    find_molecules,
    z_prime,
)

#: Z' above this (allowing for rounding) is rejected
MAX_Z_PRIME = 1.0 + 1e-6
#: grams per mole per Å^3 -> g/cm^3
DENSITY_FACTOR = 1.66053906660


@dataclass(frozen=True)
class BuildSettings:
    """Everything that decides what a build produces (recorded in build.json and summary.json)."""

    noise: NoiseModel = field(default_factory=noise_model)
    noise_preset: str = DEFAULT_NOISE_PRESET
    samples_per_crystal: int = 1
    max_atoms: int = DEFAULT_MAX_ATOMS  #: atoms per molecule, hydrogens included
    neighbours: int = N_NEIGHBOURS
    bond_tolerance: float = BOND_TOLERANCE
    seed: int = 0

    def to_dict(self) -> dict:
        """Plain, JSON-ready dict."""
        d = asdict(self)
        d["noise"] = self.noise.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BuildSettings":
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "noise": NoiseModel(**d["noise"])})


def file_rng(seed: int, key: str) -> np.random.Generator:
    """Random generator for one input file: independent of worker count, chunking and file order."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def select(crystal: Crystal, settings: BuildSettings):
    """Complete and check the molecules of a crystal; returns (molecules, formula, Z')."""
    molecules = find_molecules(crystal, settings.bond_tolerance)
    formula = check_single_component(crystal, molecules)
    z = crystal.z[molecules[0].atoms]
    if not (np.any(z == 6) and np.any(z == 1)):
        missing = " and ".join(e for e, k in (("carbon", 6), ("hydrogen", 1)) if not np.any(z == k))
        raise RejectError("no_carbon_or_hydrogen", f"molecule {formula} has no {missing}")
    if len(z) > settings.max_atoms:
        raise RejectError("too_large", f"{len(z)} atoms per molecule > limit {settings.max_atoms}")
    zp = z_prime(crystal, len(molecules))
    if zp > MAX_Z_PRIME:
        raise RejectError("z_prime_gt_1", f"Z' = {zp:g} ({len(molecules)} molecules, {crystal.n_symops} operators)")
    molecules = common_order(crystal, molecules)
    return molecules, formula, zp


def process_cif(path: str, key: str, settings: BuildSettings) -> list[ClusterRecord]:
    """All records of one CIF (``samples_per_crystal`` noise draws), or :class:`RejectError`."""
    crystal = read_cif(path)
    molecules, formula, zp = select(crystal, settings)
    cluster = build_cluster(crystal, molecules, k=settings.neighbours)
    density = ATOMIC_MASS[crystal.z].sum() * DENSITY_FACTOR / crystal.volume
    meta = {
        "key": key,
        "source": path,
        "name": crystal.name,
        "cod_id": crystal.cod_id,
        "formula": formula,
        "spacegroup": crystal.spacegroup,
        "sg_number": crystal.sg_number,
        "z_prime": round(zp, 4),
        "z": len(molecules),
        "n_atoms": cluster.atoms_per_molecule,
        "n_molecules": cluster.n_molecules,
        "density": round(float(density), 4),
        "cell": [round(float(v), 4) for v in crystal.lattice.ravel()],
    }
    rng = file_rng(settings.seed, key)
    records = []
    for sample in range(settings.samples_per_crystal):
        draw = apply_noise(cluster.x, cluster.z, settings.noise, rng)
        stored = draw.x_w.astype(np.float32)  # what the shard keeps, so the recorded overlap is the stored one
        stats = {**draw.statistics(), "x_w_max_overlap": round(max_overlap(stored, cluster.z), 4)}
        records.append(ClusterRecord(x_s=cluster.x, x_w=draw.x_w, z=cluster.z, meta={**meta, **stats, "sample": sample}))
    return records
