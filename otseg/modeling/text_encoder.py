"""Frozen CLIP text encoder: class names x prompt templates -> class embeddings ``(K, N, C)``.

Embeddings of a class list are constants of the weights, the class names and the templates, so they are cached
under a key made of all three: in memory (the last few class lists) and, optionally, on disk. Optionally,
learnable context vectors (CoOp) replace the hand-written templates.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from otseg.data.classes import check_class_names
from otseg.utils.io import atomic_write

__all__ = ["RECENT_CLASS_LISTS", "TEMPLATES", "LearnableContext", "TextEncoder", "templates_for"]

RECENT_CLASS_LISTS = 8  # class lists whose embeddings a text encoder keeps in memory

# OTSeg's hand-written prompts: the first six for PASCAL VOC, all eight for PASCAL Context and COCO-Stuff.
TEMPLATES = (
    "a photo of a {}.",
    "a portrait of a {}.",
    "a part of a {}.",
    "a segment of a {}.",
    "a photo of small {}.",
    "a photo of medium {}.",
    "a photo of large {}.",
    "a background of a {}.",
)


def templates_for(num_prompts: int) -> tuple[str, ...]:
    """The first ``num_prompts`` (1..8) of the paper's templates."""
    if not 1 <= num_prompts <= len(TEMPLATES):
        raise ValueError(f"num_prompts must be in 1..{len(TEMPLATES)} for the built-in templates, got {num_prompts}.")
    return TEMPLATES[:num_prompts]


