"""Checks shared by the barycenter solvers: their inputs, their weights and which solver settings they take."""

from __future__ import annotations

import torch
from torch import Tensor

from otkit._checks import all_finite, compute_dtype, is_tracing
from otkit.options import SinkhornOptions

__all__ = ["check_iteration_options", "prepare_hists", "prepare_weights"]


def check_iteration_options(options: SinkhornOptions, caller: str) -> None:
    """Refuse the settings a barycenter solver has no use for (each would be silently ignored otherwise)."""
    if options.max_iter < 1:
        raise ValueError(f"{caller}: max_iter must be >= 1, got {options.max_iter}.")
    if options.rho_a is not None or options.rho_b is not None:
        raise ValueError(f"{caller} computes balanced barycenters: leave rho_a and rho_b at None.")
    if options.domain == "kernel":
        raise ValueError(f"{caller} iterates in the log domain: use domain='auto' or 'log'.")
    if options.grad == "implicit":
        raise ValueError(f"{caller} differentiates by unrolling the iterations: use grad='unroll'.")
    if options.backend == "triton":
        raise ValueError(f"{caller} runs on PyTorch operations: use backend='auto' or 'torch'.")


def prepare_hists(hists: Tensor, event: int, name: str, shape_text: str) -> Tensor:
    """``hists (*batch, k, *support)`` in the compute dtype, checked: finite, >= 0, equal positive masses.

    ``event`` is the number of support dims (1 for histograms, 2 for images).
    """
    if not isinstance(hists, Tensor) or not hists.is_floating_point():
        kind = type(hists).__name__ if not isinstance(hists, Tensor) else f"a {hists.dtype} tensor"
        raise ValueError(f"{name} must be a floating torch.Tensor of shape {shape_text}, got {kind}.")
    if hists.dim() < event + 1 or hists.numel() == 0:
        raise ValueError(f"{name} must have shape {shape_text} with non-empty dims, got {tuple(hists.shape)}.")
    hists = hists.to(compute_dtype(hists.dtype))
    if is_tracing():
        return hists
    _check_values(hists.detach(), event, name)
    return hists


def _check_values(hists: Tensor, event: int, name: str) -> None:
    """The data checks of :func:`prepare_hists` (one host read each)."""
    if not all_finite(hists):
        raise ValueError(f"{name} contains NaN or Inf values; the inputs must be finite.")
    if bool((hists < 0).any()):
        raise ValueError(f"{name} has negative entries; the inputs are measures, their entries must be >= 0.")
    masses = hists.sum(tuple(range(-event, 0)))
    if bool((masses <= 0).any()):
        raise ValueError(f"{name} has an input of zero total mass; every input needs positive mass.")
    gap = float(((masses - masses.mean(-1, keepdim=True)).abs() / masses.amax(-1, keepdim=True)).max())
    if gap > (1e-10 if hists.dtype == torch.float64 else 1e-5):
        raise ValueError(
            f"the inputs in {name} have different total masses (largest relative gap {gap:.3g}); a balanced "
            "barycenter needs equal masses. Normalise each input, e.g. hists / hists.sum(-1, keepdim=True)."
        )


def prepare_weights(weights: Tensor | None, batch_k: torch.Size, like: Tensor) -> Tensor:
    """The weights of the ``k`` inputs broadcast to ``batch_k`` (``(*batch, k)``), normalised to sum to 1.

    ``None`` gives ``1 / k``. Explicit weights must be finite, >= 0 and of positive sum in every problem.
    """
    k = batch_k[-1]
    if weights is None:
        return torch.full((k,), 1.0 / k, dtype=like.dtype, device=like.device).expand(batch_k)
    weights = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if weights.dim() == 0 or weights.shape[-1] != k:
        raise ValueError(f"weights must have last dim k = {k} (one per input), got shape {tuple(weights.shape)}.")
    try:
        weights = weights.expand(batch_k)
    except RuntimeError:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not broadcast to the inputs' (*batch, k) = "
            f"{tuple(batch_k)}. Give them shape ({k},) or (*batch, {k})."
        ) from None
    if not is_tracing():
        if not all_finite(weights) or bool((weights < 0).any()):
            raise ValueError("weights must be finite and >= 0 (barycentric coordinates).")
        if bool((weights.sum(-1) <= 0).any()):
            raise ValueError("weights sum to 0 in at least one problem; give at least one input a positive weight.")
    return weights / weights.sum(-1, keepdim=True)
