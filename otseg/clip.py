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
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = [
    "WordTokenizer",
    "build_clip",
    "build_tokenizer",
    "clip_architecture",
    "is_torchscript_archive",
    "load_clip_weights",
    "read_state_dict",
    "save_local_dir",
]

_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


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

    def __call__(self, texts: str | Sequence[str]) -> Tensor:
        """Token ids ``(S, L)`` int64."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [2, *(self.index.get(w, 1) for w in re.findall(r"[a-z]+", text.lower()))]
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
    ``module.`` prefix are unwrapped). TorchScript archives are refused unless ``allow_torchscript`` (see the
    module docstring).

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
                    "files, through load_clip_weights; convert other models to safetensors."
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
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        details = [
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}" if missing else "",
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}" if unexpected else "",
            "shape mismatch "
            + ", ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}" for k in wrong[:5])
            if wrong
            else "",
        ]
        raise ValueError(
            f"{path} does not match the CLIP architecture: "
            + "; ".join(d for d in details if d)
            + ". Check the model config's 'clip' entry against the weights."
        )
    model.load_state_dict(state, strict=True)


def save_local_dir(model: CLIP, folder: str | Path, architecture: dict[str, Any], quick_gelu: bool) -> Path:
    """Write ``model`` as an open_clip ``local-dir:`` folder (config JSON + safetensors); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": {**architecture, "quick_gelu": quick_gelu}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder
