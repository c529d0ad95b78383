"""A training run as plain values (:class:`TrainConfig`, presets in ``otseg/configs/train/``) and its schedule."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from otseg.config import ModelConfig, settings_from_dict, spec
from otseg.predictor import InferenceSettings

__all__ = ["RESUME_FREE_KEYS", "TrainConfig", "lr_at"]


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Every key can be set with ``otseg train --set key=value``; ``--list-keys`` lists them."""

    # model
    model: str = spec("otseg-vit-b16", "model preset name or JSON config file")
    model_overrides: dict[str, Any] = spec({}, 'model config changes, e.g. {"sinkhorn": {"grad": "implicit"}}')
    clip_weights: str | None = spec(None, "CLIP weights file or local-dir:<folder>")
    allow_random_clip: bool = spec(False, "train with a randomly initialised CLIP when clip_weights is null (tests)")
    init_from: str | None = spec(None, "a model file to start from (the inductive model for transductive runs)")
    # data
    dataset: str = spec("voc", "voc | context | coco-stuff | ade | folder | synthetic")
    data_root: str | None = spec(None, "dataset root folder (not needed for synthetic)")
    setting: Literal["inductive", "transductive", "fully"] = spec(
        "inductive", "inductive (seen classes only) | transductive (pseudo-labels) | fully"
    )
    synthetic: dict[str, Any] = spec({}, "synthetic-world options and image counts")
    strict_labels: bool = spec(True, "raise on label values outside the classes (false: ignore those pixels)")
    voc_aug: bool = spec(True, "VOC: train on the SBD-augmented labels when present")
    crop_size: int = spec(512, "training crop")
    resize_scale: tuple[int, int] = spec((2048, 512), "(long, short) base scale of the random rescale")
    ratio_range: tuple[float, float] = spec((0.5, 2.0), "random rescale ratio")
    cat_max_ratio: float = spec(0.75, "largest share of a crop one class may take")
    photometric: bool = spec(True, "photometric distortion")
    # optimisation
    iters: int = spec(20000, "optimizer steps")
    batch_size: int = spec(16, "global batch (all processes, all accumulation micro-steps)")
    grad_accum: int = spec(1, "micro-steps per optimizer step (each normalises its loss by its own masks)")
    lr: float = spec(2e-4, "learning rate of every trainable parameter")
    weight_decay: float = spec(0.01, "AdamW weight decay")
    norm_decay: bool = spec(
        True, "decay LayerNorm weights too (true: the public run, whose mmcv keys let decay reach them)"
    )
    warmup_iters: int = spec(1500, "linear warm-up steps")
    warmup_ratio: float = spec(1e-6, "warm-up starts at lr * ratio")
    min_lr: float = spec(1e-6, "poly schedule floor")
    poly_power: float = spec(0.9, "poly schedule power")
    grad_clip: float | None = spec(None, "max gradient norm (null: off, as the paper)")
    amp: Literal["auto", "bf16", "fp16", "off"] = spec("auto", "auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off")
    ignore_as_negative: bool = spec(True, "label-255 pixels as negatives of every class (the public code)")
    # evaluation
    eval_interval: int = spec(0, "steps between evaluations (0: at the end only)")
    eval_images: int | None = spec(None, "evaluate on the first images only")
    inference: InferenceSettings = spec(InferenceSettings(), "test resize and sliding window of evaluations")
    # run
    out_dir: str = spec("runs/otseg", "output folder: checkpoints, logs, curves")
    checkpoint_interval: int = spec(2000, "steps between checkpoints (0: at the end only)")
    log_interval: int = spec(50, "steps between log lines")
    seed: int = spec(0, "random seed")
    num_workers: int = spec(4, "data loader workers per process")
    device: Literal["auto", "cpu", "cuda"] = spec("auto", "auto | cpu | cuda")
    progress: bool = spec(True, "progress bar on a terminal (plain log lines otherwise)")

    def __post_init__(self) -> None:
        for name in ("iters", "batch_size", "grad_accum", "crop_size", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("eval_interval", "checkpoint_interval", "warmup_iters", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.setting == "transductive" and self.init_from is None:
            raise ValueError(
                "transductive training starts from an inductive model: set init_from=<model file>, e.g. "
                "runs/voc-inductive/model_step10000.safetensors."
            )
        # unknown keys or wrong types fail now, not after the data is loaded
        settings_from_dict(ModelConfig, self.model_overrides, "model_overrides", base=ModelConfig())

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys and wrong types with the key and what it expects."""
        return settings_from_dict(cls, values, "training config")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def dataset_options(self) -> dict[str, Any]:
        """Options of the dataset constructors (see :func:`otseg.data.build_sources`)."""
        return {"aug": self.voc_aug, "strict_labels": self.strict_labels}


RESUME_FREE_KEYS = frozenset(
    {
        "out_dir",
        "iters",
        "eval_interval",
        "eval_images",
        "inference",
        "checkpoint_interval",
        "log_interval",
        "num_workers",
        "device",
        "progress",
        "clip_weights",
        "data_root",
    }
)
"""Keys a resumed run may change; the others define the data stream and the optimisation, which must not."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): poly decay to ``min_lr`` with linear warm-up.

    Three cases: during warm-up, the poly value scaled by a factor rising linearly from ``warmup_ratio`` to 1;
    after it, ``(lr - min_lr) * (1 - step / iters) ** power + min_lr``; at the end, ``min_lr``.
    """
    poly = (cfg.lr - cfg.min_lr) * (1 - min(step, cfg.iters) / cfg.iters) ** cfg.poly_power + cfg.min_lr
    if step < cfg.warmup_iters:
        return poly * (1 - (1 - step / cfg.warmup_iters) * (1 - cfg.warmup_ratio))
    return poly
