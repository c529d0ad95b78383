"""Settings as frozen dataclasses of plain values, and the model configuration.

Every settings class here and in :mod:`otseg.engine.config` declares its fields with :func:`spec` (a default
and a one-line meaning) and is built from dicts (JSON presets, ``--set key=value``) by :func:`settings_from_dict`,
which rejects unknown keys and values of the wrong type with a message naming the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from otkit import SinkhornOptions
from otseg.presets import list_presets, load_preset, read_json_file

__all__ = [
    "ModelConfig",
    "describe_settings",
    "get_model_config",
    "list_models",
    "settings_from_dict",
    "spec",
]

S = TypeVar("S")


def spec(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with a default and a one-line meaning (shown by ``otseg train --list-keys``)."""
    if isinstance(default, (dict, list)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin is tuple:
        return f"[{', '.join(_type_name(a) for a in typing.get_args(hint))}]"
    if origin is dict:
        return "object"
    if hint is type(None):
        return "null"
    names = {int: "integer", float: "number", bool: "true/false", str: "text"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any, key: str, current: Any) -> Any:
    """``value`` checked (and converted where lossless) against the type ``hint`` of field ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arm, key, current)
            except ValueError:
                continue
    elif origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
    elif origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a, key, None) for v, a in zip(value, args, strict=True))
    elif origin is dict or hint is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):  # a partial dict updates the current value
            base = current.to_dict() if current is not None else {}
            return hint.from_dict({**base, **value})
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Any:
        return value
    raise ValueError(f"{key} expects {_type_name(hint)}, got {value!r}.")


def settings_from_dict(cls: type[S], values: Mapping[str, Any], what: str, base: S | None = None) -> S:
    """Build the settings dataclass ``cls`` from ``values`` (over ``base``, or the defaults).

    Raises:
        ValueError: for unknown keys (listing the valid ones) and values of the wrong type (naming the expected
            type), and whatever the class's own checks raise.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; valid keys: {sorted(fields)}.")
    hints = typing.get_type_hints(cls)
    converted = {}
    for key, value in values.items():
        current = getattr(base, key) if base is not None else _default(fields[key])
        converted[key] = _coerce(value, hints[key], key, current)
    if base is not None:
        return dataclasses.replace(base, **converted)
    return cls(**converted)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def describe_settings(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(key, type, default, meaning)`` of every field of a settings dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    return [(f.name, _type_name(hints[f.name]), _default(f), f.metadata.get("help", "")) for f in fields]


# Flat keys of model files written before the Sinkhorn settings were grouped, and their place in ``sinkhorn``.
_LEGACY_SINKHORN_KEYS = {"eps": "eps", "sinkhorn_iters": "max_iter", "sinkhorn_tol": "tol", "sinkhorn_grad": "grad"}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines an OTSeg network (weights come separately).

    Example:
        >>> import otseg
        >>> cfg = otseg.get_model_config("otseg-tiny")  # a preset name, or the path of a JSON model file
        >>> cfg.num_prompts, cfg.image_size, otseg.ModelConfig.from_dict(cfg.to_dict()) == cfg
        (3, 64, True)
    """

    clip: str | dict[str, Any] = spec(
        "ViT-B-16", "open_clip architecture name, or an inline config {embed_dim, vision_cfg, text_cfg}"
    )
    quick_gelu: bool = spec(True, "CLIP's activation; OpenAI's weights need QuickGELU")
    tokenizer: str | dict[str, Any] = spec(
        "clip", "'clip' (open_clip's BPE) or {'type': 'words', 'vocab': [...]} for small CLIPs"
    )
    image_size: int = spec(512, "training crop size; the positional embedding is stored for its grid")
    num_prompt_tokens: int = spec(10, "VPT-deep prompt tokens T (COCO-Stuff: 100)")
    deep_prompt_layers: int | None = spec(None, "blocks receiving fresh prompts (null: all but the first)")
    prompt_dropout: float = spec(0.1, "dropout on the projected prompts")
    double_class_embedding: bool = spec(
        True, "add the class embedding twice, as the public code (its checkpoints need it)"
    )
    num_prompts: int = spec(6, "text templates per class N (VOC 6, others 8)")
    learnable_context: int = spec(0, "CoOp context vectors per prompt (0: the hand-written templates)")
    decoder_layers: int = spec(3, "MPSA decoder layers")
    ffn_dim: int = spec(2048, "decoder feed-forward width")
    dropout: float = spec(0.1, "decoder dropout")
    sinkhorn: SinkhornOptions = spec(
        SinkhornOptions(eps=0.05, max_iter=100, tol=1e-6, check_every=1),
        "Sinkhorn settings of the MPS path and the decoder (otkit.SinkhornOptions: eps, max_iter, tol, grad, ...); "
        "convergence checked after every iteration, as the public code does, so solves stop as early as tol allows",
    )
    ensemble_weight: float = spec(0.5, "decoder weight in the OTSeg+ ensemble")
    seen_bias: float = spec(0.1, "probability subtracted from seen classes at zero-shot inference")
    finetune_backbone: bool = spec(False, "train all CLIP image-encoder weights too (default: prompts only)")
    name: str = spec("custom", "preset name, informative", compare=False)

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}.")
        if not 0 <= self.ensemble_weight <= 1:
            raise ValueError(f"ensemble_weight must be in [0, 1], got {self.ensemble_weight}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable); ``sinkhorn`` becomes a dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones.

        The flat keys of older model files (``eps``, ``sinkhorn_iters``, ``sinkhorn_tol``, ``sinkhorn_grad``) are
        read into ``sinkhorn``.
        """
        values = dict(values)
        legacy = {new: values.pop(old) for old, new in _LEGACY_SINKHORN_KEYS.items() if old in values}
        if legacy:
            values["sinkhorn"] = {**legacy, **values.get("sinkhorn", {})}
        return settings_from_dict(cls, values, "model config")

    def with_overrides(self, overrides: Mapping[str, Any]) -> ModelConfig:
        """A copy with some values changed; ``{"sinkhorn": {"grad": "implicit"}}`` changes only that option."""
        return settings_from_dict(type(self), overrides, "model config", base=self)


def list_models() -> list[str]:
    """Names of the model presets.

    Example:
        >>> import otseg
        >>> [name for name in otseg.list_models() if name.startswith("otseg-vit")]  # and otseg-tiny, the tests'
        ['otseg-vit-b16', 'otseg-vit-b16-coco', 'otseg-vit-b16-context']
    """
    return list_presets("models")


def get_model_config(name_or_path: str | Path) -> ModelConfig:
    """A model preset by name (see :mod:`otseg.presets`), or a JSON file by path.

    Example:
        >>> import otseg
        >>> config = otseg.get_model_config("otseg-vit-b16")
        >>> config.clip, config.image_size, config.num_prompts, config.sinkhorn.eps
        ('ViT-B-16', 512, 6, 0.05)
    """
    name = str(name_or_path)
    if name in list_models():
        values = load_preset("models", name)
    elif Path(name).suffix == ".json" or Path(name).is_file():
        values = read_json_file(name, "model config")
        name = Path(name).stem
    else:
        raise ValueError(f"unknown model config {name!r}; presets: {list_models()} (or give a JSON file).")
    values.setdefault("name", name)
    return ModelConfig.from_dict(values)
