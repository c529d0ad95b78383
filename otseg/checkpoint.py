"""Model files: our self-describing safetensors checkpoints, and the paper's mmsegmentation checkpoints.

Our format: one ``.safetensors`` file whose metadata holds the model config as JSON (``otseg_config``) plus
free-form JSON metadata (``otseg_meta``: class names, split, training step...). By default it stores every
weight, CLIP included, so it loads without the CLIP file; ``trainable_only=True`` stores only the trained
weights (prompts and head) and loading then needs the CLIP weights.

The paper's released checkpoints (``iter_*.pth``: mmcv ``{"meta", "state_dict", "optimizer"}``) load through an
explicit key map, :data:`PAPER_KEY_MAP`; every source key must be consumed (or be one of the documented unused
ones) and every shape must match.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from otseg.config import ModelConfig
from otseg.modeling.segmentor import OTSeg
from otseg.utils.io import atomic_write, describe_key_mismatch, read_state_dict

__all__ = [
    "PAPER_IGNORED_KEYS",
    "PAPER_KEY_MAP",
    "CheckpointError",
    "load_paper_checkpoint",
    "load_state",
    "map_paper_state_dict",
    "read_model_metadata",
    "save_model",
]

FORMAT = "otseg/1"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model or is not a checkpoint at all."""


