"""CLIP ViT image encoder with deep visual prompts (VPT-deep), giving dense and global embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from otkit import unit_vectors

__all__ = ["PromptedVisionTransformer", "check_block", "prompted_block", "resize_positional_embedding"]


def resize_positional_embedding(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bilinearly resize a ViT positional table ``(1 + g*g, W)`` to ``(1 + h*w, W)`` for ``grid = (h, w)``.

    The class-token row is kept; the patch rows are treated as a square ``g x g`` image (``align_corners=False``).
    """
    cls, patches = pos[:1], pos[1:]
    side = math.isqrt(patches.shape[0])
    if side * side != patches.shape[0]:
        raise ValueError(f"positional embedding has {patches.shape[0]} patch rows, not a square grid.")
    if (side, side) == tuple(grid):
        return pos
    image = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    image = F.interpolate(image.float(), size=grid, mode="bilinear", align_corners=False).to(pos.dtype)
    return torch.cat([cls, image.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def check_block(block: nn.Module) -> None:
    """Refuse a transformer block that :func:`prompted_block` cannot run (it reads the block's modules directly)."""
    attn = getattr(block, "attn", None)
    usable = (
        isinstance(attn, nn.MultiheadAttention)
        and attn.in_proj_weight is not None
        and attn.in_proj_bias is not None
        and attn.batch_first
        and all(hasattr(block, name) for name in ("ln_1", "ln_2", "mlp", "ls_1", "ls_2"))
        and not hasattr(block, "ln_1_kv")
    )
    if not usable:
        raise ValueError(
            f"{type(block).__name__} is not an open_clip ResidualAttentionBlock with a batch-first "
            "nn.MultiheadAttention (packed in-projection) self-attention; use a standard CLIP ViT tower."
        )


def prompted_block(block: nn.Module, x: Tensor, prompts: Tensor, prompt_outputs: bool) -> tuple[Tensor, Tensor]:
    """One open_clip ``ResidualAttentionBlock`` over the tokens ``[x_0, prompts, x_1..]``, fused attention.

    Computes what ``block(torch.cat([x[:, :1], prompts, x[:, 1:]], 1))`` computes, with the block's own modules and
    parameters, but attention runs as one fused ``scaled_dot_product_attention``, and without ``prompt_outputs``
    the prompt tokens serve only as keys and values: their own outputs (replaced by the next block's prompts, or
    unused after the last block) are not computed.

    Args:
        block: An open_clip ``ResidualAttentionBlock`` (checked by :func:`check_block`).
        x: ``(B, 1 + M, W)`` class (or first) token and patch tokens.
        prompts: ``(B, T, W)`` prompt tokens.
        prompt_outputs: Also compute the prompt tokens' outputs.

    Returns:
        ``(B, 1 + M, W)`` outputs of ``x``'s tokens, and the prompts' ``(B, T, W)`` outputs (the input prompts
        when not ``prompt_outputs``).
    """
    attn = block.attn
    t, heads = prompts.shape[1], attn.num_heads
    tokens = torch.cat([prompts, x], dim=1)  # (B, T + 1 + M, W): attention does not depend on the key order
    first = 0 if prompt_outputs else t  # the first token whose output is computed
    y = block.ln_1(tokens)
    width = y.shape[-1]
    q = F.linear(y[:, first:], attn.in_proj_weight[:width], attn.in_proj_bias[:width])
    kv = F.linear(y, attn.in_proj_weight[width:], attn.in_proj_bias[width:])  # (B, L, 2W)
    k, v = kv.unflatten(-1, (2, heads, -1)).permute(2, 0, 3, 1, 4)  # (B, heads, L, W / heads) each
    q = q.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, L_q, W / heads)
    drop = attn.dropout if block.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop).transpose(1, 2).flatten(2)  # (B, L_q, W)
    out = tokens[:, first:] + block.ls_1(attn.out_proj(out))
    out = out + block.ls_2(block.mlp(block.ln_2(out)))
    if prompt_outputs:
        return out[:, t:], out[:, :t]
    return out, prompts


