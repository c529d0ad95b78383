"""Training state: what a checkpoint holds, and the checks that make a resumed run continue exactly.

A checkpoint holds the trained weights, the optimiser, every process's RNG and the config.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from otseg.engine.config import RESUME_FREE_KEYS, TrainConfig
from otseg.engine.distributed import Processes
from otseg.modeling.segmentor import OTSeg
from otseg.utils.io import atomic_write

__all__ = [
    "FORMAT",
    "check_resume_config",
    "checkpoint_bytes",
    "gather_rng",
    "load_training_state",
    "restore_rng",
    "save_training_state",
]

FORMAT = "otseg-train/1"


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG state: the CPU generator and, on CUDA, its own device's."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng(procs: Processes) -> list[dict[str, Any]]:
    """Every process's RNG state, indexed by rank (collective under DDP)."""
    local = _rng_state(procs.device)
    if procs.world == 1:
        return [local]
    states: list[Any] = [None] * procs.world
    dist.all_gather_object(states, local)
    return states


def restore_rng(states: list[dict[str, Any]], procs: Processes, source: Path) -> None:
    """Set this process's RNG from a checkpoint written by as many processes."""
    if len(states) != procs.world:
        raise ValueError(f"{source} was written by {len(states)} process(es); resume with as many.")
    state = states[procs.rank]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and procs.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], procs.device)


def checkpoint_bytes(model: OTSeg, full: bool) -> int:
    """Room the checkpoints need: trainable weights with Adam's two moments, the model file, twice (atomic)."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    everything = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 2 * (3 * trainable + (everything if full else trainable))


def save_training_state(
    path: Path,
    model: OTSeg,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    step: int,
    cfg: TrainConfig,
    best_hiou: float | None,
    rng: list[dict[str, Any]],
) -> None:
    """Write the checkpoint that :func:`load_training_state` reads (atomically)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = {
        "format": FORMAT,
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable},
        "optimizer": optimizer.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "rng": rng,  # one entry per process, by rank
        "config": cfg.to_dict(),
        "model_config": model.config.to_dict(),
        "best_hiou": best_hiou,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training checkpoint (tensors and plain values only; no pickled code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to unpickle: the message says how to go on
        raise RuntimeError(
            f"cannot resume from {path}: the checkpoint is unreadable ({err}). Delete it to start over, or restore "
            "an intact copy."
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RuntimeError(f"{path} is not an otseg training checkpoint.")
    return state


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to resume with other data or optimisation settings; warn when the schedule length changes."""
    current = json.loads(json.dumps(cfg.to_dict()))
    saved = json.loads(json.dumps(saved))
    changed = sorted(k for k in current if k not in RESUME_FREE_KEYS and current[k] != saved.get(k))
    if changed:
        before = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
        raise ValueError(
            f"cannot resume: {changed} differ from the checkpoint ({before}). Resume with the same values, or start "
            "a new run in another out_dir."
        )
    if current["iters"] != saved["iters"]:
        warnings.warn(
            f"resuming with iters={current['iters']} instead of {saved['iters']}: the learning-rate schedule changes "
            "from here on.",
            stacklevel=3,
        )
