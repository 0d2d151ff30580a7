"""DVT (Wang et al., NeurIPS 2021): a cascade of three Transformers on 7x7, 10x10 and 14x14 tokens.

"Not all images are worth 16x16 words": an easy image is classified by a
Transformer that sees it as 7x7 tokens, and only a hard one pays for 10x10
and then 14x14 tokens. Each downstream Transformer reuses its predecessor's
work in two ways the paper ablates in its Table 6, and which we expose as
``feature_reuse`` and ``relation_reuse`` (both on by default, as in the
released models):

- feature reuse: every block of a downstream Transformer maps the previous
  Transformer's final tokens (before its last norm) through a small MLP
  (LayerNorm, ``dim -> 128 -> 48``), resamples the 48-channel token map to
  its own grid (nearest upsampling to 14x14 or 20x20, then adaptive average
  pooling to 10x10 or 14x14), and concatenates it to the input of its MLP
  (``norm2`` and ``mlp.fc1`` are ``dim + 48`` wide; the class token gets
  zeros).
- relationship reuse: the pre-softmax attention logits of all blocks of the
  previous Transformer (``heads * depth`` maps) go through a 1x1-convolution
  MLP (``heads * depth -> 3x -> heads * depth``), are resampled along both
  token axes in the same way (the class-token row and column are carried
  over), and are added to the attention logits of the matching block.

Every stage reads the 224x224 image, as the official code does: the token
grid comes from how the image is cut, not from resizing it. T2T-ViT stages
use the "performer" tokens-to-token module with soft-split kernels of 14/8/3
(7x7 tokens), 11/6/5 (10x10) or 7/4/2 (14x14) (kernel/stride/padding of the
first unfold, then two 3x3/2 unfolds); DeiT-S stages use patch convolutions
32/32/0, 23/23/3 and 16/16/0. Models are built for inference: dropout and
drop-path, which are identities in eval mode, are left out.

Module tree, keys, shapes and key order equal the official
blackfeather-wang/Dynamic-Vision-Transformer models (``less_less_token``,
``less_token``, ``normal_token``; including the misspelt
``feature_resuse_mlp`` and the fixed performer features ``w``), so official
checkpoints load strictly; with a reuse switched off the modules it needs are
absent, exactly as in the official class built with that switch. The static
``t2t_vit_12``/``t2t_vit_14`` models have the key layout of the official
yitu-opensource/T2T-ViT models at 14x14 tokens. tests/fixtures/dvt_*_keys.json
hold the official key and shape lists.

``iter_exits`` runs Transformer k and yields its logits before anything of
Transformer k+1 runs, which is the official execution order; the reuse
products of Transformer k (resampled features and relations) are computed by
Transformer k+1, so a sample that leaves at exit k never pays for them.
With a batch, a keep-mask sent after exit k slices the image, the final
tokens and the attention logits of Transformer k to the samples that go on
(``MultiExitModel.iter_exits``), so Transformer k+1 runs on those alone.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
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

IMG_SIZE = 224
TOKEN_GRIDS = (7, 10, 14)
# Names of the three Transformers in the official module tree, by token grid.
STAGE_NAMES = {7: "less_less_token", 10: "less_token", 14: "normal_token"}
# Official constants of feature reuse: width of the reused features and of the MLP making them.
REUSE_CHANNELS = 48
REUSE_HIDDEN = 128
# Resampling between grids: nearest upsampling to this size, then adaptive average pooling.
UPSAMPLE_FOR = {10: 14, 14: 20}
# Tokens-to-token first soft split (kernel, stride, padding) per token grid (performer variants).
T2T_SPLIT0 = {7: (14, 8, 3), 10: (11, 6, 5), 14: (7, 4, 2)}
# DeiT patch embedding (kernel = stride, padding) per token grid (official models_deit.py).
DEIT_PATCH = {7: (32, 0), 10: (23, 3), 14: (16, 0)}

CHECKPOINT_NOTE = (
    "Keys equal the official blackfeather-wang/Dynamic-Vision-Transformer model "
    "(less_less_token.* / less_token.* / normal_token.*). Official checkpoints are dicts "
    "{'model_state_dict': ..., 'flops', 'anytime_classification', "
    "'budgeted_batch_classification', 'dynamic_threshold'}; the loader takes the weights from "
    "'model_state_dict' (or 'model') and ignores the rest. Ablation models (a reuse switched "
    "off) lack the corresponding modules, as the official class built with that switch does."
)


def _check_grid(token_grid: int) -> None:
    if token_grid not in TOKEN_GRIDS:
        raise InputError(
            f"token_grid must be one of {TOKEN_GRIDS} (the DVT token grids 7x7, 10x10, 14x14), "
            f"got {token_grid!r}"
        )


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputTypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def resample_grid(t: torch.Tensor, size: int) -> torch.Tensor:
    """Resample (M, C, s, s) maps to (M, C, size, size) the way DVT does.

    Nearest upsampling to ``UPSAMPLE_FOR[size]`` and then adaptive average
    pooling gives an area-weighted resampling from 7x7 to 10x10 and from
    10x10 to 14x14.
    """
    up = UPSAMPLE_FOR[size]
    t = F.interpolate(t, size=(up, up), mode="nearest")
    return F.adaptive_avg_pool2d(t, (size, size))


def resample_relations(rel: torch.Tensor, grid: int) -> torch.Tensor:
    """Resample attention maps (B, C, n+1, n+1) of an s x s grid to (B, C, N+1, N+1).

    Both token axes hold a class token followed by an s x s grid; the grid
    part of each axis is resampled in turn, the class-token entries are kept.
    """
    b, c, n1, _ = rel.shape
    s = math.isqrt(n1 - 1)
    big = grid * grid

    def last_axis(t: torch.Tensor) -> torch.Tensor:
        rows = t.shape[2]
        body = t[..., 1:].reshape(b * c, rows, s, s)
        body = resample_grid(body, grid).reshape(b, c, rows, big)
        return torch.cat((t[..., :1], body), dim=3)

    rel = last_axis(rel)  # columns: (B, C, n+1, N+1)
    rel = last_axis(rel.transpose(2, 3))  # rows: (B, C, N+1, N+1), transposed
    return rel.transpose(2, 3)


class Mlp(nn.Module):
    """fc1 - GELU - fc2 (the names of the official keys)."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention that also returns its pre-softmax logits for reuse.

    The products are explicit matmuls so that fvcore counts them.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, reused: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        logits = (q @ k.transpose(-2, -1)) * self.scale
        if reused is not None:
            logits = logits + reused
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out), logits


