"""The settings of the Sinkhorn solver as one frozen, validated value.

:class:`SinkhornOptions` is what every solver path and operator of otkit takes: ``otkit.sinkhorn(cost, eps=...,
...)`` is ``SinkhornOptions(eps=..., ...).solve(cost)``, and the operators take an ``options=`` argument instead
of re-declaring the settings. Building one validates every field, so a bad setting fails where it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor

from otkit._validation import check_positive_float, check_rho

if TYPE_CHECKING:  # the result refers to its options: the import would be circular at run time
    from otkit.result import SinkhornResult

__all__ = ["Backend", "Domain", "GradMode", "SinkhornOptions"]

Domain = Literal["auto", "log", "kernel"]
GradMode = Literal["unroll", "implicit"]
Backend = Literal["auto", "torch", "triton"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SinkhornOptions:
    """Settings of an entropic OT solve; see :func:`otkit.sinkhorn` for the meaning of each field.

    Attributes:
        eps: Entropic regularisation (finite, > 0), in cost units.
        rho_a: KL weight relaxing the row marginal; ``None`` (or ``inf``, stored as ``None``) keeps it exact.
        rho_b: KL weight relaxing the column marginal; ``None`` (or ``inf``) keeps it exact.
        max_iter: Maximum number of iterations (>= 0). ``0`` means no Sinkhorn iteration, which only
            :func:`otkit.sinkhorn_attention` accepts (it is then softmax attention); :meth:`solve`, and so
            :func:`otkit.sinkhorn` and :func:`otkit.multi_prompt_transport`, refuse it.
        tol: Stopping tolerance on the relative column violation; ``None`` runs exactly ``max_iter`` iterations.
        domain: ``"auto"``, ``"log"`` or ``"kernel"``.
        grad: ``"unroll"`` or ``"implicit"``.
        check_every: Iterations between convergence checks (>= 1).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Raises:
        ValueError: when a field is out of its range; the message names the field and the fix.

    Example:
        >>> import torch
        >>> from otkit import SinkhornOptions
        >>> options = SinkhornOptions(eps=0.1, max_iter=500)
        >>> res = options.solve(torch.rand(4, 30, 5))
        >>> options.replace(grad="implicit").to_dict()["grad"]
        'implicit'
    """

    eps: float = 0.05
    rho_a: float | None = None
    rho_b: float | None = None
    max_iter: int = 100
    tol: float | None = 1e-6
    domain: Domain = "auto"
    grad: GradMode = "unroll"
    check_every: int = 10
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_positive_float(self.eps, "eps"))
        object.__setattr__(self, "rho_a", check_rho(self.rho_a, "rho_a"))
        object.__setattr__(self, "rho_b", check_rho(self.rho_b, "rho_b"))
        if not _is_int(self.max_iter) or self.max_iter < 0:
            raise ValueError(f"max_iter must be an int >= 0 (0: no Sinkhorn iteration), got {self.max_iter!r}.")
        tol = self.tol
        if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"tol must be None (run max_iter iterations) or a number >= 0, got {tol!r}.")
        object.__setattr__(self, "tol", None if tol is None else float(tol))
        if self.domain not in ("auto", "log", "kernel"):
            raise ValueError(f"domain must be 'auto', 'log' or 'kernel', got {self.domain!r}.")
        if self.grad not in ("unroll", "implicit"):
            raise ValueError(f"grad must be 'unroll' or 'implicit', got {self.grad!r}.")
        if not _is_int(self.check_every) or self.check_every < 1:
            raise ValueError(f"check_every must be an int >= 1, got {self.check_every!r}.")
        if self.backend not in ("auto", "torch", "triton"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {self.backend!r}.")

    def solve(
        self,
        cost: Tensor,
        a: Tensor | None = None,
        b: Tensor | None = None,
        init: tuple[Tensor, Tensor] | None = None,
    ) -> SinkhornResult:
        """Solve the batch of problems ``cost`` with these settings (:func:`otkit.sinkhorn` documents it all).

        Args:
            cost: ``(..., n, m)`` cost matrices; every leading dim is a batch of independent problems.
            a: ``(n,)`` or ``(..., n)`` row weights; ``None`` gives ``1/n``.
            b: ``(m,)`` or ``(..., m)`` column weights; ``None`` gives ``1/m``.
            init: Warm start ``(f, g)``, shapes ``(..., n)`` and ``(..., m)``, in cost units.

        Returns:
            A :class:`~otkit.result.SinkhornResult` over the batch.

        Raises:
            ValueError: on bad inputs (see :func:`otkit.sinkhorn`) and for ``max_iter=0``.
        """
        from otkit.sinkhorn import _solve  # imported here: otkit.sinkhorn imports this module

        return _solve(cost, a, b, self, init)

    def replace(self, **changes: Any) -> SinkhornOptions:
        """A copy with the given fields changed (and validated), e.g. ``options.replace(grad="implicit")``.

        Raises:
            ValueError: for an unknown field name (the message lists the valid ones) or a bad value.
        """
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain ``{name: value}`` dict (JSON-serialisable), the inverse of :meth:`from_dict`."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SinkhornOptions:
        """Options from a ``{name: value}`` dict such as a config file section; missing fields take defaults.

        Raises:
            ValueError: for keys that are not fields (the message lists the valid keys) or bad values.
        """
        valid = [field.name for field in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown SinkhornOptions key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}."
            )
        return cls(**values)
