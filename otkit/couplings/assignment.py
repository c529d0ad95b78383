"""Exact linear assignment on batches of square costs: the auction algorithm with epsilon-scaling.

This is otkit's one assignment solver (``otkit.matching`` calls it too). :func:`linear_assignment` picks the
method by device and size: on the CPU the compiled auction of ``_auction.c`` (:data:`COMPILED_AUCTION` says
whether this installation has it), elsewhere, or without it, sides up to :data:`HUNGARIAN_MAX_SIDE` go to the
Hungarian method (:mod:`otkit.couplings.hungarian`, exact, each search step batched), larger ones to the torch
auction, below.

The auction (Bertsekas, 1988; Bertsekas and Castanon, 1991) keeps a price ``p_j`` per column. In a round every
unassigned row ``i`` finds its best column ``j1`` and second best ``j2`` by the value ``-C_ij - p_j`` and bids the
price ``p_j1 + (v1 - v2) + eps``; each column goes to its highest bidder (the Jacobi form: all rows of all
problems bid at once, a few tensor operations per round). Once at most :data:`SERIAL_BIDDERS` rows are free, they
bid one at a time (the Gauss-Seidel form), each outbid row next: the long tail of a phase is such a chain. The
final assignment ``sigma`` and prices satisfy ``eps``-complementary slackness, so its cost exceeds the optimum by
at most the duality gap

``sum_i max_j (-C_ij - p_j) + sum_j p_j + sum_i C_i,sigma(i) <= n eps``.

The prices start at the column potentials ``-g`` of short entropic solves (:func:`otkit.sinkhorn` at
``WARM_EPS[0]`` times the cost range, then at each later ``WARM_EPS`` around the last potentials), ``eps`` at the
last of those times :data:`START_EPS`; ``eps`` is then divided by :data:`SCALING` until every problem's gap is at most
``tol * n * range(C)`` (per-problem ``eps``; a problem that is done stops bidding). Rows that still satisfy
complementary slackness at the next ``eps`` keep their columns. Prices and costs are float64, so the gap holds to
float64 rounding. The compiled auction stops at the same gap; it runs every bid in the Gauss-Seidel form, one
problem after another, from zero prices (its notes are in ``_auction.c``).
"""

from __future__ import annotations

import ctypes
import math

import torch
from torch import Tensor

from otkit._checks import all_finite, check_cost
from otkit.couplings.hungarian import hungarian
from otkit.dense import sinkhorn
from otkit.dense.loops import solve as solve_iterations
from otkit.options import SinkhornOptions

try:
    from otkit.couplings import _auction
except ImportError:  # built without a C compiler: the torch auction serves the CPU too (COMPILED_AUCTION False)
    _auction = None

__all__ = [
    "ASSIGNMENT_TOL",
    "CANDIDATES",
    "COMPILED_AUCTION",
    "HUNGARIAN_MAX_SIDE",
    "MIN_TOL",
    "SCALING",
    "SERIAL_BIDDERS",
    "START_EPS",
    "WARM_EPS",
    "WARM_ITERATIONS",
    "linear_assignment",
]

ASSIGNMENT_TOL = 1e-9  # duality gap per row, relative to the cost range
MIN_TOL = 1e-12  # the smallest tol: float64 prices of the range's size resolve about 2e-16 of it
RANGE_EXPONENT = 100  # problems whose cost range is beyond 2**100 or below 2**-100 are scaled by a power of two
HUNGARIAN_MAX_SIDE = 16  # sides up to this use the Hungarian method (faster there, measured), larger the auction
SCALING = 8.0  # eps is divided by this between phases
# The entropic warm start's eps, relative to the cost range: a solve at the first, then each next one around the
# last one's potentials. On 1024 x 1024 2-D costs a second stage cut the auction from 201 to 117 ms for 14 ms more;
# the third (both in float32) took the whole assignment from 152 to 144 ms (median of 9, CPU time).
WARM_EPS = (0.005, 0.001, 0.0002)
WARM_ITERATIONS = 40  # Sinkhorn iterations of each stage
START_EPS = 1 / 64  # the auction's first eps, as a fraction of the last warm-start eps
CANDIDATES = 8  # columns on a serial bidder's list (see _serial_bids)
SERIAL_BIDDERS = 16  # at most this many unassigned rows bid one at a time (Gauss-Seidel), without batched rounds
#: Whether this installation has the compiled CPU auction (``otkit/couplings/_auction.c``, built when otkit is
#: installed where a C compiler is found); without it CPU costs go to the torch methods, exact too but slower.
COMPILED_AUCTION = _auction is not None


def linear_assignment(cost: Tensor, tol: float = ASSIGNMENT_TOL) -> Tensor:
    r"""An optimal assignment of every row to a distinct column, for a batch of square costs.

    .. math::
        \sigma^\star \in \arg\min_{\sigma \in S_n} \sum_{i=1}^n C_{i\sigma(i)}

    solved by the auction algorithm with epsilon-scaling (see the module's notes): the returned assignment's cost
    is within ``tol * n * (max C - min C)`` of the optimum (a bound certified by the duality gap of the final
    prices); with the default ``tol = 1e-9`` that is below the rounding of float32 costs unless a few outliers make
    the range much wider than the costs that matter. CPU costs go to the compiled auction where this installation
    has it (``otkit.couplings.assignment.COMPILED_AUCTION``; a 1024 x 1024 problem in tens of milliseconds). Other
    devices, and the CPU without it, run torch methods on the costs' device: the Hungarian method (exact in
    float64) for ``n <= HUNGARIAN_MAX_SIDE`` (16), above that an auction warm-started by Sinkhorn. Either way the
    search reads its progress on the host.

    Args:
        cost: ``(..., n, n)`` costs; leading dims are independent problems. Computed in float64.
        tol: The auction's duality-gap tolerance per row, relative to each problem's cost range (>= 1e-12).

    Returns:
        ``(..., n)`` int64 tensor: ``sigma[..., i]`` is the column given to row ``i`` (a permutation).

    Raises:
        ValueError: for a cost that is not square, not floating, empty or not finite, a cost range beyond float64
            (``max C - min C`` overflows), or ``tol < MIN_TOL`` (1e-12).

    Example:
        >>> import torch
        >>> from otkit.couplings import linear_assignment
        >>> linear_assignment(torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]))
        tensor([1, 0, 2])
    """
    check_cost(cost)
    if cost.shape[-1] != cost.shape[-2]:
        raise ValueError(
            f"linear_assignment needs square costs (..., n, n), got shape {tuple(cost.shape)}. For unequal sizes "
            "use otkit.couplings.plan(x0, x1, method='exact'), which solves the transport LP."
        )
    if not tol >= MIN_TOL:
        raise ValueError(
            f"tol must be >= {MIN_TOL} (a duality-gap tolerance such as 1e-9; float64 prices resolve no finer), got "
            f"{tol!r}."
        )
    n = cost.shape[-1]
    work = cost.detach().to(torch.float64).reshape(-1, n, n)
    spread = work.amax((1, 2)) - work.amin((1, 2))
    if not all_finite(spread):
        raise ValueError(
            "a problem's cost range (max C - min C) overflows float64, and the auction works in units of it. Divide "
            "the cost by a constant: the assignment does not change."
        )
    # Ranges far from 1 (a denormal range leaves eps no room above 0) are scaled by an exact power of two, in two
    # factors (2**1074 itself overflows float64); the assignment does not change.
    exponent = torch.frexp(spread).exponent
    far = exponent.abs() > RANGE_EXPONENT
    if bool(far.any()):
        shift = torch.where(far, -exponent, 0).to(torch.float64).view(-1, 1, 1)
        half = torch.trunc(shift / 2)
        work = work * torch.exp2(half) * torch.exp2(shift - half)
    if work.device.type == "cpu" and _auction is not None:
        sigma = _compiled_auction(work, float(tol))
    elif n <= HUNGARIAN_MAX_SIDE:
        sigma = hungarian(work)
    else:
        sigma = _torch_auction(work, float(tol))
    return sigma.reshape(cost.shape[:-1]).to(cost.device)


def _compiled_auction(cost: Tensor, tol: float) -> Tensor:
    """The compiled auction on ``(G, n, n)`` float64 CPU costs; returns ``(G, n)`` columns per row."""
    work = cost.resolve_neg().contiguous()  # the raw memory is read: no lazy negation
    sigma = torch.empty(work.shape[:2], dtype=torch.long, device="cpu")
    _auction.solve(work.data_ptr(), work.shape[0], work.shape[1], tol, sigma.data_ptr())
    return sigma


