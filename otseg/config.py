"""Model configuration: a frozen dataclass of plain values, and a registry of named presets (JSON files)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelConfig", "add_model_config", "check_config_keys", "get_model_config", "list_models"]

_CONFIG_DIR = Path(__file__).parent / "configs" / "models"


def check_config_keys(cls: type, values: dict[str, Any], what: str) -> None:
    """Raise a ValueError listing the valid keys when ``values`` has keys that ``cls`` (a dataclass) lacks."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; valid keys: {sorted(known)}.")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines an OTSeg network (weights come separately).

    Attributes:
        clip: open_clip architecture name (e.g. ``"ViT-B-16"``) or an inline open_clip config dict
            (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        quick_gelu: CLIP's activation; OpenAI's weights need QuickGELU (``True``).
        tokenizer: ``"clip"`` (open_clip's BPE tokenizer, shipped with the package) or
            ``{"type": "words", "vocab": [...]}`` for a word-level vocabulary (small CLIPs).
        image_size: Training crop size (512; Context 480); the positional embedding is stored for its grid.
        num_prompt_tokens: VPT tokens T (10; COCO-Stuff 100).
        deep_prompt_layers: Blocks receiving fresh prompts (``None``: all but the first).
        prompt_dropout: Dropout on the projected prompts.
        double_class_embedding: Reproduce the public code's doubled class embedding (needed for its checkpoints).
        num_prompts: Text templates per class N (6 for VOC, 8 otherwise).
        learnable_context: CoOp context vectors per prompt (0: the hand-written templates).
        decoder_layers: MPSA decoder layers (3).
        ffn_dim: Decoder feed-forward width (2048).
        dropout: Decoder dropout (0.1).
        eps: Sinkhorn regularisation of the MPS path and the decoder (0.05).
        sinkhorn_iters: Sinkhorn iteration cap (100).
        sinkhorn_tol: Sinkhorn tolerance (1e-6; ``None``: always ``sinkhorn_iters``).
        sinkhorn_grad: ``"unroll"`` (the paper) or ``"implicit"`` (memory independent of the iterations).
        ensemble_weight: Decoder weight in the OTSeg+ ensemble (0.5).
        seen_bias: Probability subtracted from seen classes at zero-shot inference (0.1).
        finetune_backbone: Train all CLIP image-encoder weights too (default: prompts only).
    """

    clip: str | dict[str, Any] = "ViT-B-16"
    quick_gelu: bool = True
    tokenizer: str | dict[str, Any] = "clip"
    image_size: int = 512
    num_prompt_tokens: int = 10
    deep_prompt_layers: int | None = None
    prompt_dropout: float = 0.1
    double_class_embedding: bool = True
    num_prompts: int = 6
    learnable_context: int = 0
    decoder_layers: int = 3
    ffn_dim: int = 2048
    dropout: float = 0.1
    eps: float = 0.05
    sinkhorn_iters: int = 100
    sinkhorn_tol: float | None = 1e-6
    sinkhorn_grad: str = "unroll"
    ensemble_weight: float = 0.5
    seen_bias: float = 0.1
    finetune_backbone: bool = False
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}.")
        if self.sinkhorn_grad not in ("unroll", "implicit"):
            raise ValueError(f"sinkhorn_grad must be 'unroll' or 'implicit', got {self.sinkhorn_grad!r}.")
        if not 0 <= self.ensemble_weight <= 1:
            raise ValueError(f"ensemble_weight must be in [0, 1], got {self.ensemble_weight}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        check_config_keys(cls, values, "model config")
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


_REGISTRY: dict[str, Path] = {}


def _scan() -> None:
    for path in sorted(_CONFIG_DIR.glob("*.json")):
        _REGISTRY.setdefault(path.stem, path)


def add_model_config(path: str | Path) -> None:
    """Register a JSON model config file (or every ``*.json`` in a folder) under its file stem."""
    path = Path(path)
    for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
        if not file.is_file():
            raise FileNotFoundError(f"model config {file} not found.")
        _REGISTRY[file.stem] = file


def list_models() -> list[str]:
    """Names of the registered model presets."""
    _scan()
    return sorted(_REGISTRY)


def get_model_config(name_or_path: str | Path) -> ModelConfig:
    """A registered preset by name, or a JSON file by path."""
    _scan()
    path = _REGISTRY.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        raise ValueError(
            f"unknown model config {str(name_or_path)!r}; registered: {list_models()} (or give a JSON path)."
        )
    values = json.loads(path.read_text())
    values.setdefault("name", path.stem)
    return ModelConfig.from_dict(values)
