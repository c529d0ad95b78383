"""Input checks shared by every entry point of otkit.

Every check raises a ``ValueError`` that names the argument, says what was wrong and what to do. Checks that
need the data (NaN, negative weights, masses) cost one host synchronisation per call; they are skipped while
``torch.compile`` traces a function, where data-dependent branches would break the graph.
"""

from __future__ import annotations

import math
import os
import sys

import torch
from torch import Tensor

__all__ = [
    "all_finite",
    "caller_stacklevel",
    "check_cost",
    "check_masses",
    "check_positive_float",
    "check_precision",
    "check_rho",
    "check_spread",
    "compute_dtype",
    "is_tracing",
    "prepare_init",
    "prepare_marginal",
]

# Largest max|C| / eps a dtype resolves: potentials carry |C| with relative rounding u (6e-8 in float32), which
# becomes an error of |C| * u / eps in the plan's exponent; at these ratios that error reaches about 1%.
PRECISION_LIMIT = {torch.float32: 1e5, torch.float64: 1e13}

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def is_tracing() -> bool:
    """Whether ``torch.compile`` (dynamo) is tracing the current call."""
    return torch.compiler.is_compiling()


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solver iterates in: float64 stays, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_positive_float(value: float, name: str) -> float:
    """Return ``value`` as a float after checking that it is finite and > 0."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a positive scalar, got a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}. Pass a positive value such as 0.05.")
    return value


def check_rho(rho: float | None, name: str) -> float | None:
    """Normalise a marginal-relaxation weight: ``None`` or ``inf`` mean a balanced (hard) marginal."""
    if rho is None:
        return None
    if isinstance(rho, Tensor):
        rho = rho.item()
    rho = float(rho)
    if math.isinf(rho) and rho > 0:
        return None
    if math.isnan(rho) or rho <= 0:
        raise ValueError(f"{name} must be > 0 (a KL penalty weight), or None/inf for a balanced marginal; got {rho}.")
    return rho


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite, in one reduction pass (one host read).

    A NaN or Inf anywhere makes the sum non-finite; only then (or when finite entries overflow the sum) are the
    entries looked at one by one.
    """
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def check_cost(cost: Tensor, name: str = "cost") -> None:
    """Check that ``cost`` is a floating tensor ``(..., n, m)`` with non-empty dims and finite entries."""
    if not isinstance(cost, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (..., n, m), got {type(cost).__name__}.")
    if cost.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {cost.dtype}. "
            f"Convert it with {name}.float()."
        )
    if cost.dim() < 2:
        raise ValueError(f"{name} must have at least 2 dims (..., n, m), got shape {tuple(cost.shape)}.")
    if cost.numel() == 0:
        raise ValueError(
            f"{name} has an empty dimension, shape {tuple(cost.shape)}: every problem needs n >= 1 and m >= 1 "
            "points and every batch dim must be >= 1."
        )
    if not is_tracing() and not all_finite(cost):
        bad = "NaN" if bool(torch.isnan(cost).any()) else "Inf"
        raise ValueError(
            f"{name} contains {bad} values. Sinkhorn needs finite costs: replace them (for example with a large "
            "finite cost for forbidden pairs) or clean the features that produced them."
        )


def check_precision(cost: Tensor, eps: float) -> None:
    """Raise when ``max |C| / eps`` is beyond what the compute dtype of ``cost`` can resolve (one host read)."""
    if is_tracing():
        return
    limit = PRECISION_LIMIT[cost.dtype]
    low, high = torch.aminmax(cost.detach())  # one pass, no |cost| matrix
    ratio = max(float(high), -float(low)) / eps
    if ratio > limit:
        raise ValueError(
            f"max |cost| / eps = {ratio:.3g} exceeds {limit:.0e}, beyond what {cost.dtype} resolves: the plan would "
            "be dominated by rounding. Subtract a constant from the cost (a balanced plan does not change, e.g. "
            "cost - cost.amin()), rescale it, raise eps, or use float64."
        )