def _torch_auction(cost: Tensor, tol: float) -> Tensor:
    """Auction with eps-scaling on ``(G, n, n)`` float64 costs; returns ``(G, n)`` columns per row."""
    groups, n, _ = cost.shape
    device = cost.device
    if n == 1:
        return torch.zeros(groups, 1, dtype=torch.long, device=device)
    low = cost.amin((1, 2), keepdim=True)
    value = (low - cost).reshape(groups * n, n)  # >= 0; maximised
    spread = (cost.amax((1, 2)) - low.view(groups)).clamp_min(torch.finfo(torch.float64).tiny)  # (G,)
    prices = _entropic_prices(cost, low, spread)
    eps = spread * (WARM_EPS[-1] * START_EPS)
    eps_min = spread * tol / SCALING
    row_group = torch.arange(groups, device=device).repeat_interleave(n)  # row -> problem
    offset = row_group * n  # a problem's first column in the flat column index
    owner = torch.full((groups * n,), -1, dtype=torch.long, device=device)  # flat column -> flat row
    column = torch.full((groups * n,), -1, dtype=torch.long, device=device)  # flat row -> local column
    active = torch.ones(groups, dtype=torch.bool, device=device)
    lists: dict[int, tuple[list[int], list[float], float]] = {}  # serial bidders' candidates
    profit = None  # each row's best profit at the current prices, once every row holds a column
    while True:
        if profit is not None:
            # rows that violate eps-complementary slackness at the new eps bid again
            own = value.gather(1, column.unsqueeze(1)).squeeze(1) - prices[offset + column]
            release = (profit.view(-1) - own > eps[row_group]) & active[row_group]
            owner[offset[release] + column[release]] = -1
            column[release] = -1
        _bid_rounds(value, prices, eps, row_group, offset, owner, column, n, lists)
        own = value.gather(1, column.unsqueeze(1)).squeeze(1).view(groups, n)
        profit = (value.view(groups, n, n) - prices.view(groups, 1, n)).amax(2)
        gap = profit.sum(1) + prices.view(groups, n).sum(1) - own.sum(1)
        active = active & (gap > tol * n * spread) & (eps > eps_min)
        if not bool(active.any()):
            return column.view(groups, n)
        eps = torch.where(active, eps / SCALING, eps)


def _entropic_prices(cost: Tensor, low: Tensor, spread: Tensor) -> Tensor:
    """Starting prices ``-g``: the column potentials of short Sinkhorn solves, flat ``(G n,)`` in cost units.

    Each problem's cost (``low`` its smallest entry, ``spread`` its range) is scaled to ``[0, 1]`` and solved at
    ``eps = WARM_EPS[0]`` (a kernel of range ``1 / eps = 200``, safe for the scaling domain in float64), then at each
    later eps in the scaling domain around the last potentials, in float32 (the kernel's exponents stay within a
    few tens of 0 where the plan lives, and entries that underflow far from it carry no mass), ``WARM_ITERATIONS``
    iterations each. A problem whose stage is not finite keeps the potentials of the stage before. ``g`` is near
    the optimal column duals, so the auction can start at a small eps. Any prices are valid starting prices: the
    optimality certificate (the duality gap) does not depend on them.
    """
    scaled = (cost - low) / spread.view(-1, 1, 1)
    coarse = sinkhorn(scaled, eps=WARM_EPS[0], tol=None, max_iter=WARM_ITERATIONS, domain="kernel")
    f, g = coarse.f, coarse.g
    single = scaled.float()
    a, b = coarse.a.float(), coarse.b.float()
    for eps in WARM_EPS[1:]:
        options = SinkhornOptions(eps=eps, tol=None, max_iter=WARM_ITERATIONS)
        fine = solve_iterations("kernel", single, a, b, options, f.float(), g.float())
        ok = (torch.isfinite(fine.f).all(-1) & torch.isfinite(fine.g).all(-1)).unsqueeze(-1)
        f, g = torch.where(ok, fine.f.double(), f), torch.where(ok, fine.g.double(), g)
    return (-g * spread.view(-1, 1)).reshape(-1)