def _tokenize_classes(
    tokenizer: Callable[[list[str]], Tensor], names: Sequence[str], templates: Sequence[str]
) -> Tensor:
    """Token ids ``(K * N, L)`` of every (class, template) prompt, with a check of the context length.

    Prompts longer than the text encoder's context are cut (CLIP's tokenizers keep the end-of-text token): that
    warns, naming the classes; two classes whose prompts become identical after the cut would share one embedding,
    which is an error.
    """
    texts = [t.format(n) for n in names for t in templates]
    tokens = tokenizer(texts)
    length = tokens.shape[-1]
    encode = getattr(tokenizer, "encode", None)
    if encode is not None:
        cut = sorted({names[i // len(templates)] for i, text in enumerate(texts) if len(encode(text)) + 2 > length})
        if cut:
            warnings.warn(
                f"{len(cut)} class name(s) make prompts longer than the text encoder's {length} tokens and are cut: "
                f"{cut[:5]}{' ...' if len(cut) > 5 else ''}. Shorten them to keep every word.",
                stacklevel=3,
            )
            per_class = tokens.reshape(len(names), -1)
            _, first, counts = torch.unique(per_class, dim=0, return_inverse=True, return_counts=True)
            clashes = [names[i] for i in range(len(names)) if counts[first[i]] > 1]
            if clashes:
                raise ValueError(
                    f"class names {clashes[:6]} become identical once cut to {length} tokens and would get the same "
                    "embedding; shorten or reword them so that they differ early."
                )
    return tokens


class TextEncoder(nn.Module):
    """The text tower of an open_clip CLIP, frozen, with the paper's prompt templates and an embedding cache.

    Args:
        clip: An open_clip ``CLIP``; its text modules are taken over (token and positional embeddings,
            transformer, ln_final, text_projection).
        tokenizer: Callable mapping a list of strings to token ids ``(S, context_length)`` (open_clip's
            tokenizers); the end-of-text token must have the largest id in each row (CLIP's pooling).
        templates: Prompt templates with one ``{}`` for the class name; N = ``len(templates)``.
        cache_dir: Folder for cached embeddings (``None``: no disk cache).
    """

    def __init__(
        self,
        clip: CLIP,
        tokenizer: Callable[[list[str]], Tensor],
        templates: Sequence[str] = TEMPLATES,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        for template in templates:
            if template.count("{}") != 1:
                raise ValueError(f"each template needs exactly one '{{}}' for the class name, got {template!r}.")
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._recent: OrderedDict[str, Tensor] = OrderedDict()  # cache key -> (K, N, C), most recent last
        self.requires_grad_(False)

    @property
    def output_dim(self) -> int:
        """Embedding width C."""
        proj = self.text_projection
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    def encode_tokens(self, tokens: Tensor, token_embeddings: Tensor | None = None) -> Tensor:
        """Encode token ids ``(S, L)`` (optionally with replaced input embeddings ``(S, L, W)``) to ``(S, C)``."""
        x = self.token_embedding(tokens) if token_embeddings is None else token_embeddings
        x = x + self.positional_embedding.to(x.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # end-of-text token
        proj = self.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def fingerprint(self) -> str:
        """A short digest of the weights (output projection, final norm, positional embedding)."""
        digest = hashlib.sha256()
        for t in (self.text_projection, self.ln_final.weight, self.ln_final.bias, self.positional_embedding):
            t = t.weight if isinstance(t, nn.Linear) else t
            digest.update(t.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def _cache_key(self, names: list[str]) -> str:
        return hashlib.sha256("\n".join([self.fingerprint(), *self.templates, "--", *names]).encode()).hexdigest()

    @torch.no_grad()
    def encode_classes(self, class_names: Sequence[str], batch_size: int = 256) -> Tensor:
        """Embeddings of every (class, template) pair, L2-normalised, not averaged: ``(K, N, C)`` float32.

        The last :data:`RECENT_CLASS_LISTS` class lists are kept in memory, and with a ``cache_dir`` every list is
        kept on disk; the key covers the weights' fingerprint, so changed weights are encoded afresh.
        """
        names = list(check_class_names(class_names))
        key = self._cache_key(names)
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        path = None if self.cache_dir is None else self.cache_dir / f"text-{key[:24]}.safetensors"
        if path is not None and path.is_file():
            emb = load_file(str(path))["embeddings"]
        else:
            emb = self._encode(names, batch_size)
            if path is not None:  # processes may race on a cold cache: each publishes a whole file
                atomic_write(path, lambda tmp: save_file({"embeddings": emb.contiguous()}, str(tmp)))
        self._recent[key] = emb
        while len(self._recent) > RECENT_CLASS_LISTS:
            self._recent.popitem(last=False)
        return emb

    def _encode(self, names: list[str], batch_size: int) -> Tensor:
        tokens = _tokenize_classes(self.tokenizer, names, self.templates)
        device = self.token_embedding.weight.device
        chunks = [
            self.encode_tokens(tokens[i : i + batch_size].to(device)).float() for i in range(0, len(tokens), batch_size)
        ]
        return F.normalize(torch.cat(chunks), dim=-1).reshape(len(names), len(self.templates), -1).cpu()


class LearnableContext(nn.Module):
    """CoOp-style learnable prompts: N sets of ``num_context`` vectors placed before each class name.

    The prompt text is ``"X X ... X {name}."`` with ``num_context`` placeholder words; their input embeddings are
    replaced by learnable vectors (one set per prompt n), and the frozen text encoder runs on every forward, so the
    embeddings ``(K, N, C)`` receive gradients.

    Args:
        encoder: The frozen :class:`TextEncoder`.
        num_prompts: N, the number of learned prompts per class.
        num_context: Learnable vectors per prompt.
    """

    def __init__(self, encoder: TextEncoder, num_prompts: int, num_context: int = 8) -> None:
        super().__init__()
        width = encoder.token_embedding.weight.shape[1]
        # A reference, not a submodule: the encoder belongs to the segmentor, and registering it twice would
        # duplicate its weights in state dicts.
        object.__setattr__(self, "encoder", encoder)
        self.num_context = num_context
        self.context = nn.Parameter(torch.randn(num_prompts, num_context, width) * 0.02)

    def forward(self, class_names: Sequence[str]) -> Tensor:
        """Embeddings ``(K, N, C)``, L2-normalised, differentiable with respect to the context vectors."""
        names = list(check_class_names(class_names))
        placeholder = " ".join(["X"] * self.num_context)
        tokens = self.encoder.tokenizer([f"{placeholder} {n}." for n in names]).to(self.context.device)  # (K, L)
        base = self.encoder.token_embedding(tokens)  # (K, L, W); position 0 is start-of-text
        n_prompts = self.context.shape[0]
        ctx = self.context.unsqueeze(0).expand(len(names), -1, -1, -1)  # (K, N, num_context, W)
        base = base.unsqueeze(1).expand(-1, n_prompts, -1, -1)
        embeds = torch.cat([base[:, :, :1], ctx.to(base.dtype), base[:, :, 1 + self.num_context :]], dim=2)
        flat_tokens = tokens.unsqueeze(1).expand(-1, n_prompts, -1).flatten(0, 1)
        out = self.encoder.encode_tokens(flat_tokens, embeds.flatten(0, 1))
        return F.normalize(out.float(), dim=-1).reshape(len(names), n_prompts, -1)