def save_model(
    model: OTSeg,
    path: str | Path,
    *,
    trainable_only: bool = False,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) atomically (temporary file, then rename).

    Args:
        model: A model built by :func:`otseg.build.build_otseg` (it carries its ``config``).
        path: Output file.
        trainable_only: Store only parameters that require grad (prompts and head).
        meta: JSON-serialisable metadata (class names, split, step, metrics...).

    Returns:
        The path written.

    Example:
        >>> import tempfile, pathlib, otseg
        >>> model = otseg.build_otseg("otseg-tiny", allow_random_clip=True)
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = otseg.save_model(model, pathlib.Path(folder.name) / "model.safetensors", meta={"classes": ["cat"]})
        >>> config, meta, trainable_only = otseg.read_model_metadata(path)
        >>> config.name, meta, trainable_only
        ('otseg-tiny', {'classes': ['cat']}, False)
        >>> folder.cleanup()
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"model files are .safetensors, got {path.name}.")
    if model.config is None:
        raise ValueError("this OTSeg has no config (it was not built by build_otseg), so a model file cannot hold it.")
    state = model.state_dict()
    if trainable_only:
        keep = {name for name, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in keep}
    metadata = {
        "format": FORMAT,
        "otseg_config": json.dumps(model.config.to_dict()),
        "otseg_meta": json.dumps(meta or {}),
        "trainable_only": json.dumps(trainable_only),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_model_metadata(path: str | Path) -> tuple[ModelConfig, dict[str, Any], bool]:
    """``(config, meta, trainable_only)`` of one of our model files, without reading the tensors.

    Example:
        >>> import tempfile, pathlib, otseg
        >>> folder = tempfile.TemporaryDirectory()
        >>> model = otseg.build_otseg("otseg-tiny", allow_random_clip=True)
        >>> path = otseg.save_model(model, pathlib.Path(folder.name) / "m.safetensors", trainable_only=True)
        >>> config, meta, trainable_only = otseg.read_model_metadata(path)  # the tensors are not read
        >>> config.name, trainable_only
        ('otseg-tiny', True)
        >>> folder.cleanup()
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or truncated?): {err}") from err
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an otseg model file (no '{FORMAT}' metadata). For the paper's .pth checkpoints use "
            "load_paper_checkpoint / `otseg eval --paper-checkpoint`."
        )
    config = ModelConfig.from_dict(json.loads(metadata["otseg_config"]))
    return config, json.loads(metadata.get("otseg_meta", "{}")), json.loads(metadata.get("trainable_only", "false"))


def load_state(model: OTSeg, state: dict[str, Tensor], source: str, *, partial: bool = False) -> None:
    """Load ``state`` into ``model`` strictly: every key known, every shape right, every weight given.

    ``partial`` allows a subset of the keys (e.g. the trained weights only).

    Raises:
        CheckpointError: naming ``source`` and the keys that do not fit.
    """
    problem = describe_key_mismatch(model.state_dict(), state, partial=partial)
    if problem is not None:
        raise CheckpointError(f"{source} does not fit this model ({problem}). Was it saved for another config?")
    model.load_state_dict(state, strict=not partial)


# --- the paper's checkpoints ----------------------------------------------------------------------------------

# (regex on the source key, replacement) applied in order; the first match wins.
PAPER_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^backbone\.", "image_encoder."),
    (r"^decode_head\.q_proj\.", "head.descriptor.q_proj."),
    (r"^decode_head\.decoder_1\.layers\.(\d+)\.", r"head.decoder.layers.\1."),
    (r"^text_encoder\.", "text_encoder."),
)

#: Keys the public code saves but never uses in a forward pass: the stock self-attention and first norm of each
#: torch TransformerDecoderLayer (OTSeg removes query self-attention), and the loss's class-weight buffer.
PAPER_IGNORED_KEYS: tuple[str, ...] = (
    r"^decode_head\.decoder_1\.layers\.\d+\.self_attn\.",
    r"^decode_head\.decoder_1\.layers\.\d+\.norm1\.",
    r"^decode_head\.loss_decode\.",
)


def map_paper_state_dict(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Rename a paper state dict to our keys: ``(mapped, ignored_keys, unknown_keys)``."""
    mapped, ignored, unknown = {}, [], []
    for key, value in state.items():
        if any(re.match(p, key) for p in PAPER_IGNORED_KEYS):
            ignored.append(key)
            continue
        for pattern, repl in PAPER_KEY_MAP:
            if re.match(pattern, key):
                mapped[re.sub(pattern, repl, key)] = value
                break
        else:
            unknown.append(key)
    return mapped, ignored, unknown


def load_paper_checkpoint(model: OTSeg, path: str | Path) -> dict[str, Any]:
    """Load one of the paper's released checkpoints into ``model`` (built with the matching config).

    Reads with ``torch.load(weights_only=True)``: no pickled code runs. Every key is either mapped (and must fit
    the model's shape) or one of :data:`otseg.checkpoint.PAPER_IGNORED_KEYS`; every model weight must be provided.

    Returns:
        A report: ``{"loaded": n, "ignored": [...]}``.

    Raises:
        CheckpointError: keys with no counterpart here, shapes that do not fit, or model weights left unset.

    Example:
        A checkpoint in the paper's layout (``backbone.``, ``decode_head.`` keys in an mmseg ``state_dict``), here
        written from a random tiny model:

        >>> import pathlib, tempfile, torch, otseg
        >>> source, _ = otseg.load_otseg("otseg-tiny", allow_random_clip=True)
        >>> ours_to_paper = {"image_encoder.": "backbone.", "head.descriptor.q_proj.": "decode_head.q_proj.",
        ...                  "head.decoder.layers.": "decode_head.decoder_1.layers."}
        >>> def paper_key(key):
        ...     prefix = next((p for p in ours_to_paper if key.startswith(p)), "")
        ...     return ours_to_paper.get(prefix, "") + key[len(prefix):]
        >>> state = {paper_key(k): v for k, v in source.state_dict().items()}
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "iter_20000.pth"
        >>> torch.save({"meta": {"iter": 20000}, "state_dict": state}, path)
        >>> target, _ = otseg.load_otseg("otseg-tiny", allow_random_clip=True)
        >>> otseg.load_paper_checkpoint(target, path)["loaded"] == len(state)
        True
    """
    state = read_state_dict(path)
    mapped, ignored, unknown = map_paper_state_dict(state)
    if unknown:
        raise CheckpointError(
            f"{path}: {len(unknown)} keys have no counterpart in this implementation, e.g. {unknown[:5]}. Is this an "
            "OTSeg (ViT) checkpoint?"
        )
    load_state(model, mapped, str(path))
    return {"loaded": len(mapped), "ignored": ignored}