def _bid_rounds(
    value: Tensor,
    prices: Tensor,
    eps: Tensor,
    row_group: Tensor,
    offset: Tensor,
    owner: Tensor,
    column: Tensor,
    n: int,
    lists: dict[int, tuple[list[int], list[float], float]],
) -> None:
    """Jacobi auction rounds until every row holds a column; updates ``prices``, ``owner``, ``column`` in place."""
    free = (column < 0).nonzero().squeeze(1)
    lowest = torch.full_like(prices, -torch.inf)
    nobody = torch.full_like(owner, -1)
    while free.numel():
        if free.numel() <= SERIAL_BIDDERS:
            _serial_bids(free.tolist(), value, prices, eps, owner, column, n, lists)
            return
        start = offset[free]
        grid = prices.view(-1, n)  # (G, n) prices per problem
        gains = value[free].sub_(grid if grid.shape[0] == 1 else grid[row_group[free]])  # a copy: in place
        top, best = gains.topk(2, dim=1)
        target = start + best[:, 0]
        bid = prices[target] + (top[:, 0] - top[:, 1]) + eps[row_group[free]]
        highest = lowest.scatter_reduce(0, target, bid, "amax")
        winning = bid == highest[target]
        rows, cols, bids = free[winning], target[winning], bid[winning]
        chosen = nobody.scatter_reduce(0, cols, rows, "amax")  # one winner per column on ties
        keep = chosen[cols] == rows
        rows, cols, bids = rows[keep], cols[keep], bids[keep]
        outbid = owner[cols]
        column[outbid[outbid >= 0]] = -1
        owner[cols] = rows
        column[rows] = cols - offset[rows]
        prices[cols] = bids
        free = (column < 0).nonzero().squeeze(1)


def _serial_bids(
    stack: list[int],
    value: Tensor,
    prices: Tensor,
    eps: Tensor,
    owner: Tensor,
    column: Tensor,
    n: int,
    lists: dict[int, tuple[list[int], list[float], float]],
) -> None:
    """Bids of the last few unassigned rows one at a time, each outbid row bidding next (the tail of a phase).

    Most rounds of a phase have one bidder whose bid displaces one other: a chain. Each bid is a few Python float
    operations on the row's list of :data:`CANDIDATES` best columns (flat columns, their values and ``bound``, the
    next best gain when the list was made), kept in ``lists`` for the whole auction. Prices only rise, so no
    column off the list gains more than ``bound``: while the list's best gain is at least ``bound`` it is the
    row's best column and ``max(second, bound)`` bounds the second best gain from above (the bid may be smaller
    than the exact one, and still leaves the row eps-complementary). Otherwise the list is made again.
    """
    owners, columns, price_list, eps_list = owner.tolist(), column.tolist(), prices.tolist(), eps.tolist()
    gains = torch.empty(n, dtype=prices.dtype, device=prices.device)
    # On the CPU each new price goes straight into the tensor's memory, a ctypes store (0.1 us) instead of a
    # select and a fill (2.3 us, a fifth of a bid); the tensor must hold it when a list is made again.
    memory = None
    if prices.device.type == "cpu" and prices.dtype == torch.float64 and prices.is_contiguous():
        memory = (ctypes.c_double * prices.numel()).from_address(prices.data_ptr())
    keep = min(CANDIDATES, n - 1)
    while stack:
        row = stack.pop()
        base = row - row % n
        listed = lists.get(row)
        while True:
            if listed is not None:
                first = second = -math.inf
                target = -1
                for col, val in zip(listed[0], listed[1], strict=True):
                    gain = val - price_list[col]
                    if gain > first:
                        first, second, target = gain, first, col
                    elif gain > second:
                        second = gain
                if first >= listed[2]:
                    break
            torch.sub(value[row], prices[base : base + n], out=gains)
            top, best = gains.topk(keep + 1)
            tops, cols = top.tolist(), [base + c for c in best.tolist()[:keep]]
            listed = (cols, [g + price_list[c] for g, c in zip(tops[:keep], cols, strict=True)], tops[keep])
            lists[row] = listed
        price = price_list[target] + (first - max(second, listed[2])) + eps_list[row // n]
        price_list[target] = price
        if memory is None:
            prices.select(0, target).fill_(price)
        else:
            memory[target] = price
        previous = owners[target]
        if previous >= 0:
            columns[previous] = -1
            stack.append(previous)
        owners[target] = row
        columns[row] = target - base
    owner.copy_(torch.tensor(owners, dtype=owner.dtype, device=owner.device))
    column.copy_(torch.tensor(columns, dtype=column.dtype, device=column.device))
