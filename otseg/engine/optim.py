"""The optimiser and the numeric precision of a training run."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from otseg.modeling.segmentor import OTSeg

__all__ = ["build_optimizer", "precision"]


def build_optimizer(model: OTSeg, lr: float, weight_decay: float, norm_decay: bool = True) -> torch.optim.AdamW:
    """AdamW over the trainable parameters.

    ``norm_decay=True`` decays every trainable parameter, LayerNorms included: what the public OTSeg run does (its
    config asks for no decay on norms, but mmcv 1.4 applies only the longest matching custom key, and the
    ``backbone``/``decode_head`` keys win over ``norm``). ``False`` gives LayerNorm weights and biases no decay,
    what that config intended.
    """
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters(recurse=False)}
    trainable = model.trainable_parameters()
    decay = [p for p in trainable if norm_decay or id(p) not in norms]
    no_decay = [] if norm_decay else [p for p in trainable if id(p) in norms]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def precision(amp: str, device: torch.device) -> tuple[AbstractContextManager, torch.amp.GradScaler | None]:
    """The autocast context and, for fp16, the gradient scaler of ``amp`` (auto: bf16 on CUDA, off on CPU)."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    if amp == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler
