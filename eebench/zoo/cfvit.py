"""CF-ViT (Chen et al., AAAI 2023): a coarse pass over few large patches, then a fine pass.

"Coarse-to-Fine Vision Transformer": most images are recognised from a
short sequence of coarse tokens, so every image is first classified by a
DeiT that sees it downsampled to half size (a 7x7 or 9x9 grid of 16-pixel
patches); only an image that the coarse pass does not settle pays for the
fine pass, in which the same Transformer (same weights, same head) re-reads
the most informative coarse patches at full resolution. Exit 0 is the
coarse pass, exit 1 the fine pass.

What the fine pass sees follows the official code (ChenMnZ/CF-ViT,
``deit/models_deit.py``, ``CFVisionTransformer.forward`` with
``informative_selection`` on, the evaluation mode of ``dynamic_inference.py``):

- The coarse input is the full image resized to half its side by bilinear
  interpolation with ``align_corners=True`` (the official evaluation script
  does this outside the model; we do it inside, so callers feed one image).
- Global class attention: the attention maps of encoders 4..12 of the coarse
  pass (0-based 3..11) are folded into an exponential moving average
  ``g = beta * g + (1 - beta) * attn``, starting from 0; the class-token row,
  averaged over heads, scores each coarse patch. Only that row is kept here,
  which gives bit-identical scores (the average is elementwise).
- The ``ceil(alpha * n)`` highest-scoring coarse patches (n = 49 or 81),
  in descending score order as ``torch.argsort`` gives them, are re-split
  into their 2x2 fine patches. The fine token sequence is: the class token,
  then the top-left fine patch of every chosen coarse patch (in score order),
  then all top-right, all bottom-left and all bottom-right ones, then the
  unchosen coarse patches in descending score order.
- Fine tokens are the patch embedding of the full-resolution image plus the
  feature-reuse term plus the fine position embedding (``pos_embed_list.1``).
  Feature reuse maps the coarse pass's final, normalised tokens through
  ``reuse_block`` (LayerNorm, then an MLP dim -> 4 dim -> dim), upsamples the
  coarse grid to the fine grid by nearest neighbour and adds the result to
  each fine patch; the class token gets no reuse term. Unchosen coarse
  patches enter the fine pass as they entered the coarse pass: their coarse
  patch embedding plus the coarse position embedding (``pos_embed_list.0``),
  not their coarse-pass outputs. The class token of the fine pass is the
  learnt ``cls_token`` plus the fine position embedding of slot 0.
- Both passes share ``patch_embed`` (a 16x16 convolution), ``blocks``,
  ``norm`` and ``head``.

The model is built for inference: dropout and stochastic depth (identities
in eval mode) are left out, and the official training-time path without
token selection is not reproduced. Module tree, keys and shapes equal the
official ``cf_deit_small`` (``tests/fixtures/cfvit_*_keys.json``), so its
checkpoints (``{'model': ..., 'flop': ..., ...}``) load strictly.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eebench.errors import InputError, InputTypeError
from eebench.zoo.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    MultiExitModel,
    check_keep,
    keep_rows,
)
from eebench.zoo.registry import register_model

PATCH = 16
# 0-based index of the first encoder whose attention enters the global class attention (the 4th).
EMA_START = 3
COARSE_GRIDS = (7, 9)

CHECKPOINT_NOTE = (
    "Keys equal the official ChenMnZ/CF-ViT cf_deit_small (cls_token, patch_embed.proj, "
    "pos_embed_list.0 (coarse) and .1 (fine), blocks.*, norm, head, reuse_block.0 (LayerNorm) and "
    "reuse_block.1.fc1/fc2). Official checkpoints are dicts {'model': state_dict, 'flop', "
    "'anytime_classification', 'budgeted_batch_classification'}; the loader takes 'model' and "
    "ignores the rest. A 7x7 checkpoint does not fit the 9x9 model (position embeddings of "
    "50/197 vs 82/325 tokens)."
)


class Mlp(nn.Module):
    """Two linear layers with a GELU between them (the DeiT feed-forward network)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention that also returns its softmax maps.

    The coarse pass needs the maps for the global class attention; the two
    matrix products are written out so that fvcore counts them.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out), attn


class Block(nn.Module):
    """A pre-norm Transformer encoder that returns its attention maps too."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.attn(self.norm1(x))
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return x, attn


class PatchEmbed(nn.Module):
    """16x16 patch convolution shared by the coarse (half-size) and fine (full-size) inputs."""

    def __init__(self, dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ReuseBlock(nn.Sequential):
    """Feature reuse: LayerNorm then an MLP, applied to the coarse pass's final tokens.

    A Sequential so that the keys are ``reuse_block.0.*`` and ``reuse_block.1.fc*``, as in
    the official model.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.LayerNorm(dim, eps=1e-6), Mlp(dim, hidden))


