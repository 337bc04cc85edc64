"""Crystallization models: flow matching along a probability path (LERP, VE, VP, rigid) or direct regression (GNN-MD).

Coordinates are cluster-centred inside the model: each cluster's mean of x_w is subtracted from x_w,
x_s and x_t before anything else (and added back to predictions). This makes every loss translation
invariant and puts the VP path, which contracts towards the origin, in the frame it needs; the
backbones are translation invariant anyway.

A flow model is a backbone plus a path (:mod:`crystalflow.flow.paths`); everything that depends on the
kind of path — the rigid method's superposed conformers and rigid velocities, the velocity towards a
predicted end point — is the path's, so the model treats every path alike. The ``rigid`` method
(CrystalFlow-Rigid, :class:`crystalflow.flow.paths.RigidPath`) moves whole molecules: its states are the
input conformer superposed on each molecule, and the backbone's per-atom output is projected onto
per-molecule rigid motions (translation + rotation). Samples come from integrating
:meth:`CrystalModel.velocity` with :func:`crystalflow.flow.solver.integrate`; gnn-md predicts in one
forward pass (:meth:`CrystalModel.regress`).

``prediction='endpoint'`` (lerp, rigid) is orthogonal to the method: the network predicts the crystal
x̂_1 instead of the velocity, and the path turns it into one ((x̂_1 − x_t)/(1 − t), or the SE(3)
geodesic to x̂_1 for rigid).

:class:`ModelConfig` holds the backbone's own :class:`~crystalflow.backbones.registry.BackboneConfig`
(JSON: ``{"method": "lerp", "backbone": {"variant": "fast", "hidden": 64, ...}}``); :meth:`ModelConfig.from_dict`
also reads the flat form of older config files, where the backbone's fields sit beside the method's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from torch import Tensor, nn

from crystalflow.backbones.registry import BackboneConfig, build_backbone
from crystalflow.common.checks import check_field_types
from crystalflow.common.vocabulary import METHODS
from crystalflow.data.dataset import Batch
from crystalflow.flow import paths

FLOW_METHODS = ("lerp", "ve", "vp", "rigid")
PREDICTIONS = ("velocity", "endpoint")
#: the straightforward atom-level PaiNN used as the speed anchor (F=128, L=4, c=5 Å)
REFERENCE_BACKBONE = BackboneConfig(variant="reference", hidden=128, layers=4, cutoff=5.0)
#: BackboneConfig fields that the flat (older) form of a config holds beside the method's fields
#: (its ``"backbone"`` is the variant name)
FLAT_BACKBONE_KEYS = (
    "hidden", "layers", "n_rbf", "cutoff", "intra_cutoff", "contact_cutoff", "max_contacts", "mol_cutoff", "compile",
    "orientation_inputs",
)
#: removed options: key -> the only value still accepted (their old default, which changes nothing)
REMOVED_OPTIONS = {"target_frame": "input", "lerp_exact_target": False}


def merge_config_dicts(*dicts: dict) -> dict:
    """ModelConfig dicts merged left to right; nested ``"backbone"`` objects are merged key by key."""
    out: dict = {}
    for d in dicts:
        for key, value in d.items():
            if key == "backbone" and isinstance(value, dict) and isinstance(out.get(key), dict):
                value = {**out[key], **value}
            out[key] = value
    return out


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (saved next to checkpoints via :meth:`to_dict`).

    Example::

        import crystalflow as cf

        ours = cf.ModelConfig(method="rigid", prediction="endpoint", condition_on_input=False,
                              backbone=cf.BackboneConfig(variant="molecule-painn", hidden=32))
        cf.ModelConfig.from_dict(ours.to_dict()) == ours                             # True
        cf.ModelConfig.from_dict({"method": "lerp", "backbone": {"hidden": 32}})     # the JSON form
    """

    method: str = "lerp"  #: 'lerp' | 've' | 'vp' | 'gnn-md' | 'rigid'
    #: the network: variant ('fast', 'reference', 'molecule-painn') and its hyper-parameters
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lerp_sigma: float = paths.LERP_SIGMA  #: LERP and rigid: noise scale σ (Å) of the path
    lerp_sigma_min: float = paths.LERP_SIGMA_MIN
    ve_sigma_min: float = paths.VE_SIGMA_MIN
    ve_sigma_max: float = paths.VE_SIGMA_MAX
    vp_beta_min: float = paths.VP_BETA_MIN
    vp_beta_max: float = paths.VP_BETA_MAX
    vp_scale: float = paths.VP_SCALE  #: length unit (Å) of the VP process
    #: give the velocity network x_w besides x_t (the paper's v_θ(x_t, x_w, t)). With a path that starts at
    #: x_w, (x_t − x_w)/t reveals the LERP target for t > 0, so the network need only learn near t = 0;
    #: False trains v_θ(x_t, t) (lerp and rigid only: their flows still start from x_w)
    condition_on_input: bool = True
    #: what the network predicts (lerp and rigid): 'velocity' (the paper) or 'endpoint' — the displacement
    #: x̂_1 − x_t to the crystal, trained by ||x̂_1 − x_1||² and turned into the velocity (x̂_1 − x_t)/(1 − t)
    #: (rigid: the SE(3) geodesic to the superposed x̂_1). Orientations are then a smooth function to learn,
    #: where a rotation vector near π is not
    prediction: str = "velocity"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if not isinstance(self.backbone, BackboneConfig):
            raise TypeError(f"backbone must be a BackboneConfig, got {type(self.backbone).__name__}")
        if not self.condition_on_input and self.method not in ("lerp", "rigid"):
            raise ValueError("condition_on_input=False needs a path that starts at x_w (lerp or rigid)")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; choose from {', '.join(PREDICTIONS)}")
        if self.prediction == "endpoint" and self.method not in ("lerp", "rigid"):
            raise ValueError("prediction='endpoint' needs a path that ends at the crystal (lerp or rigid)")
        if self.backbone.rigid_output and self.method != "gnn-md" and self.prediction != "endpoint":
            raise ValueError(f"the {self.backbone.variant} backbone predicts displacements: "
                             "use prediction='endpoint' (or gnn-md)")

    @property
    def is_flow(self) -> bool:
        """True for the flow methods (lerp / ve / vp / rigid), False for gnn-md."""
        return self.method in FLOW_METHODS

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable), the backbone's config nested under ``"backbone"``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are a ValueError, values of the wrong type a TypeError.

        Also reads the flat form of older config files: ``"backbone"`` a variant name and the backbone's
        fields (``hidden``, ``layers``, ...) beside the method's; flat fields given next to a nested
        ``"backbone"`` object override its entries. Removed options are accepted at the value that
        changes nothing (``target_frame: "input"``, ``lerp_exact_target: false``), any other value is a
        ValueError, as is the removed ``frames`` backbone.
        """
        d = dict(d)
        for key, kept in REMOVED_OPTIONS.items():
            if key in d:
                value = d.pop(key)
                if value != kept or type(value) is not type(kept):
                    raise ValueError(f"the {key} option was removed: only its default {kept!r} is accepted, "
                                     f"got {value!r}")
        nested = d.pop("backbone", {})
        flat = {key: d.pop(key) for key in FLAT_BACKBONE_KEYS if key in d}
        if isinstance(nested, str):  # the flat form: "backbone" names the variant
            nested = {"variant": nested}
        elif isinstance(nested, BackboneConfig):
            nested = nested.to_dict()
        elif not isinstance(nested, dict):
            raise TypeError(f"backbone must be an object (or a variant name), got {nested!r:.40}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(sorted(unknown))}")
        check_field_types(cls, d)
        return cls(**d, backbone=BackboneConfig.from_dict({**nested, **flat}))

    def path(self) -> paths.ProbabilityPath | None:
        """The probability path of a flow method (None for gnn-md)."""
        if self.method == "rigid":
            return paths.rigid_path(self.lerp_sigma, self.lerp_sigma_min)
        if self.method == "lerp":
            return paths.lerp_path(self.lerp_sigma, self.lerp_sigma_min)
        if self.method == "ve":
            return paths.ve_path(self.ve_sigma_min, self.ve_sigma_max)
        if self.method == "vp":
            return paths.vp_path(self.vp_beta_min, self.vp_beta_max, scale=self.vp_scale)
        return None


class CrystalModel(nn.Module):
    """A backbone plus a training objective and the velocity field a solver integrates (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone, time=config.is_flow)
        self.path = config.path()

    @property
    def is_flow(self) -> bool:
        """True for lerp / ve / vp / rigid."""
        return self.path is not None

    def _condition(self, x_w: Tensor, x_t: Tensor) -> Tensor:
        """What the backbone gets as its input cluster: x_w, or x_t itself when not conditioning on x_w."""
        return x_w if self.config.condition_on_input else x_t

    def constrain(self, x: Tensor, batch: Batch) -> Tensor:
        """Positions a model's state must have: its path's ``constrain`` (the rigid method's molecules are the
        input conformer superposed on ``x``); gnn-md leaves ``x`` unchanged."""
        return x if self.path is None else self.path.constrain(x, batch)

    @staticmethod
    def centres(batch: Batch) -> Tensor:
        """Per-atom centre [N, 3]: the mean of x_w over the atom's cluster."""
        return paths.cluster_mean(batch.x_w, batch.graph, batch.num_graphs)[batch.graph]

    @property
    def predicts_endpoint(self) -> bool:
        """True when the network predicts the crystal (x̂_1 − x_t) rather than the velocity."""
        return self.config.prediction == "endpoint"

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """Mean squared error per atom coordinate (flow: velocity or endpoint regression; gnn-md: positions)."""
        c = self.centres(batch)
        x_w, x_s = batch.x_w - c, batch.x_s - c
        if not self.is_flow:
            return ((x_w + self.backbone(x_w, x_w, None, batch) - x_s) ** 2).mean()
        t = self.path.sample_t(batch.num_graphs, generator, x_w.device, x_w.dtype)
        noise = torch.randn(x_w.shape, generator=generator, device=x_w.device, dtype=x_w.dtype)
        sample = self.path.sample(x_w, x_s, t, noise, batch)
        out = self.backbone(sample.x_t, self._condition(x_w, sample.x_t), t, batch)
        if self.predicts_endpoint:
            return ((sample.x_t + out - sample.x_1) ** 2).mean()
        return ((self.path.project(out, sample.x_t, batch) - sample.target) ** 2).mean()

    def velocity(self, x_t: Tensor, t: Tensor | float, batch: Batch) -> Tensor:
        """v_θ(x_t, x_w, t) [N, 3]; ``t`` a float or [B]; x_t in the batch's (uncentred) frame."""
        if not self.is_flow:
            raise ValueError("gnn-md has no velocity field; use regress()")
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(batch.num_graphs)
        c = self.centres(batch)
        x_t = self.path.constrain(x_t, batch)
        out = self.backbone(x_t - c, self._condition(batch.x_w - c, x_t - c), t, batch)
        if self.predicts_endpoint:
            return self.path.endpoint_velocity(x_t, out, t, batch)
        return self.path.project(out, x_t, batch)

    def prior(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """x_0 [N, 3] in the batch's frame (gnn-md: x_w itself)."""
        if not self.is_flow:
            return batch.x_w.clone()
        return self.path.prior(batch, generator)

    @torch.no_grad()
    def regress(self, batch: Batch) -> Tensor:
        """gnn-md's predicted crystal [N, 3]: x_w plus the backbone's displacement, one forward pass."""
        if self.is_flow:
            raise ValueError(f"{self.config.method} is a flow: integrate its velocity (crystalflow.flow.solver)")
        c = self.centres(batch)
        x_w = batch.x_w - c
        return x_w + self.backbone(x_w, x_w, None, batch) + c


def build_model(config: ModelConfig) -> CrystalModel:
    """A fresh :class:`CrystalModel` for ``config``."""
    return CrystalModel(config)
