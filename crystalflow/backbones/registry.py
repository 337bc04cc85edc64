"""The backbone registry: :class:`BackboneConfig`, the variants by name and :func:`build_backbone`.

A backbone maps positions x [N, 3] (x_t), the condition x_w [N, 3], optional times t [B] and a
:class:`~crystalflow.data.dataset.Batch` to one equivariant 3-vector per atom (``forward(x, x_w, t,
batch)``). Variants, one module each:

- ``fast`` (:mod:`crystalflow.backbones.hierarchical`, the default): sparse atom edges + molecule nodes.
- ``reference`` (:mod:`crystalflow.backbones.painn`): plain atom-level PaiNN within a cutoff.
- ``molecule-painn`` (:mod:`crystalflow.backbones.molecule_painn`): molecule-level, SO(3)-equivariant;
  its output is a rigid displacement per molecule (``rigid_output``), so it serves endpoint prediction
  and gnn-md only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from crystalflow.backbones.hierarchical import HierarchicalPaiNN
from crystalflow.backbones.molecule_painn import MoleculePaiNN
from crystalflow.backbones.painn import PaiNN
from crystalflow.common.checks import check_field_types

#: backbone variants: name -> class, built as ``cls(config, time=...)``
BACKBONES: dict[str, type[nn.Module]] = {
    "fast": HierarchicalPaiNN,
    "reference": PaiNN,
    "molecule-painn": MoleculePaiNN,
}
VARIANTS = tuple(BACKBONES)
#: the variants whose output is a rigid displacement per molecule (endpoint prediction or gnn-md only)
RIGID_OUTPUT_VARIANTS = tuple(name for name, cls in BACKBONES.items() if cls.rigid_output)
#: variants that no longer exist -> what to use instead (named in the error)
REMOVED_VARIANTS = {"frames": "molecule-painn"}


@dataclass
class BackboneConfig:
    """Hyper-parameters of a backbone (see the module docstring for the variants); a ModelConfig holds one.

    Example::

        import crystalflow as cf

        small = cf.BackboneConfig(variant="fast", hidden=32, layers=2)
        cf.ModelConfig(method="lerp", backbone=small).to_dict()["backbone"]["hidden"]   # 32
    """

    variant: str = "fast"  #: 'fast' | 'reference' | 'molecule-painn'
    hidden: int = 64
    layers: int = 3
    n_rbf: int = 20
    cutoff: float = 5.0  #: reference: atom-pair cutoff in x (Å); the paper uses 20 and 50
    intra_cutoff: float = 3.0  #: fast: intra-molecular pairs closer than this in x_w (Å)
    contact_cutoff: float = 4.0  #: fast: inter-molecular atom contacts closer than this in x (Å); 0 = none
    #: fast: keep only each atom's nearest this-many contacts (0 = all). Atoms of our crystals have at most 29
    #: contacts within 4 Å, so this only bounds collapsed states (a VE sample reached 67 per atom)
    max_contacts: int = 32
    mol_cutoff: float = 50.0  #: fast: cosine cutoff of molecule–molecule messages on centroid distance (Å)
    compile: bool = False  #: torch.compile the layer stack (reference, fast)
    #: molecule-painn: let the network see each molecule's current orientation (its axes). Where the input
    #: orientations are uniformly random (the 'solution' and 'liquid' presets) they are noise at t = 0, and a
    #: network that must learn to ignore them learns the lattice far more slowly: switch them off there
    orientation_inputs: bool = True

    def __post_init__(self) -> None:
        if self.variant in REMOVED_VARIANTS:
            raise ValueError(f"the {self.variant} backbone was removed; use {REMOVED_VARIANTS[self.variant]!r} "
                             f"(or one of {', '.join(VARIANTS)})")
        if self.variant not in BACKBONES:
            raise ValueError(f"unknown backbone {self.variant!r}; choose from {', '.join(VARIANTS)}")

    @property
    def rigid_output(self) -> bool:
        """True when the variant outputs a rigid displacement per molecule."""
        return self.variant in RIGID_OUTPUT_VARIANTS

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneConfig":
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown ones are a ValueError,
        values of the wrong type a TypeError."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown backbone keys: {', '.join(sorted(unknown))}")
        check_field_types(cls, d)
        return cls(**d)


def build_backbone(cfg: BackboneConfig, time: bool = True) -> nn.Module:
    """The backbone named by ``cfg.variant``; ``time``: embed t (flow models), False for direct regression."""
    return BACKBONES[cfg.variant](cfg, time=time)
