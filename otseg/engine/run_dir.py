"""The output folder of a training run: one run per folder, locked while it trains, checked before it starts.

A folder holds one run: its checkpoint, model files, metrics log and curves. A second run into it is refused
unless it continues the first (``resume``) or replaces it (``overwrite``, which deletes the first run's files).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT", "MetricsLog", "RunFolderError", "acquire_lock", "check_output_dir", "prepare_run_folder"]

CHECKPOINT = "checkpoint.pt"
_RUN_FILES = (CHECKPOINT, "metrics.jsonl", "config.json", "model.safetensors", "training_curves.png")
_RUN_GLOBS = ("model_step*.safetensors",)


class RunFolderError(RuntimeError):
    """The output folder cannot take this run; the message says what to do."""


def _run_files(out: Path) -> list[Path]:
    found = [out / name for name in _RUN_FILES if (out / name).exists()]
    return found + sorted(p for pattern in _RUN_GLOBS for p in out.glob(pattern))


def prepare_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that ``out`` can take this run: refuse to mix two runs, refuse a resume with nothing to resume.

    With ``overwrite`` the files of an earlier run are deleted (nothing else in the folder is touched).

    Raises:
        RunFolderError: naming ``--resume`` and ``--overwrite``.
    """
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in the folder and --overwrite replaces it: choose one.")
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise RunFolderError(
                f"nothing to resume in {out}: there is no {CHECKPOINT}. Start a new run without --resume, or give the "
                "--out-dir of the run to continue."
            )
        return
    earlier = _run_files(out) if out.is_dir() else []
    if not earlier:
        return
    if overwrite:
        for path in earlier:
            path.unlink()
        return
    names = ", ".join(p.name for p in earlier[:4]) + (" ..." if len(earlier) > 4 else "")
    raise RunFolderError(
        f"{out} already holds a training run ({names}). Continue it with --resume, replace it with --overwrite, or "
        "choose another --out-dir."
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(out: Path) -> Path:
    """Claim ``out`` for this run: a lock file with pid and host; a live owner makes this fail."""
    lock = out / ".lock"
    host = socket.gethostname()
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = lock.read_text().split()
        pid, owner_host = (int(owner[0]), owner[1]) if len(owner) == 2 else (-1, "")
        if owner_host == host and pid > 0 and not _pid_alive(pid):
            lock.unlink()  # a crashed run left it
            return acquire_lock(out)
        raise RunFolderError(
            f"{out} is in use by another training run (pid {pid} on {owner_host or '?'}). Use another out_dir, or "
            f"delete {lock} if that run is gone."
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()} {host}\n")
    return lock


def check_output_dir(out: Path, needed_bytes: int) -> None:
    """Fail before training when ``out`` cannot be written or lacks room for the checkpoints."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as err:
        raise RunFolderError(f"cannot write to the output folder {out}: {err}. Choose a writable out_dir.") from err
    free = shutil.disk_usage(out).free
    if free < needed_bytes:
        raise RunFolderError(
            f"only {free / 2**20:.0f} MiB free under {out}; checkpoints need about {needed_bytes / 2**20:.0f} MiB. "
            "Free some space or choose another out_dir."
        )


class MetricsLog:
    """Append-only JSONL metrics log; on resume, entries after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            path.write_text("")
        elif path.is_file():
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resume_step]
            path.write_text("".join(f"{ln}\n" for ln in kept))

    def write(self, **entry: Any) -> None:
        """Append one entry (a JSON object per line)."""
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
