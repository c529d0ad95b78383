"""Processes of a run: single process or ``torchrun`` (gloo on CPU, nccl on GPU), and a Ctrl-C agreed by all."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["Processes", "StopRequest", "setup_processes"]


@dataclass
class Processes:
    """This process's place in the run and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files and prints."""
        return self.rank == 0

    def all_agree(self, flag: bool, *, any_of: bool = True) -> bool:
        """``flag`` combined over the processes: true if any (``any_of``) or all of them hold it."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX if any_of else dist.ReduceOp.MIN)
        return bool(value.item())


def setup_processes(device: str) -> Processes:
    """Join the ``torchrun`` process group when launched by it (``RANK`` set), pick the device.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but CUDA is not available on this machine; use device=cpu.")
    if "RANK" not in os.environ:
        return Processes(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    where = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(where)
    return Processes(rank, world, local, where)


class StopRequest:
    """SIGINT handling: the first signal asks for a stop at the next step boundary, the second interrupts."""

    def __init__(self, procs: Processes) -> None:
        self.procs, self.flag, self.previous = procs, False, None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        if self.procs.main:
            print("\nstopping after this step (Ctrl-C again to interrupt at once)", flush=True)

    def requested(self) -> bool:
        """Whether any process was asked to stop (agreed across processes, so all stop at the same step)."""
        return self.procs.all_agree(self.flag)
