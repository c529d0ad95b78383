"""CLIP ViT image encoder with deep visual prompts (VPT-deep), giving dense and global embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from otkit.multi_prompt import unit_vectors

__all__ = ["PromptedVisionTransformer", "resize_positional_embedding"]


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
        x = torch.cat([cls.expand(batch, 1, width), x + pos[1:]], dim=1)
        x = self.ln_pre(x)
        t = self.num_tokens
        x = torch.cat([x[:, :1], self._prompts(self.prompt_embeddings, batch).to(x.dtype), x[:, 1:]], dim=1)
        for i, block in enumerate(self.transformer.resblocks):
            if 1 <= i <= self.deep_layers:
                deep = self._prompts(self.deep_prompt_embeddings[i - 1 : i], batch).to(x.dtype)
                x = torch.cat([x[:, :1], deep, x[:, 1 + t :]], dim=1)
            x = block(x)
        x = self.ln_post(self.prompt_norm(x)) @ self.proj  # (B, 1 + T + h*w, C)
        patches = x[:, 1 + t :]  # (B, h*w, C)
        global_embedding = unit_vectors(x[:, 0] if self.pool_type == "tok" else patches.mean(1))
        dense = patches.transpose(1, 2).reshape(batch, -1, h, w)
        return unit_vectors(dense, dim=1), global_embedding
