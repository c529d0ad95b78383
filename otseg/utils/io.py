"""Files of weights: safe reading (no pickled code runs), atomic writing, and one report for keys that do not fit."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

__all__ = ["atomic_write", "describe_key_mismatch", "is_torchscript_archive", "read_state_dict"]

_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` through ``write(tmp_path)`` into a temporary file beside it, then rename it into place.

    Readers never see a half-written file, and processes racing on the same path each publish a whole one.
    The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def describe_key_mismatch(
    target: Mapping[str, Tensor], state: Mapping[str, Tensor], *, partial: bool = False, limit: int = 5
) -> str | None:
    """What keeps ``state`` from loading into a module whose state dict is ``target``; ``None`` if it fits.

    Args:
        target: The module's state dict.
        state: The tensors to load.
        partial: Whether ``state`` may hold only some of the keys (missing keys are then fine).
        limit: Keys named per kind of problem.

    Returns:
        ``"missing N keys, e.g. [...]; unexpected ...; shape mismatch: k file (..) vs model (..)"`` or ``None``.
    """
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    missing = [] if partial else sorted(set(target) - set(state))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys, e.g. {missing[:limit]}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys, e.g. {unexpected[:limit]}")
    if wrong:
        shapes = ", ".join(f"{k} file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}" for k in wrong[:limit])
        parts.append(f"shape mismatch: {shapes}")
    return "; ".join(parts) or None


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript zip archive (it carries code, not only tensors)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for name in archive.namelist())


def _unwrap(checkpoint: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (found {type(checkpoint).__name__}).")
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return checkpoint


def read_state_dict(path: str | Path, *, allow_torchscript: bool = False) -> dict[str, Tensor]:
    """Tensors of a checkpoint file on the CPU, never executing pickled code.

    safetensors files are read directly; torch files with ``weights_only=True`` (a ``state_dict`` entry and a
    ``module.`` prefix are unwrapped). TorchScript archives are programs: they are refused unless
    ``allow_torchscript`` (only OpenAI's CLIP weights are read from such files, see :mod:`otseg.clip`).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the file is corrupt, truncated or not a checkpoint, with the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found.")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        if is_torchscript_archive(path):
            if not allow_torchscript:
                raise ValueError(
                    f"{path} is a TorchScript archive (executable code). Only OpenAI CLIP weights are read from such "
                    "files, as CLIP weights; convert other models to safetensors."
                )
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
            return {k: v for k, v in state.items() if k not in _NON_WEIGHT_KEYS}
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, KeyError, SafetensorError) as err:
        raise ValueError(f"could not read {path}: the file is corrupt, truncated or not a checkpoint ({err}).") from err
    except Exception as err:  # torch.load(weights_only=True) raises UnpicklingError for code-carrying pickles
        if type(err).__name__ == "UnpicklingError":
            raise ValueError(
                f"{path} holds pickled objects beyond tensors; refusing to execute them. Save plain state dicts or "
                f"safetensors. ({err})"
            ) from err
        raise
    return _unwrap(checkpoint, path)