class Block(nn.Module):
    """Transformer block; with ``feature_reuse`` its MLP also reads the previous stage's tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        norm_eps: float,
        feature_reuse: bool,
    ) -> None:
        super().__init__()
        extra = REUSE_CHANNELS if feature_reuse else 0
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim + extra, eps=norm_eps)
        self.mlp = Mlp(dim + extra, int(dim * mlp_ratio), dim)
        if feature_reuse:
            self.feature_resuse_mlp = nn.Sequential(  # official spelling
                nn.LayerNorm(dim, eps=norm_eps), Mlp(dim, REUSE_HIDDEN, REUSE_CHANNELS)
            )

    def forward(
        self,
        x: torch.Tensor,
        grid: int,
        features: torch.Tensor | None = None,
        relations: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, logits = self.attn(self.norm1(x), relations)
        x = x + out
        h = x
        if features is not None:
            f = self.feature_resuse_mlp(features)[:, 1:]  # class token dropped
            b, n, c = f.shape
            s = math.isqrt(n)
            f = resample_grid(f.transpose(1, 2).reshape(b, c, s, s), grid)
            f = f.reshape(b, c, grid * grid).transpose(1, 2)
            f = torch.cat((f.new_zeros(b, 1, c), f), dim=1)
            h = torch.cat((h, f), dim=2)
        return x + self.mlp(self.norm2(h)), logits


class TokenPerformer(nn.Module):
    """One tokens-to-token re-structurisation step with performer (random-feature) attention.

    Single head; ``w`` holds the fixed random features (a non-trainable
    parameter, so it travels in checkpoints). The value path is the residual,
    as in T2T-ViT.
    """

    def __init__(self, dim: int, emb: int, kernel_ratio: float = 0.5) -> None:
        super().__init__()
        self.emb = emb
        self.m = int(emb * kernel_ratio)
        self.w = nn.Parameter(torch.empty(self.m, emb), requires_grad=False)
        self.kqv = nn.Linear(dim, 3 * emb)
        self.proj = nn.Linear(emb, emb)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(emb)
        self.mlp = nn.Sequential(nn.Linear(emb, emb), nn.GELU(), nn.Linear(emb, emb))
        self.epsilon = 1e-8
        if not self.w.is_meta:
            with torch.no_grad():
                nn.init.orthogonal_(self.w)
                self.w.mul_(math.sqrt(self.m))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        # Positive random features of the softmax kernel: exp(w.x - |x|^2 / 2) / sqrt(m).
        sq = (x * x).sum(dim=-1, keepdim=True) / 2
        return torch.exp(x @ self.w.t() - sq) / math.sqrt(self.m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, q, v = self.kqv(self.norm1(x)).split(self.emb, dim=-1)
        kp, qp = self._features(k), self._features(q)  # (B, T, m)
        denom = qp @ kp.sum(dim=1).unsqueeze(-1)  # (B, T, 1)
        kptv = v.transpose(1, 2) @ kp  # (B, emb, m)
        y = (qp @ kptv.transpose(1, 2)) / (denom + self.epsilon)
        y = v + self.proj(y)
        return y + self.mlp(self.norm2(y))


class T2TModule(nn.Module):
    """Tokens-to-token embedding: soft split, performer, soft split, performer, soft split."""

    def __init__(self, token_grid: int, embed_dim: int, token_dim: int = 64) -> None:
        super().__init__()
        k0, s0, p0 = T2T_SPLIT0[token_grid]
        self.soft_split0 = nn.Unfold(kernel_size=k0, stride=s0, padding=p0)
        self.soft_split1 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.soft_split2 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.attention1 = TokenPerformer(3 * k0 * k0, token_dim)
        self.attention2 = TokenPerformer(token_dim * 9, token_dim)
        self.project = nn.Linear(token_dim * 9, embed_dim)
        g0 = (IMG_SIZE + 2 * p0 - k0) // s0 + 1
        g1 = (g0 - 1) // 2 + 1
        self.grids = (g0, g1)
        if (g1 - 1) // 2 + 1 != token_grid:
            raise AssertionError(f"T2T split sizes do not give {token_grid}x{token_grid} tokens")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention1(self.soft_split0(x).transpose(1, 2))
        x = self.attention2(self.soft_split1(self._to_map(x, self.grids[0])).transpose(1, 2))
        return self.project(self.soft_split2(self._to_map(x, self.grids[1])).transpose(1, 2))

    @staticmethod
    def _to_map(tokens: torch.Tensor, grid: int) -> torch.Tensor:
        b, _, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, grid, grid)


class PatchEmbed(nn.Module):
    """DeiT patch embedding; the 10x10 stage cuts 23x23 patches from the zero-padded image."""

    def __init__(self, token_grid: int, embed_dim: int) -> None:
        super().__init__()
        patch, pad = DEIT_PATCH[token_grid]
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch, stride=patch, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine position table of T2T-ViT, shape (1, n_position, dim)."""
    pos = torch.arange(n_position, dtype=torch.float64).unsqueeze(1)
    expo = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), expo)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32).unsqueeze(0)


