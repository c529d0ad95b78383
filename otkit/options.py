"""The settings of the Sinkhorn solver as one frozen, validated value, and how an entry point reads them.

Every entry point of otkit takes its solver settings the same way:

- ``eps``, the entropic regularisation, as an argument of its own (positional after the data and weights of a
  function, keyword for a module);
- ``options=``, a :class:`SinkhornOptions` holding every setting (for a config file, or to share settings between
  calls);
- any field of :class:`SinkhornOptions` as a keyword (``max_iter=500``, ``tol=None``, ``grad="implicit"``, ...),
  which changes that field of ``options`` (or of the entry point's defaults) for this call.

So ``otkit.sinkhorn(cost, eps=0.1, max_iter=500)`` and
``otkit.sinkhorn(cost, options=SinkhornOptions(eps=0.1, max_iter=500))`` are the same call. The defaults are the
fields' defaults below everywhere, except for attention, whose defaults are :data:`otkit.ATTENTION_OPTIONS`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any, Literal, TypedDict

from otkit._checks import check_positive_float, check_rho

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # typing_extensions comes with torch
    from typing_extensions import Unpack

__all__ = ["Backend", "Domain", "GradMode", "SinkhornOptions", "SinkhornSettings", "Unpack", "resolve_options"]

Domain = Literal["auto", "log", "kernel"]
GradMode = Literal["unroll", "implicit"]
Backend = Literal["auto", "torch", "triton"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SinkhornOptions:
    """Settings of an entropic OT solve, validated when built.

    Attributes:
        eps: Entropic regularisation (finite, > 0), in cost units.
        rho_a: KL weight relaxing the row marginal; ``None`` (or ``inf``, stored as ``None``) keeps it exact.
        rho_b: KL weight relaxing the column marginal; ``None`` (or ``inf``) keeps it exact.
        max_iter: Maximum number of iterations (>= 0; 1000 by default, POT's default). ``0`` means no Sinkhorn
            iteration, which only :func:`otkit.sinkhorn_attention` accepts (it is then softmax attention); the
            solvers refuse it.
        tol: Stopping tolerance on the relative L1 marginal violation; ``None`` runs exactly ``max_iter``
            iterations.
        domain: ``"auto"``, ``"log"`` or ``"kernel"`` (dense costs; point clouds always iterate in the log domain).
        grad: ``"unroll"`` (backpropagate through the iterations) or ``"implicit"`` (differentiate the fixed
            point).
        check_every: Iterations between convergence checks (>= 1).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``: where the iterations run.

    Raises:
        ValueError: when a field is out of its range; the message names the field and the fix.

    Example:
        >>> import torch, otkit
        >>> options = otkit.SinkhornOptions(eps=0.1, max_iter=500)
        >>> res = otkit.sinkhorn(torch.rand(4, 30, 5), options=options)
        >>> options.replace(grad="implicit").to_dict()["grad"]
        'implicit'
    """

    eps: float = 0.05
    rho_a: float | None = None
    rho_b: float | None = None
    max_iter: int = 1000
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

    def replace(self, **changes: Any) -> SinkhornOptions:
        """A copy with the given fields changed (and validated), e.g. ``options.replace(grad="implicit")``.

        Raises:
            ValueError: for an unknown field name (the message lists the valid ones) or a bad value.
        """
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain ``{name: value}`` dict (JSON-serialisable), the inverse of :meth:`from_dict`."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SinkhornOptions:
        """Options from a ``{name: value}`` dict such as a config file section; missing fields take defaults.

        Raises:
            ValueError: for keys that are not fields (the message lists the valid keys) or bad values.
        """
        unknown = sorted(set(values) - set(FIELD_NAMES))
        if unknown:
            raise ValueError(
                f"unknown SinkhornOptions key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(FIELD_NAMES)}."
            )
        return cls(**values)


# The field names, read once (torch.compile cannot trace dataclasses.fields).
FIELD_NAMES = tuple(field.name for field in fields(SinkhornOptions))


class SinkhornSettings(TypedDict, total=False):
    """The fields of :class:`SinkhornOptions` other than ``eps``, as keyword arguments of an entry point."""

    rho_a: float | None
    rho_b: float | None
    max_iter: int
    tol: float | None
    domain: Domain
    grad: GradMode
    check_every: int
    backend: Backend


DEFAULT_OPTIONS = SinkhornOptions()


def resolve_options(
    caller: str,
    options: SinkhornOptions | None,
    eps: float | None,
    settings: dict[str, Any],
    default: SinkhornOptions = DEFAULT_OPTIONS,
) -> SinkhornOptions:
    """The options of one call: ``options`` (or ``default``) with ``eps`` and the keyword ``settings`` changed.

    Args:
        caller: The entry point's name, for messages (``"otkit.sinkhorn"``).
        options: The ``options=`` argument, or ``None``.
        eps: The ``eps`` argument, or ``None`` to keep that of ``options``.
        settings: The other keyword arguments: fields of :class:`SinkhornOptions`.
        default: The entry point's defaults, used without ``options``.

    Raises:
        ValueError: for an ``options`` that is not a :class:`SinkhornOptions`, a keyword that is not one of its
            fields (the message lists them), or a bad value.
    """
    base = default if options is None else options
    if not isinstance(base, SinkhornOptions):
        raise ValueError(
            f"{caller}: options must be an otkit.SinkhornOptions, got {type(options).__name__}. Build one with "
            "otkit.SinkhornOptions(eps=..., max_iter=...), or pass the settings as keywords."
        )
    valid = [name for name in FIELD_NAMES if name != "eps"]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(
            f"{caller} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; its solver settings are "
            f"eps and {', '.join(valid)} (the fields of otkit.SinkhornOptions)."
        )
    changes = dict(settings)
    if eps is not None:
        changes["eps"] = eps
    return base.replace(**changes) if changes else base
