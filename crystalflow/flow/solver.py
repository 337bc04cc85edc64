"""The ODE solver: integrate a flow model's velocity from t=0 (the input or the prior) to the path's end.

All solvers go through ``torchdiffeq.odeint`` (fixed-step Euler and RK4, adaptive Dormand–Prince);
nothing here hand-rolls a solver. The model supplies the velocity field (:meth:`CrystalModel.velocity
<crystalflow.flow.model.CrystalModel.velocity>`), the end time (its path's ``t_max``) and the constraint
applied to every returned state (:meth:`CrystalModel.constrain <crystalflow.flow.model.CrystalModel.constrain>`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from crystalflow.common.vocabulary import SOLVERS
from crystalflow.data.dataset import Batch
from crystalflow.flow.model import CrystalModel

#: tolerances of the adaptive solver (Å-scale positions, velocities of a few Å per unit time)
DOPRI_RTOL = 1e-4
DOPRI_ATOL = 1e-4


def integrate(
    model: CrystalModel, batch: Batch, x0: Tensor, steps: int = 20, solver: str = "euler",
    frames: int = 0, rtol: float = DOPRI_RTOL, atol: float = DOPRI_ATOL,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Solve dx/dt = v_θ(x, x_w, t) from ``x0`` at t=0 to the path's end; returns (x1, frames, times).

    ``steps`` is the number of fixed steps (Euler, RK4) or ignored by dopri5 (adaptive). With
    ``frames`` > 0 the positions at ``frames`` + 1 evenly spaced times (0 and 1 included) are returned.
    Every returned state is constrained (the rigid method's molecules are exact input conformers).
    """
    from torchdiffeq import odeint  # optional dependency (the 'sample' extra)

    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    if not model.is_flow:
        raise ValueError(f"{model.config.method} has no velocity field to integrate; use model.regress(batch)")
    t_end = model.path.t_max
    n_out = frames + 1 if frames > 0 else 2
    times = torch.linspace(0.0, t_end, n_out, dtype=x0.dtype, device=x0.device)

    def field(t: Tensor, x: Tensor) -> Tensor:
        return model.velocity(x, t, batch)

    options = {"step_size": t_end / steps} if solver in ("euler", "rk4") else None
    kwargs = {"rtol": rtol, "atol": atol} if solver == "dopri5" else {}
    with torch.no_grad():
        xs = odeint(field, x0, times, method=solver, options=options, **kwargs)
    if frames == 0:
        return model.constrain(xs[-1], batch), None, None
    xs = torch.stack([model.constrain(x, batch) for x in xs])
    return xs[-1], xs, times
