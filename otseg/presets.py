"""One registry of presets: model configs, training runs and evaluation settings, as JSON files by name.

The packaged presets live in ``otseg/configs/<kind>/<name>.json`` for the kinds ``models``, ``train`` and ``eval``;
:func:`register_preset` adds a user's file (or every ``*.json`` of a folder) under its file stem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "list_presets", "load_preset", "read_json_file", "register_preset"]

KINDS = ("models", "train", "eval")
_PACKAGED = Path(__file__).parent / "configs"
_REGISTRY: dict[str, dict[str, Path]] = {kind: {} for kind in KINDS}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"preset kind must be one of {list(KINDS)}, got {kind!r}.")


def _presets(kind: str) -> dict[str, Path]:
    _check_kind(kind)
    found = {p.stem: p for p in sorted((_PACKAGED / kind).glob("*.json"))}
    return {**found, **_REGISTRY[kind]}


def read_json_file(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a JSON object from ``path``; a ValueError names the file and the problem (no traceback needed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found.")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; a {what} is a JSON object of settings.") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); a {what} is a JSON object "
            'such as {"iters": 1000}.'
        ) from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a {what} must be a JSON object of settings, found a {type(values).__name__}.")
    return values


def list_presets(kind: str) -> list[str]:
    """Names of the presets of ``kind`` (``"models"``, ``"train"`` or ``"eval"``).

    Example:
        >>> import otseg
        >>> {"ade", "coco-stuff", "context", "voc"} <= set(otseg.list_presets("eval"))  # the shipped test settings
        True
    """
    return sorted(_presets(kind))


def load_preset(kind: str, name: str) -> dict[str, Any]:
    """The values of preset ``name`` of ``kind``, as a dict.

    Raises:
        ValueError: unknown name (the message lists the known ones) or an unreadable file.

    Example:
        >>> import otseg
        >>> preset = otseg.load_preset("train", "voc-inductive")
        >>> preset["model"], preset["iters"]
        ('otseg-vit-b16', 20000)
    """
    presets = _presets(kind)
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; choose from {sorted(presets)}.")
    return read_json_file(presets[name], f"{kind} preset")


def register_preset(kind: str, path: str | Path) -> list[str]:
    """Register a JSON file, or every ``*.json`` in a folder, as presets of ``kind``; returns the names added.

    A preset's name is its file's stem; a registered name shadows a packaged one of the same name.

    Raises:
        ValueError: an unknown ``kind``. FileNotFoundError: a file that does not exist.

    Example:
        >>> import json, pathlib, tempfile, otseg
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> short = {**otseg.load_preset("train", "voc-inductive"), "iters": 500}
        >>> _ = (folder / "voc-short.json").write_text(json.dumps(short))
        >>> otseg.register_preset("train", folder)
        ['voc-short']
        >>> otseg.load_preset("train", "voc-short")["iters"]
        500
    """
    _check_kind(kind)
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"preset file {file} not found.")
        _REGISTRY[kind][file.stem] = file
    return [f.stem for f in files]