class PromptedVisionTransformer(nn.Module):
    """A CLIP ViT whose frozen blocks read learnable prompt tokens (VPT-deep), as OTSeg's image encoder.

    Token sequence: ``[CLS, P_1..P_T, patches]``. The ``T`` prompt tokens are inserted after the class token at the
    input (after ``ln_pre``, without positional embedding) and replaced by fresh ones before each of the blocks
    ``1 .. deep_layers``; every prompt passes the shared ``prompt_proj`` Linear and dropout. The final tokens pass
    ``prompt_norm`` (LayerNorm, eps 1e-6), CLIP's ``ln_post`` and ``proj``. The positional embedding is stored for
    the training grid and bilinearly resized at run time to any input grid.

    Args:
        visual: An open_clip ``VisionTransformer`` whose modules are taken over (conv1, class and positional
            embeddings, ln_pre, blocks, ln_post, proj).
        image_size: Training input size; the stored positional embedding is resized to its patch grid.
        num_tokens: Prompt tokens T (10; 100 for COCO-Stuff).
        deep_layers: Blocks that receive fresh prompts (``None``: all but the first, i.e. ``layers - 1``).
        prompt_dropout: Dropout on projected prompts.
        double_class_embedding: Add the class embedding a second time to the class token, as OTSeg's public code
            does (its checkpoints were trained that way).
    """

    def __init__(
        self,
        visual: VisionTransformer,
        *,
        image_size: int = 512,
        num_tokens: int = 10,
        deep_layers: int | None = None,
        prompt_dropout: float = 0.1,
        double_class_embedding: bool = True,
    ) -> None:
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or not isinstance(visual.proj, nn.Parameter):
            raise ValueError(
                "PromptedVisionTransformer needs a plain CLIP ViT (token or average pooling, projection matrix); "
                "attentional-pooling towers are not supported."
            )
        if visual.pool_type not in ("tok", "avg"):
            raise ValueError(f"unsupported pool_type {visual.pool_type!r}; use 'tok' (CLIP) or 'avg'.")
        self.pool_type = visual.pool_type
        self.patch_size = visual.patch_size[0]
        width = visual.conv1.out_channels
        layers = len(visual.transformer.resblocks)
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        grid = (image_size // self.patch_size, image_size // self.patch_size)
        self.positional_embedding = nn.Parameter(resize_positional_embedding(visual.positional_embedding.data, grid))
        self.ln_pre = visual.ln_pre
        self.transformer = visual.transformer
        for block in self.transformer.resblocks:
            check_block(block)
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.num_tokens = num_tokens
        self.deep_layers = layers - 1 if deep_layers is None else deep_layers
        if not 0 <= self.deep_layers < layers:
            raise ValueError(f"deep_layers must be in [0, {layers - 1}], got {self.deep_layers}.")
        self.double_class_embedding = double_class_embedding
        # VPT initialisation: uniform(-r, r) with r = sqrt(6 / (3 * patch^2 + width)).
        bound = math.sqrt(6.0 / (3 * self.patch_size**2 + width))
        self.prompt_embeddings = nn.Parameter(torch.empty(1, num_tokens, width).uniform_(-bound, bound))
        self.deep_prompt_embeddings = nn.Parameter(
            torch.empty(self.deep_layers, num_tokens, width).uniform_(-bound, bound)
        )
        self.prompt_proj = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.prompt_proj.weight, a=0, mode="fan_out")
        nn.init.zeros_(self.prompt_proj.bias)
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.prompt_norm = nn.LayerNorm(width, eps=1e-6)

    @property
    def output_dim(self) -> int:
        """Embedding width C of the outputs."""
        return self.proj.shape[1]

    def prompt_parameters(self) -> list[nn.Parameter]:
        """The parameters trained while CLIP stays frozen."""
        return [
            self.prompt_embeddings,
            self.deep_prompt_embeddings,
            *self.prompt_proj.parameters(),
            *self.prompt_norm.parameters(),
        ]

    def _prompts(self, tokens: Tensor, batch: int) -> Tensor:
        """Project ``(1 or T, T, W)`` prompt tokens and expand them over the batch: ``(B, T, W)``."""
        return self.prompt_dropout(self.prompt_proj(tokens)).expand(batch, -1, -1)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Encode normalised images.

        Args:
            images: ``(B, 3, H, W)``; H and W need not be multiples of the patch size (the border is dropped).

        Returns:
            Dense pixel embeddings ``(B, C, H // p, W // p)`` and the global embedding ``(B, C)`` (the class token,
            or the mean of the patch tokens for towers trained with average pooling), both L2-normalised over C.
        """
        x = self.conv1(images)  # (B, W, h, w)
        batch, width, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, W)
        pos = resize_positional_embedding(self.positional_embedding, (h, w)).to(x.dtype)
        cls = self.class_embedding.to(x.dtype) + pos[0]
        if self.double_class_embedding:
            cls = cls + self.class_embedding.to(x.dtype)
        x = self.ln_pre(torch.cat([cls.expand(batch, 1, width), x + pos[1:]], dim=1))  # (B, 1 + h*w, W)
        prompts = self._prompts(self.prompt_embeddings, batch).to(x.dtype)  # (B, T, W)
        blocks = self.transformer.resblocks
        for i, block in enumerate(blocks):
            if 1 <= i <= self.deep_layers:
                prompts = self._prompts(self.deep_prompt_embeddings[i - 1 : i], batch).to(x.dtype)
            # The prompt tokens' outputs are read only by a next block that gets no fresh prompts.
            x, prompts = prompted_block(block, x, prompts, self.deep_layers <= i < len(blocks) - 1)
        x = self.ln_post(self.prompt_norm(x)) @ self.proj  # (B, 1 + h*w, C)
        patches = x[:, 1:]  # (B, h*w, C)
        global_embedding = unit_vectors(x[:, 0] if self.pool_type == "tok" else patches.mean(1))
        dense = patches.transpose(1, 2).reshape(batch, -1, h, w)
        return unit_vectors(dense, dim=1), global_embedding