def check_spread(spread: float, eps: float, dtype: torch.dtype) -> None:
    """Refuse problems whose cost range ``spread`` over ``eps`` is beyond what ``dtype`` resolves (no host read).

    The point-cloud form of :func:`check_precision`, for costs that are never stored.
    """
    limit = PRECISION_LIMIT[dtype]
    if spread / eps > limit:
        raise ValueError(
            f"the cost spans about {spread:.3g}, and {spread:.3g} / eps = {spread / eps:.3g} exceeds {limit:.0e}, "
            f"beyond what {dtype} resolves. Rescale the points (e.g. to unit diameter), raise eps, or use float64."
        )


def prepare_marginal(weights: Tensor | None, shape: torch.Size, like: Tensor, name: str, dim_name: str) -> Tensor:
    """Broadcast a marginal to ``shape`` (``(*batch, n)``) in the dtype/device of ``like``, with checks.

    ``None`` gives the uniform marginal ``1 / n``. Explicit weights must be finite, non-negative and have positive
    mass in every problem.
    """
    n = shape[-1]
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device).expand(shape)
    if not isinstance(weights, Tensor):
        weights = torch.as_tensor(weights)
    if weights.dim() == 0 or weights.shape[-1] != n:
        raise ValueError(
            f"{name} must have last dim {dim_name} = {n} to match the cost, got shape {tuple(weights.shape)}."
        )
    try:
        weights = weights.to(dtype=like.dtype, device=like.device).expand(shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(weights.shape)} does not broadcast to the cost's batch shape "
            f"{tuple(shape)}. Give it shape ({dim_name},) or (*batch, {dim_name})."
        ) from None
    if not is_tracing():
        if not all_finite(weights):
            raise ValueError(f"{name} contains NaN or Inf values; marginal weights must be finite.")
        if bool((weights < 0).any()):
            raise ValueError(f"{name} has negative entries; marginal weights must be >= 0.")
        if bool((weights.sum(-1) <= 0).any()):
            raise ValueError(
                f"{name} has zero total mass in at least one problem; every problem needs positive mass. "
                "Drop empty problems or give them uniform weights."
            )
    return weights


def check_masses(a: Tensor, b: Tensor) -> None:
    """Raise unless every problem's marginals ``a (..., n)`` and ``b (..., m)`` have the same total mass."""
    mass_a, mass_b = a.sum(-1), b.sum(-1)
    gap = ((mass_a - mass_b).abs() / torch.maximum(mass_a, mass_b)).max()
    if bool(gap > (1e-10 if a.dtype == torch.float64 else 1e-5)):
        raise ValueError(
            f"a and b have different total masses (largest relative gap {gap.item():.3g}) but the problem is "
            "balanced. Normalise both to the same mass (for example a / a.sum(-1, keepdim=True)), or relax a "
            "marginal with rho_a= / rho_b= (unbalanced OT)."
        )


def prepare_init(
    init: tuple[Tensor, Tensor] | None, shape_f: torch.Size, shape_g: torch.Size, like: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    """A warm start ``(f, g)`` broadcast to ``shape_f`` and ``shape_g``, detached, in the dtype/device of ``like``."""
    if init is None:
        return None, None
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise ValueError("init must be a pair of potentials (f, g) of shapes (*batch, n) and (*batch, m).")
    out = []
    for name, pot, shape in (("init[0] (f)", init[0], shape_f), ("init[1] (g)", init[1], shape_g)):
        pot = torch.as_tensor(pot).detach().to(dtype=like.dtype, device=like.device)
        try:
            pot = pot.expand(shape)
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(pot.shape)} does not broadcast to {tuple(shape)}.") from None
        if not is_tracing() and not all_finite(pot):
            raise ValueError(f"{name} contains NaN or Inf; pass finite potentials, e.g. from a previous result.")
        out.append(pot)
    return out[0], out[1]


def caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside otkit, for a warning issued by the caller of this function.

    The warning then points at the user's call of :func:`otkit.sinkhorn`, :meth:`SinkhornOptions.solve` or an
    operator.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level
