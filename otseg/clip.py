"""CLIP models from open_clip: architectures, tokenizers and weights read from local files only.

Weight sources (``load_clip_weights``):

- an OpenAI TorchScript archive (``ViT-B-16.pt``): TorchScript archives are programs, so this path runs
  ``torch.jit.load`` and must only be used with files from a trusted source (it is the one exception to
  ``weights_only`` loading in this project). OpenAI's weights need ``quick_gelu=True``.
- an open_clip checkpoint ``.bin``/``.pth``/``.pt`` (read with ``torch.load(weights_only=True)``) or
  ``.safetensors``;
- ``local-dir:<folder>``: a folder holding ``open_clip_config.json`` and ``open_clip_model.safetensors`` (or
  ``open_clip_pytorch_model.bin``), as written by :func:`save_local_dir`.

Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP
from safetensors.torch import save_file
from torch import Tensor

from otseg.utils.io import atomic_write, describe_key_mismatch, is_torchscript_archive, read_state_dict

__all__ = [
    "WordTokenizer",
    "build_clip",
    "build_tokenizer",
    "clip_architecture",
    "load_clip_weights",
    "save_local_dir",
]


def clip_architecture(clip: str | dict[str, Any]) -> dict[str, Any]:
    """An open_clip architecture dict (``embed_dim``, ``vision_cfg``, ``text_cfg``) from a name or a dict."""
    if isinstance(clip, dict):
        missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(clip)
        if missing:
            raise ValueError(f"inline CLIP config lacks {sorted(missing)}.")
        return clip
    cfg = open_clip.get_model_config(clip)
    if cfg is None:
        raise ValueError(f"unknown open_clip architecture {clip!r}; known ones include {open_clip.list_models()[:12]}.")
    return cfg


def build_clip(clip: str | dict[str, Any], quick_gelu: bool) -> CLIP:
    """An open_clip ``CLIP`` with random weights for the architecture ``clip``."""
    cfg = clip_architecture(clip)
    extra = {k: v for k, v in cfg.items() if k not in ("embed_dim", "vision_cfg", "text_cfg", "custom_text")}
    if extra.pop("quick_gelu", quick_gelu) != quick_gelu:
        raise ValueError(
            f"the architecture {clip if isinstance(clip, str) else 'given'} sets quick_gelu={not quick_gelu}, the "
            f"model config quick_gelu={quick_gelu}; make them agree (OpenAI weights need QuickGELU)."
        )
    if cfg.get("custom_text") or "hf_model_name" in cfg.get("text_cfg", {}) or "timm_model_name" in cfg["vision_cfg"]:
        raise ValueError("only CLIPs with open_clip's own ViT image tower and text transformer are supported.")
    return CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], quick_gelu=quick_gelu, **extra)


class WordTokenizer:
    """A word-level tokenizer for small CLIPs: lowercase words split on non-letters, ``<sot> words <eot>``.

    Ids: 0 = padding, 1 = ``<unk>``, 2 = ``<sot>``, words from 3, and ``<eot>`` the largest id (CLIP pools the
    text at the argmax id).

    Args:
        vocab: The words.
        context_length: Sequence length L (longer texts are cut, keeping ``<eot>``).
    """

    def __init__(self, vocab: Sequence[str], context_length: int) -> None:
        self.vocab = list(dict.fromkeys(w.lower() for w in vocab))
        self.index = {w: i + 3 for i, w in enumerate(self.vocab)}
        self.eot = len(self.vocab) + 3
        self.context_length = context_length

    @property
    def vocab_size(self) -> int:
        """Embedding rows the text tower needs."""
        return self.eot + 1

    def encode(self, text: str) -> list[int]:
        """Word ids of ``text``, without the start and end tokens (like open_clip's ``SimpleTokenizer.encode``)."""
        return [self.index.get(w, 1) for w in re.findall(r"[a-z]+", text.lower())]

    def __call__(self, texts: str | Sequence[str]) -> Tensor:
        """Token ids ``(S, L)`` int64."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [2, *self.encode(text)]
            ids = [*ids[: self.context_length - 1], self.eot]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


def build_tokenizer(spec: str | dict[str, Any], context_length: int) -> Any:
    """The tokenizer of a model config: ``"clip"`` (open_clip's BPE) or ``{"type": "words", "vocab": [...]}``."""
    if spec == "clip":
        return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    if isinstance(spec, dict) and spec.get("type") == "words":
        return WordTokenizer(spec["vocab"], context_length)
    raise ValueError(f"tokenizer must be 'clip' or {{'type': 'words', 'vocab': [...]}}, got {spec!r}.")


def _resolve_local_dir(folder: Path) -> tuple[Path, dict[str, Any] | None]:
    if not folder.is_dir():
        raise FileNotFoundError(f"local-dir: folder {folder} not found.")
    config_file = folder / "open_clip_config.json"
    config = None
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_file} is not valid JSON ({err}).") from err
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name, config
    raise FileNotFoundError(
        f"no weights in {folder}: expected open_clip_model.safetensors or open_clip_pytorch_model.bin."
    )


def load_clip_weights(model: CLIP, source: str | Path, *, quick_gelu: bool | None = None) -> None:
    """Load CLIP weights from a local file or ``local-dir:<folder>`` into ``model``, strictly.

    The visual positional embedding is resized (bilinear) when the file was trained at another resolution.

    Args:
        model: The open_clip CLIP to fill.
        source: Path or ``local-dir:<folder>``.
        quick_gelu: The model's activation; an OpenAI TorchScript archive with ``quick_gelu=False`` is an error
            (those weights give wrong features with GELU).

    Raises:
        FileNotFoundError, ValueError: with the path and what was wrong (missing/unexpected keys, shapes).
    """
    source = str(source)
    if source.startswith("local-dir:"):
        path, config = _resolve_local_dir(Path(source[len("local-dir:") :]))
        torchscript = False
        recorded = (config or {}).get("model_cfg", {}).get("quick_gelu")
        if recorded is not None and quick_gelu is not None and recorded != quick_gelu:
            raise ValueError(
                f"{source} was saved with quick_gelu={recorded}, the model uses quick_gelu={quick_gelu}; "
                "its features would be wrong. Set quick_gelu in the model config to match."
            )
    else:
        path = Path(source)
        torchscript = path.is_file() and is_torchscript_archive(path)
    if torchscript and quick_gelu is False:
        raise ValueError(
            f"{path} is an OpenAI CLIP archive, trained with QuickGELU, but the model uses GELU; set quick_gelu=true."
        )
    state = read_state_dict(path, allow_torchscript=torchscript)
    target = model.state_dict()
    pos_key = "visual.positional_embedding"
    if pos_key in state and state[pos_key].shape != target[pos_key].shape:
        from otseg.modeling.image_encoder import resize_positional_embedding

        side = model.visual.grid_size
        state[pos_key] = resize_positional_embedding(state[pos_key], tuple(side))
    problem = describe_key_mismatch(target, state, limit=8)
    if problem is not None:
        raise ValueError(
            f"{path} does not match the CLIP architecture: {problem}. Check the model config's 'clip' entry against "
            "the weights."
        )
    model.load_state_dict(state, strict=True)


def save_local_dir(model: CLIP, folder: str | Path, architecture: dict[str, Any], quick_gelu: bool) -> Path:
    """Write ``model`` as an open_clip ``local-dir:`` folder (config JSON + safetensors); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": {**architecture, "quick_gelu": quick_gelu}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / "open_clip_model.safetensors", lambda tmp: save_file(state, str(tmp)))
    return folder