def fine_patch_index(coarse_index: torch.Tensor, coarse_grid: int) -> torch.Tensor:
    """Fine-grid indices of the 2x2 fine patches under each coarse patch.

    ``coarse_index`` (B, m) holds row-major indices into the coarse grid; the
    result (B, 4m) holds row-major indices into the fine grid (twice the
    side), ordered as the official ``get_index``: the top-left patch of every
    coarse patch first, then every top-right, bottom-left, bottom-right.
    """
    fine_grid = 2 * coarse_grid
    row = torch.div(coarse_index, coarse_grid, rounding_mode="floor")
    col = coarse_index - row * coarse_grid
    top_left = 2 * row * fine_grid + 2 * col
    return torch.cat(
        (top_left, top_left + 1, top_left + fine_grid, top_left + fine_grid + 1), dim=1
    )


def _take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, C), index (B, M) -> (B, M, C)."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class CFViT(MultiExitModel):
    """CF-ViT on a DeiT backbone: exit 0 after the coarse pass, exit 1 after the fine pass.

    ``alpha`` is the fraction of coarse patches re-split in the fine pass,
    ``beta`` the decay of the global class attention's moving average.
    ``last_selection`` holds the coarse indices chosen for re-splitting in the
    latest fine pass (B, ceil(alpha * n)), for visualisation; after a keep-mask
    (``iter_exits``) its rows are those of the samples that ran the fine pass.
    """

    exits = ["coarse", "fine"]

    def __init__(
        self,
        coarse_grid: int = 7,
        alpha: float = 0.5,
        beta: float = 0.99,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: int = 4,
        name: str = "",
    ) -> None:
        super().__init__()
        _check_int("coarse_grid", coarse_grid, 1)
        _check_int("num_classes", num_classes, 1)
        _check_int("embed_dim", embed_dim, 1)
        _check_int("num_heads", num_heads, 1)
        _check_int("mlp_ratio", mlp_ratio, 1)
        why = f" (the global class attention starts at encoder {EMA_START + 1})"
        _check_int("depth", depth, EMA_START + 1, why=why)
        if embed_dim % num_heads:
            raise InputError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.alpha = check_alpha(alpha)
        self.beta = check_beta(beta)
        self.coarse_grid = coarse_grid
        self.fine_grid = 2 * coarse_grid
        self.embed_dim = embed_dim
        n_coarse = coarse_grid * coarse_grid
        self.num_selected = math.ceil(self.alpha * n_coarse)
        image = PATCH * self.fine_grid

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed_list = nn.ParameterList(
            [
                nn.Parameter(torch.zeros(1, n_coarse + 1, embed_dim)),
                nn.Parameter(torch.zeros(1, 4 * n_coarse + 1, embed_dim)),
            ]
        )
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self.reuse_block = ReuseBlock(embed_dim, mlp_ratio * embed_dim)
        self.last_selection: torch.Tensor | None = None
        self._init_weights()

        self.config = ModelConfig(
            name=name,
            num_classes=num_classes,
            input_size=(3, image, image),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            interpolation="bicubic",
            crop_pct=0.875,
            arch={
                "coarse_grid": coarse_grid,
                "alpha": self.alpha,
                "beta": self.beta,
                "embed_dim": embed_dim,
                "depth": depth,
                "num_heads": num_heads,
                "mlp_ratio": mlp_ratio,
                "patch_size": PATCH,
                "coarse_input": PATCH * coarse_grid,
            },
            checkpoint_note=CHECKPOINT_NOTE,
            cost_convention="fvcore",
        )

    def _init_weights(self) -> None:
        # The official initialisation (truncated normal, std 0.02); skipped on the meta device.
        if self.cls_token.is_meta:
            return
        for p in (self.cls_token, *self.pos_embed_list):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ stages

    def _check_input(self, x: torch.Tensor) -> None:
        size = self.config.input_size
        if x.dim() != 4 or tuple(x.shape[1:]) != size:
            raise InputError(
                f"{self.config.name or 'CF-ViT'} takes images of shape (N, {size[0]}, {size[1]}, "
                f"{size[2]}) (config.input_size: the fine grid {self.fine_grid}x{self.fine_grid} "
                f"of {PATCH}-pixel patches; the coarse pass resizes to {PATCH * self.coarse_grid}"
                f" itself), got {tuple(x.shape)}; resize or crop to config.input_size"
            )

    def _tokens(self, image: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        """Class token + patch tokens of ``image``, plus ``pos_embed``."""
        x = self.patch_embed(image)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat((cls, x), dim=1) + pos_embed

    def coarse_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the coarse pass on full-size images ``x``.

        Returns the coarse input tokens (B, n+1, C), the normalised output
        tokens (B, n+1, C) and the global class attention over the coarse
        patches (B, n), averaged over heads.
        """
        side = PATCH * self.coarse_grid
        small = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=True)
        tokens = self._tokens(small, self.pos_embed_list[0])
        h = tokens
        ema = x.new_zeros(())  # replaced at EMA_START (depth > EMA_START is checked)
        for i, blk in enumerate(self.blocks):
            h, attn = blk(h)
            row = attn[:, :, 0, :]  # class-token row of every head
            if i == EMA_START:
                ema = (1 - self.beta) * row
            elif i > EMA_START:
                ema = self.beta * ema + (1 - self.beta) * row
        cls_attn = ema.mean(dim=1)[:, 1:]
        return tokens, self.norm(h), cls_attn

    def fine_tokens(
        self,
        x: torch.Tensor,
        coarse_tokens: torch.Tensor,
        coarse_out: torch.Tensor,
        cls_attn: torch.Tensor,
    ) -> torch.Tensor:
        """The fine pass's input sequence (see the module docstring for its order)."""
        b = x.shape[0]
        c = self.embed_dim
        g = self.coarse_grid
        fine = self.patch_embed(x)  # (B, 4n, C)
        reuse = self.reuse_block(coarse_out[:, 1:])
        reuse = reuse.transpose(1, 2).reshape(b, c, g, g)
        reuse = F.interpolate(reuse, size=(2 * g, 2 * g), mode="nearest")
        fine = fine + reuse.flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(b, -1, -1)
        fine = torch.cat((cls, fine), dim=1) + self.pos_embed_list[1]

        order = torch.argsort(cls_attn, dim=1, descending=True)
        chosen = order[:, : self.num_selected]
        rest = order[:, self.num_selected :]
        self.last_selection = chosen
        fine_index = fine_patch_index(chosen, g) + 1
        keep = torch.cat((torch.zeros_like(fine_index[:, :1]), fine_index), dim=1)
        return torch.cat((_take(fine, keep), _take(coarse_tokens, rest + 1)), dim=1)

    def _classify(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h[:, 0])

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        self._check_input(x)
        coarse_tokens, coarse_out, cls_attn = self.coarse_pass(x)
        keep = check_keep((yield 0, self._classify(coarse_out)), x.shape[0])
        # The fine pass re-reads the image and reads three products of the coarse pass (input
        # tokens, output tokens, global class attention), all batch-first: only the samples
        # that go on are carried into it.
        x, coarse_tokens, coarse_out, cls_attn = keep_rows(
            (x, coarse_tokens, coarse_out, cls_attn), keep
        )
        h = self.fine_tokens(x, coarse_tokens, coarse_out, cls_attn)
        for blk in self.blocks:
            h, _ = blk(h)
        yield 1, self._classify(self.norm(h))


def _check_int(name: str, value: Any, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}{why}, got {value!r}")


def check_alpha(alpha: Any) -> float:
    """The fraction of coarse patches to re-split: a number in (0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1:
        raise InputError(
            f"alpha (fraction of coarse patches re-split in the fine pass) must be a number "
            f"in (0, 1], e.g. 0.5 as in the paper; got {alpha!r}"
        )
    return float(alpha)


def check_beta(beta: Any) -> float:
    """The decay of the global class attention's moving average: a number in [0, 1)."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 1:
        raise InputError(
            f"beta (decay of the global class attention's moving average) must be a number "
            f"in [0, 1), e.g. 0.99 as in the paper; at 1 the average never leaves 0; "
            f"got {beta!r}"
        )
    return float(beta)


def _deit_small(name: str, coarse_grid: int, num_classes: int, overrides: dict[str, Any]) -> CFViT:
    if "coarse_grid" in overrides:
        raise InputError(
            f"{name} fixes coarse_grid={coarse_grid}; use "
            + " or ".join(f"{n!r}" for n in ("cfvit_deit_small", "cfvit_deit_small_9x9"))
            + " for the other grid"
        )
    known = {"alpha", "beta", "embed_dim", "depth", "num_heads", "mlp_ratio"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputTypeError(
            f"{name} got unknown options {unknown}; it accepts num_classes and {sorted(known)}"
        )
    return CFViT(coarse_grid=coarse_grid, num_classes=num_classes, name=name, **overrides)


@register_model
def cfvit_deit_small(num_classes: int = 1000, **overrides: Any) -> CFViT:
    """CF-ViT (DeiT-S), coarse grid 7x7 (112-pixel coarse input), fine input 224."""
    return _deit_small("cfvit_deit_small", 7, num_classes, overrides)


@register_model
def cfvit_deit_small_9x9(num_classes: int = 1000, **overrides: Any) -> CFViT:
    """CF-ViT (DeiT-S), coarse grid 9x9 (144-pixel coarse input), fine input 288."""
    return _deit_small("cfvit_deit_small_9x9", 9, num_classes, overrides)