class _StageBody(nn.Module):
    """A stage's modules (named as the official checkpoints name them) and its computation,
    ``run``; :class:`Stage` and :class:`T2TViT` give it their own ``forward``."""

    def __init__(
        self,
        backbone: str,
        token_grid: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        num_classes: int,
        feature_reuse: bool = False,
        relation_reuse: bool = False,
        token_dim: int = 64,
    ) -> None:
        super().__init__()
        _check_grid(token_grid)
        if (feature_reuse or relation_reuse) and token_grid not in UPSAMPLE_FOR:
            raise InputError(
                f"reuse needs a previous, coarser Transformer; a {token_grid}x{token_grid} "
                f"stage cannot reuse (only {sorted(UPSAMPLE_FOR)} can)"
            )
        if embed_dim % num_heads:
            raise InputError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.backbone = backbone
        self.token_grid = token_grid
        self.depth = depth
        self.num_heads = num_heads
        self.feature_reuse = feature_reuse
        self.relation_reuse = relation_reuse
        n = token_grid * token_grid + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if backbone == "t2t_vit":
            self.pos_embed = nn.Parameter(sinusoid_table(n, embed_dim), requires_grad=False)
            self.tokens_to_token: nn.Module = T2TModule(token_grid, embed_dim, token_dim)
            qkv_bias, eps = False, 1e-5
        elif backbone == "deit":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
            self.patch_embed: nn.Module = PatchEmbed(token_grid, embed_dim)
            qkv_bias, eps = True, 1e-6
        else:
            raise InputError(f"backbone must be 't2t_vit' or 'deit', got {backbone!r}")
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, eps, feature_reuse)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        if relation_reuse:
            maps = num_heads * depth
            self.relation_reuse_conv = nn.Sequential(
                nn.Conv2d(maps, 3 * maps, kernel_size=1), nn.GELU(), nn.Conv2d(3 * maps, maps, 1)
            )
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Official initialisation: truncated normal (std 0.02) linears and tokens, zero biases.
        if self.cls_token.is_meta:
            return
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.backbone == "deit":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (IMG_SIZE, IMG_SIZE) or x.dim() != 4 or x.shape[1] != 3:
            raise InputError(
                f"DVT and T2T-ViT models take RGB batches of shape (N, 3, {IMG_SIZE}, {IMG_SIZE}) "
                f"(their token grids come from fixed patch sizes); got {tuple(x.shape)}. "
                "Resize and crop images to 224 as the model's config says"
            )
        tokens = self.tokens_to_token(x) if self.backbone == "t2t_vit" else self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat((cls, tokens), dim=1) + self.pos_embed

    def run(
        self,
        x: torch.Tensor,
        features: torch.Tensor | None = None,
        relations: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if features is not None and not self.feature_reuse:
            raise InputError("this stage was built without feature_reuse; pass features=None")
        if relations is not None and not self.relation_reuse:
            raise InputError("this stage was built without relation_reuse; pass relations=None")
        x = self.embed(x)
        reused: Sequence[torch.Tensor | None] = [None] * self.depth
        if relations is not None:
            rel = resample_relations(self.relation_reuse_conv(relations), self.token_grid)
            reused = rel.chunk(self.depth, dim=1)
        own = []
        for blk, rel_k in zip(self.blocks, reused):
            x, logits = blk(x, self.token_grid, features, rel_k)
            own.append(logits)
        return self.head(self.norm(x)[:, 0]), x, torch.cat(own, dim=1)


class Stage(_StageBody):
    """One Transformer of the cascade (or a static model): embedding, blocks, norm, head.

    ``forward(x, features, relations)`` returns the logits, the final tokens
    before the norm (what the next stage's feature reuse reads) and the stacked
    pre-softmax attention logits of all blocks, (B, depth * heads, N+1, N+1)
    (what its relationship reuse reads).
    """

    def forward(
        self,
        x: torch.Tensor,
        features: torch.Tensor | None = None,
        relations: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.run(x, features, relations)


def _stage_kwargs(
    backbone: str, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, num_classes: int
) -> dict[str, Any]:
    return dict(
        backbone=backbone,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        num_classes=num_classes,
    )


class DVT(MultiExitModel):
    """The DVT cascade: three Transformers on 7x7, 10x10 and 14x14 tokens, one exit each."""

    def __init__(
        self,
        backbone: str,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        num_classes: int = 1000,
        feature_reuse: bool = True,
        relation_reuse: bool = True,
        name: str = "",
    ) -> None:
        super().__init__()
        _check_bool("feature_reuse", feature_reuse)
        _check_bool("relation_reuse", relation_reuse)
        kw = _stage_kwargs(backbone, embed_dim, depth, num_heads, mlp_ratio, num_classes)
        # The first Transformer has nothing to reuse (the official code builds it without).
        self.less_less_token = Stage(token_grid=7, **kw)
        self.less_token = Stage(
            token_grid=10, feature_reuse=feature_reuse, relation_reuse=relation_reuse, **kw
        )
        self.normal_token = Stage(
            token_grid=14, feature_reuse=feature_reuse, relation_reuse=relation_reuse, **kw
        )
        self.feature_reuse = feature_reuse
        self.relation_reuse = relation_reuse
        self.exits = [f"tokens{g}x{g}" for g in TOKEN_GRIDS]
        self.config = ModelConfig(
            name=name,
            num_classes=num_classes,
            input_size=(3, IMG_SIZE, IMG_SIZE),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            interpolation="bicubic",  # official inference.py: Resize(256, bicubic), CenterCrop(224)
            crop_pct=0.875,
            arch=dict(
                family="dvt",
                token_grids=list(TOKEN_GRIDS),
                feature_reuse=feature_reuse,
                relation_reuse=relation_reuse,
                **_stage_kwargs(backbone, embed_dim, depth, num_heads, mlp_ratio, num_classes),
            ),
            checkpoint_note=CHECKPOINT_NOTE,
            cost_convention="fvcore",
        )

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        # What a stage hands the next: the image (every stage re-cuts it), its final tokens
        # (feature reuse) and its stacked attention logits (relation reuse), all batch-first.
        # A reuse that is off carries nothing. The keep-mask received after exit k is applied
        # when stage k+1 starts, so nothing is sliced after the last exit.
        features: torch.Tensor | None = None
        relations: torch.Tensor | None = None
        keep: torch.Tensor | None = None
        for k, stage in enumerate((self.less_less_token, self.less_token, self.normal_token)):
            x, features, relations = keep_rows((x, features, relations), keep)
            logits, feats, rels = stage(x, features, relations)
            features = feats if self.feature_reuse else None
            relations = rels if self.relation_reuse else None
            keep = check_keep((yield k, logits), logits.shape[0])


class T2TViT(_StageBody, MultiExitModel):
    """A single T2T-ViT at one token grid: the static reference point of the DVT paper.

    Its keys are those of the official T2T-ViT model (no prefix), so a
    yitu-opensource/T2T-ViT checkpoint loads into ``token_grid=14``.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        num_classes: int = 1000,
        token_grid: int = 14,
        name: str = "",
    ) -> None:
        _check_grid(token_grid)
        super().__init__(
            token_grid=token_grid,
            **_stage_kwargs("t2t_vit", embed_dim, depth, num_heads, mlp_ratio, num_classes),
        )
        self.exits = [f"tokens{token_grid}x{token_grid}"]
        self.config = ModelConfig(
            name=name,
            num_classes=num_classes,
            input_size=(3, IMG_SIZE, IMG_SIZE),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            interpolation="bicubic",
            crop_pct=0.875,
            arch=dict(
                family="t2t_vit",
                token_grid=token_grid,
                **_stage_kwargs("t2t_vit", embed_dim, depth, num_heads, mlp_ratio, num_classes),
            ),
            checkpoint_note=(
                "Keys equal the official yitu-opensource/T2T-ViT model at 14x14 tokens and the "
                f"'{STAGE_NAMES[token_grid]}.' part of a DVT checkpoint without reuse; "
                "timm-style checkpoints {'state_dict': ...} unwrap"
            ),
            cost_convention="fvcore",
        )

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        logits, _, _ = self.run(x)
        yield 0, logits


T2T_VIT_12 = dict(embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0)
T2T_VIT_14 = dict(embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0)
DEIT_SMALL = dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0)


def _dvt(
    name: str,
    backbone: str,
    dims: dict[str, Any],
    num_classes: int,
    feature_reuse: bool,
    relation_reuse: bool,
    overrides: dict[str, Any],
) -> DVT:
    allowed = set(dims)
    unknown = set(overrides) - allowed
    if unknown:
        raise InputTypeError(
            f"{name} got unknown options {sorted(unknown)}; it takes num_classes, feature_reuse, "
            f"relation_reuse and (for reduced test models) {sorted(allowed)}"
        )
    kw = {**dims, **overrides}
    return DVT(
        backbone=backbone,
        num_classes=num_classes,
        feature_reuse=feature_reuse,
        relation_reuse=relation_reuse,
        name=name,
        **kw,
    )


def _static(
    name: str, dims: dict[str, Any], num_classes: int, token_grid: int, overrides: dict[str, Any]
) -> T2TViT:
    unknown = set(overrides) - set(dims)
    if unknown:
        raise InputTypeError(
            f"{name} got unknown options {sorted(unknown)}; it takes num_classes, token_grid and "
            f"(for reduced test models) {sorted(dims)}"
        )
    return T2TViT(
        num_classes=num_classes, token_grid=token_grid, name=name, **{**dims, **overrides}
    )


@register_model
def dvt_t2t_vit_12(
    num_classes: int = 1000,
    feature_reuse: bool = True,
    relation_reuse: bool = True,
    **overrides: Any,
) -> DVT:
    """DVT on T2T-ViT-12 (256 wide, 12 blocks, 4 heads, MLP ratio 2): 0.47/1.46/3.50 GMACs."""
    return _dvt(
        "dvt_t2t_vit_12",
        "t2t_vit",
        T2T_VIT_12,
        num_classes,
        feature_reuse,
        relation_reuse,
        overrides,
    )


@register_model
def dvt_t2t_vit_14(
    num_classes: int = 1000,
    feature_reuse: bool = True,
    relation_reuse: bool = True,
    **overrides: Any,
) -> DVT:
    """DVT on T2T-ViT-14 (384 wide, 14 blocks, 6 heads, MLP ratio 3)."""
    return _dvt(
        "dvt_t2t_vit_14",
        "t2t_vit",
        T2T_VIT_14,
        num_classes,
        feature_reuse,
        relation_reuse,
        overrides,
    )


@register_model
def dvt_deit_small(
    num_classes: int = 1000,
    feature_reuse: bool = True,
    relation_reuse: bool = True,
    **overrides: Any,
) -> DVT:
    """DVT on DeiT-S (384 wide, 12 blocks, 6 heads, MLP ratio 4; patches 32, 23 (+3 pad), 16)."""
    return _dvt(
        "dvt_deit_small",
        "deit",
        DEIT_SMALL,
        num_classes,
        feature_reuse,
        relation_reuse,
        overrides,
    )


@register_model
def t2t_vit_12(num_classes: int = 1000, token_grid: int = 14, **overrides: Any) -> T2TViT:
    """A single T2T-ViT-12 on 7x7, 10x10 or 14x14 tokens (one exit)."""
    return _static("t2t_vit_12", T2T_VIT_12, num_classes, token_grid, overrides)


@register_model
def t2t_vit_14(num_classes: int = 1000, token_grid: int = 14, **overrides: Any) -> T2TViT:
    """A single T2T-ViT-14 on 7x7, 10x10 or 14x14 tokens (one exit)."""
    return _static("t2t_vit_14", T2T_VIT_14, num_classes, token_grid, overrides)
