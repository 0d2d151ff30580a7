"""Dynamic Perceiver (Han et al., ICCV 2023): a CNN feature branch and a latent classification branch.

Early exits on CNN features force shallow layers to be linearly separable;
Dyn-Perceiver instead puts its early exits on a small latent code (a
Perceiver) that reads the CNN through cross attention, so the CNN only has
to extract features. Per stage s of the four CNN stages:

- X2Z (feature to latent): the stage's input feature map plus a 7x7
  depthwise convolution of it (``dwc<s>_x2z``), pooled to 7x7, is the
  key/value of a one-head cross attention (``cross_att<s>_x2z``) whose keys
  carry a learned 49-position bias; the latent tokens are the queries.
- self attention on the latents (``self_att<s>``: 3, 3, 9 and 3 layers times
  ``depth_factor``; 1, 2, 4 and 8 heads; MLP ratio ``sa_widening_factor``).
- between stages, the token mixer (LayerNorm + Linear across the token axis)
  halves the number of latents and the token expander (LayerNorm + Linear)
  widens them to the next stage's CNN width; then Z2X (``cross_att<s>_z2x``,
  queries = CNN pixels, keys/values = latents, width/8 attention) writes the
  latents back into the feature map before the next X2Z reads it.

Exits, in execution order: ``early3`` (mean latent after stage 3 -> Linear),
``attention`` (mean latent after stage 4, concatenated with ``isc3`` of the
early logits), ``cnn`` (pooled CNN features -> the backbone's classifier) and
``merged`` (a last Z2X into the final feature map, then the pooled map, the
mean latent and ``isc4`` of the attention logits -> BatchNorm1d + Linear).
Within a stage the classification branch runs first, so exit ``early3`` is
yielded before CNN stage 3 runs, and ``attention`` before CNN stage 4: a
sample leaving early pays for neither. The official ``forward`` has the same
order. Its analytic counter (``forward_calc_flops``), which produced the published
per-exit costs, charges each exit the backbone work before it but only its own head
(not the earlier exits' heads); the ``dynperceiver`` cost convention, this model's
default, reproduces it, and ``convention="fvcore"`` counts the cumulative work a
sample leaving at each exit really paid.

Real early exit with a batch (the keep-mask of ``iter_exits``): what the later exits
read is carried from exit to exit and sliced to the samples that continue. After
``early3``: the latents, the CNN map entering stage 3 and the early logits (``isc3``
input). After ``attention``: the latents (for the last Z2X), their mean and the attention
logits (``isc4`` input), with the CNN map entering stage 4, so a sample leaving at
``attention`` runs no CNN stage 4. The ``cnn`` exit reads none of that latent state,
but ``merged`` does, so it is carried through ``cnn`` and sliced again there, with the
stage-4 map. Everything carried is batch-first.

Backbones and keys: the official RegNetY-800MF and MobileNetV3-Large x0.75
branches are copies of torchvision's classes (``ConvNormActivation``,
``SqueezeExcitation``, the RegNet width schedule), the ResNet-50 x0.375
branch a copy of timm's ResNet with a ``channel_multiplier``. We build them
from torchvision (a dependency of timm) and timm 1.0's
``Bottleneck``/``make_blocks``/``create_classifier``, which give the official
module tree: state_dict keys, shapes and key order equal the official
``DynPerceiver`` for ``reg800m_perceiver_t128``,
``mobilenetV3_0x75_perceiver_t128`` and ``resnet50_0375_perceiver_t128``
with the README's arguments (tests/fixtures/dynperceiver_*_keys.json), so
official checkpoints load strictly without conversion. Attention is written
as explicit matrix products (the official einsums), which fvcore counts.

Left out, because the README models never use them and the official code
either lacks a working path (``spatial_reduction=False`` references an
undefined pooling layer) or only trains with them: the ablation switches
(``with_x2z``, ``with_z2x``, ``with_dwc``, ``with_last_CA``, ``with_isc``,
all True here), attention dropout (0 in the README) and the distillation
loss (``with_kd``), which is training, not architecture.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eebench.errors import InputError
from eebench.zoo.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    MultiExitModel,
    check_keep,
    keep_rows,
)
from eebench.zoo.registry import register_model

BACKBONES = ("regnet_y_800mf", "mobilenet_v3_large_075", "resnet50_0375")
EXITS = ["early3", "attention", "cnn", "merged"]
# Self-attention layers per stage before ``depth_factor`` (the official constant).
BASE_SA_LAYERS = (3, 3, 9, 3)
POOLED_HW = 7  # X2Z keys/values: every feature map is average-pooled to 7x7 (spatial_reduction)
MIN_INPUT = 32  # the CNN branch downsamples by 32


class Attention(nn.Module):
    """Multi-head attention of the official perceiver_core (keys ``q/k/v/o_proj``).

    ``position_bias`` adds a learned bias to the keys (official
    ``relative_position_bias``, one per pooled 7x7 position), used by X2Z.
    """

    def __init__(
        self,
        heads: int,
        q_channels: int,
        kv_channels: int,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        position_bias: int = 0,
    ) -> None:
        super().__init__()
        qk_channels = qk_channels or q_channels
        v_channels = v_channels or qk_channels
        for what, c in (("query/key", qk_channels), ("value", v_channels)):
            if c % heads:
                raise InputError(
                    f"attention {what} width {c} is not divisible by {heads} heads; "
                    "choose num_sa_heads that divide the stage widths"
                )
        self.relative_position_bias: nn.Parameter | None
        if position_bias:
            self.relative_position_bias = nn.Parameter(torch.zeros(1, position_bias, qk_channels))
        else:
            self.relative_position_bias = None
        self.heads = heads
        self.scale = (qk_channels // heads) ** -0.5
        self.q_proj = nn.Linear(q_channels, qk_channels, bias=False)
        self.k_proj = nn.Linear(kv_channels, qk_channels, bias=False)
        self.v_proj = nn.Linear(kv_channels, v_channels, bias=False)
        self.o_proj = nn.Linear(v_channels, q_channels)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        q = self.q_proj(x_q)
        k = self.k_proj(x_kv)
        v = self.v_proj(x_kv)
        if self.relative_position_bias is not None:
            k = k + self.relative_position_bias
        q, k, v = self._split(q), self._split(k), self._split(v)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        o = attn.softmax(dim=-1) @ v
        b, h, n, d = o.shape  # explicit width: an empty batch (every sample exited) reshapes too
        return self.o_proj(o.transpose(1, 2).reshape(b, n, h * d))


class MLP(nn.Module):
    """Pre-norm two-layer GELU MLP (keys ``layernorm``, ``fc1``, ``fc2``)."""

    def __init__(self, channels: int, widening: int) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, widening * channels)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(widening * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.gelu(self.fc1(self.layernorm(x))))


class CrossAttention(nn.Module):
    """Separate LayerNorms on queries and keys/values, then attention."""

    def __init__(self, q_channels: int, kv_channels: int, **attention: Any) -> None:
        super().__init__()
        self.q_norm = nn.LayerNorm(q_channels)
        self.kv_norm = nn.LayerNorm(kv_channels)
        self.attention = Attention(1, q_channels, kv_channels, **attention)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        return self.attention(self.q_norm(x_q), self.kv_norm(x_kv))


class CrossAttentionLayer(nn.Module):
    """Residual cross attention plus residual MLP (ratio 1): X2Z and Z2X."""

    def __init__(self, q_channels: int, kv_channels: int, **attention: Any) -> None:
        super().__init__()
        self.cross_attn = CrossAttention(q_channels, kv_channels, **attention)
        self.mlp = MLP(q_channels, 1)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        out = x_q + self.cross_attn(x_q, x_kv)
        return out + self.mlp(out)


class SelfAttention(nn.Module):
    """Pre-norm self attention; the module tree (``norm``, ``attention``) is the official one."""

    def __init__(self, heads: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attention = Attention(heads, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.attention(x, x)


class SelfAttentionLayer(nn.Module):
    """Residual self attention plus residual MLP on the latent tokens."""

    def __init__(self, heads: int, channels: int, widening: int) -> None:
        super().__init__()
        self.self_attn = SelfAttention(heads, channels)
        self.mlp = MLP(channels, widening)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(x)
        return x + self.mlp(x)


class SelfAttentionBlock(nn.ModuleList):
    """The self-attention layers of one stage, a ModuleList so keys read ``self_att<s>.<i>``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
        return x


class _Backbone:
    """The CNN pieces of one backbone, named and ordered as the official model holds them."""

    def __init__(self, stem: nn.Module, stages: dict[str, nn.Module], stage_in: list[int]):
        self.stem = stem
        self.stages = stages  # attribute name -> module (ordered as registered officially)
        self.stage_in = stage_in  # CNN channels entering stages 1..4
        self.stage4_out = 0
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        self.classifier: nn.Module = nn.Identity()
        self.cnn_features = 0  # width of the pooled feature vector fed to classifier_merge
        self.merge_hidden = 0  # MobileNetV3's classifiers have a hidden layer
        self.classifier_position = ""  # official attribute after which classifier_cnn is registered
        self.drop_rate = 0.0


def _conv_in(module: nn.Module, path: str) -> int:
    """Input channels of the convolution at ``path`` (dotted, as in state_dict keys)."""
    conv = module.get_submodule(path)
    assert isinstance(conv, nn.Conv2d)  # the builders below name a convolution
    return conv.in_channels


def _regnet(num_classes: int) -> _Backbone:
    from torchvision.models.regnet import BlockParams, RegNet

    # torchvision's regnet_y_800mf settings. The width schedule is computed with tensors and
    # read back with .tolist(), which a meta-device build cannot do: compute it on the CPU.
    with torch.device("cpu"):
        params = BlockParams.from_init_params(
            depth=14, w_0=56, w_a=38.84, w_m=2.4, group_width=16, se_ratio=0.25
        )
    norm = partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1)
    cnn = RegNet(params, num_classes=num_classes, norm_layer=norm)
    body = cnn.trunk_output
    stage_in = [body[i][0].f.a[0].in_channels for i in range(4)]
    bb = _Backbone(cnn.stem, {"cnn_body": body}, stage_in)
    bb.stage4_out = cnn.fc.in_features
    bb.pool, bb.classifier = cnn.avgpool, cnn.fc
    bb.cnn_features = cnn.fc.in_features
    bb.classifier_position = "last_cross_att_z2x"
    return bb


def _mobilenet(num_classes: int) -> _Backbone:
    from torchvision.models import mobilenet_v3_large

    cnn = mobilenet_v3_large(width_mult=0.75, num_classes=num_classes)
    f = cnn.features
    # The official split of torchvision's 17 feature modules into stem and four stages.
    bounds = [(0, 3), (3, 5), (5, 8), (8, 14), (14, 17)]
    parts = [nn.ModuleList([f[i] for i in range(a, b)]) for a, b in bounds]
    stages: dict[str, nn.Module] = {f"cnn_body_stage{s}": parts[s] for s in range(1, 5)}
    stage_in = [_conv_in(parts[s], "0.block.0.0") for s in range(1, 5)]
    bb = _Backbone(parts[0], stages, stage_in)
    last_conv = f[16][0].out_channels
    bb.stage4_out = last_conv
    bb.pool, bb.classifier = cnn.avgpool, cnn.classifier
    bb.cnn_features = last_conv
    bb.merge_hidden = cnn.classifier[0].out_features
    bb.classifier_position = "isc4"
    return bb


def _resnet(num_classes: int) -> _Backbone:
    from timm.layers import create_classifier
    from timm.models.resnet import Bottleneck, make_blocks

    multiplier = 0.375
    stem_width = int(64 * multiplier)
    channels = tuple(int(c * multiplier) for c in (64, 128, 256, 512))
    stem = nn.Sequential(
        nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(stem_width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    # The official ResNet is built with drop_rate = drop_path_rate = 0.2 (training only).
    stage_list, _ = make_blocks(
        (Bottleneck,) * 4, channels, (3, 4, 6, 3), stem_width, drop_path_rate=0.2
    )
    stages = {f"cnn_body_stage{i + 1}": m for i, (_, m) in enumerate(stage_list)}
    stage_in = [_conv_in(m, "0.conv1") for m in stages.values()]
    bb = _Backbone(stem, stages, stage_in)
    features = channels[-1] * Bottleneck.expansion
    bb.stage4_out = features
    bb.pool, bb.classifier = create_classifier(features, num_classes, pool_type="avg")
    bb.cnn_features = features
    bb.classifier_position = "cnn_body_stage4"
    bb.drop_rate = 0.2
    return bb


_BUILDERS = {
    "regnet_y_800mf": _regnet,
    "mobilenet_v3_large_075": _mobilenet,
    "resnet50_0375": _resnet,
}


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def _map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c = tokens.shape  # no -1: an empty batch (every sample exited) reshapes too
    return tokens.transpose(1, 2).reshape(b, c, h, w)


class DynPerceiver(MultiExitModel):
    """Dyn-Perceiver on a RegNetY, MobileNetV3 or ResNet feature branch (see the module docstring)."""

    # Registered with setattr under the official names (see __init__); declared for type checkers.
    cnn_body: nn.Sequential  # the RegNet branch only
    cross_att4_z2x: CrossAttentionLayer
    self_att4: SelfAttentionBlock

    def __init__(
        self,
        backbone: str = "regnet_y_800mf",
        num_classes: int = 1000,
        num_latents: int = 128,
        depth_factor: Sequence[int] = (1, 1, 1, 2),
        num_sa_heads: Sequence[int] = (1, 2, 4, 8),
        sa_widening_factor: int = 4,
        name: str = "dynperceiver",
    ) -> None:
        super().__init__()
        if backbone not in _BUILDERS:
            raise InputError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        depth_factor = [int(d) for d in depth_factor]
        num_sa_heads = [int(h) for h in num_sa_heads]
        if len(depth_factor) != 4 or min(depth_factor) < 1:
            raise InputError(
                f"depth_factor needs four positive integers (one per stage), got {depth_factor}"
            )
        if len(num_sa_heads) != 4 or min(num_sa_heads) < 1:
            raise InputError(
                f"num_sa_heads needs four positive integers (one per stage), got {num_sa_heads}"
            )
        if num_latents < 8 or num_latents % 8:
            raise InputError(
                f"num_latents must be a positive multiple of 8 (the token mixers halve it three "
                f"times), got {num_latents}"
            )
        if sa_widening_factor < 1 or num_classes < 1:
            raise InputError(
                f"sa_widening_factor and num_classes must be positive, got "
                f"{sa_widening_factor} and {num_classes}"
            )
        self.exits = list(EXITS)
        bb = _BUILDERS[backbone](num_classes)
        c = bb.stage_in
        self._stage_names = list(bb.stages)
        self._drop_rate = bb.drop_rate

        # Registration order = the official state_dict key order.
        self.latent = nn.Parameter(torch.empty(num_latents, c[0]))
        self.cnn_stem = bb.stem
        for attr, module in bb.stages.items():
            setattr(self, attr, module)
        self.avgpool = bb.pool
        self.ca_pooling = nn.AdaptiveAvgPool2d((POOLED_HW, POOLED_HW))
        cnn_classifier = bb.classifier
        if bb.classifier_position == "cnn_body_stage4":
            self.classifier_cnn = cnn_classifier
        bias = POOLED_HW * POOLED_HW
        for s in range(4):
            ch = c[s]
            setattr(self, f"dwc{s + 1}_x2z", nn.Conv2d(ch, ch, 7, padding=3, groups=ch))
            setattr(self, f"cross_att{s + 1}_x2z", CrossAttentionLayer(ch, ch, position_bias=bias))
            if s:
                z2x = CrossAttentionLayer(ch, ch, qk_channels=ch // 8, v_channels=ch // 8)
                setattr(self, f"cross_att{s + 1}_z2x", z2x)
            layers = [
                SelfAttentionLayer(num_sa_heads[s], ch, sa_widening_factor)
                for _ in range(BASE_SA_LAYERS[s] * depth_factor[s])
            ]
            setattr(self, f"self_att{s + 1}", SelfAttentionBlock(layers))
        out4 = bb.stage4_out
        self.last_cross_att_z2x = CrossAttentionLayer(
            out4, c[3], qk_channels=out4 // 8, v_channels=out4 // 8
        )
        if bb.classifier_position == "last_cross_att_z2x":
            self.classifier_cnn = cnn_classifier
        self.early_classifier3 = nn.Linear(c[2], num_classes)
        self.isc3 = nn.Sequential(nn.Linear(num_classes, c[3]), nn.BatchNorm1d(c[3]), nn.ReLU(True))
        self.classifier_att = nn.Linear(2 * c[3], num_classes)
        self.isc4 = nn.Sequential(nn.Linear(num_classes, c[3]), nn.BatchNorm1d(c[3]), nn.ReLU(True))
        if bb.classifier_position == "isc4":
            self.classifier_cnn = cnn_classifier
        merged = bb.cnn_features + 2 * c[3]
        if bb.merge_hidden:
            self.classifier_merge = nn.Sequential(
                nn.BatchNorm1d(merged),
                nn.Linear(merged, bb.merge_hidden),
                nn.Hardswish(inplace=True),
                nn.Dropout(p=0.2, inplace=True),
                nn.Linear(bb.merge_hidden, num_classes),
            )
        else:
            self.classifier_merge = nn.Sequential(
                nn.BatchNorm1d(merged), nn.Linear(merged, num_classes)
            )
        tokens = [num_latents >> i for i in range(4)]
        self.token_expander = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(c[i]), nn.Linear(c[i], c[i + 1])) for i in range(3)
        )
        self.token_mixer = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(tokens[i]), nn.Linear(tokens[i], tokens[i + 1]))
            for i in range(3)
        )
        with torch.no_grad():
            if not self.latent.is_meta:
                self.latent.normal_(0.0, 0.02).clamp_(-2.0, 2.0)

        self.config = ModelConfig(
            name=name,
            num_classes=num_classes,
            input_size=(3, 224, 224),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            interpolation="bicubic",
            crop_pct=0.875,
            arch=dict(
                backbone=backbone,
                num_latents=num_latents,
                depth_factor=depth_factor,
                num_sa_heads=num_sa_heads,
                sa_widening_factor=sa_widening_factor,
                spatial_reduction=True,
                with_x2z=True,
                with_z2x=True,
                with_dwc=True,
                with_last_CA=True,
                with_isc=True,
            ),
            checkpoint_note=(
                "Keys, shapes and order equal the official LeapLabTHU/Dynamic_Perceiver "
                "DynPerceiver built with the README's arguments; official checkpoints "
                "({'model': ..., 'model_ema': ..., 'optimizer': ...}) load strictly without "
                "conversion, and load_checkpoint takes 'model'. To evaluate the EMA weights "
                "(--model_ema_eval), save checkpoint['model_ema'] on its own and load that."
            ),
            cost_convention="dynperceiver",
        )

    # -- pieces of the two branches -------------------------------------------------------

    def _cnn_stage(self, s: int, x: torch.Tensor) -> torch.Tensor:
        """CNN stage s (1..4); the RegNet keeps its stages in one ``cnn_body`` Sequential."""
        if self._stage_names == ["cnn_body"]:
            return self.cnn_body[s - 1](x)
        for block in getattr(self, f"cnn_body_stage{s}"):
            x = block(x)
        return x

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.cnn_stem, nn.ModuleList):
            for m in self.cnn_stem:
                x = m(x)
            return x
        return self.cnn_stem(x)

    def _x2z(self, s: int, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        kv = getattr(self, f"dwc{s}_x2z")(x) + x
        kv = _tokens(self.ca_pooling(kv))
        return getattr(self, f"cross_att{s}_x2z")(z, kv)

    def _z2x(self, layer: nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return _map(layer(_tokens(x), z), h, w)

    def _next_latents(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """Token mixer (fewer latents) then token expander (wider latents) between stages."""
        z = self.token_mixer[i](z.transpose(1, 2)).transpose(1, 2)
        return self.token_expander[i](z)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(x).flatten(1)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(
                f"{self.config.name} expects images of shape (N, 3, H, W), got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < MIN_INPUT:
            raise InputError(
                f"{self.config.name} downsamples by 32; images must be at least "
                f"{MIN_INPUT}x{MIN_INPUT}, got {x.shape[-2]}x{x.shape[-1]} "
                f"(config.input_size is {self.config.input_size})"
            )

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        self._check_input(x)
        z = self.latent.expand(x.shape[0], -1, -1)
        x = self._stem(x)
        for s in (1, 2, 3):
            if s > 1:
                z = self._next_latents(s - 2, z)
                x = self._z2x(getattr(self, f"cross_att{s}_z2x"), x, z)
            z = getattr(self, f"self_att{s}")(self._x2z(s, z, x))
            if s == 3:
                y_early = self.early_classifier3(z.mean(dim=1))
                keep = yield 0, y_early
                z, x, y_early = _compact((z, x, y_early), keep, y_early.shape[0])
            x = self._cnn_stage(s, x)
        z = self._next_latents(2, z)
        x = self._z2x(self.cross_att4_z2x, x, z)
        z = self.self_att4(self._x2z(4, z, x))
        z_mean = z.mean(dim=1)
        y_att = self.classifier_att(torch.cat((z_mean, self.isc3(y_early)), dim=1))
        keep = yield 1, y_att
        z, z_mean, y_att, x = _compact((z, z_mean, y_att, x), keep, y_att.shape[0])
        x = self._cnn_stage(4, x)
        pooled = self._pooled(x)
        if self._drop_rate:
            pooled = F.dropout(pooled, p=self._drop_rate, training=self.training)
        y_cnn = self.classifier_cnn(pooled)
        keep = yield 2, y_cnn
        z, z_mean, y_att, x = _compact((z, z_mean, y_att, x), keep, y_cnn.shape[0])
        x = self._z2x(self.last_cross_att_z2x, x, z)
        merged = torch.cat((self._pooled(x), z_mean, self.isc4(y_att)), dim=1)
        yield 3, self.classifier_merge(merged)


def _compact(state: tuple[torch.Tensor, ...], keep: Any, rows: int) -> tuple[torch.Tensor, ...]:
    """``state`` (batch-first tensors) sliced to the rows a checked keep-mask keeps."""
    return keep_rows(state, check_keep(keep, rows))


# -- registered models (the README's three pre-trained models) ------------------------------


def _make(name: str, num_classes: int, overrides: dict[str, Any], **readme: Any) -> DynPerceiver:
    args: dict[str, Any] = dict(
        num_classes=num_classes,
        num_latents=128,
        num_sa_heads=(1, 2, 4, 8),
        sa_widening_factor=4,
        name=name,
        **readme,
    )
    args.update(overrides)
    return DynPerceiver(**args)


@register_model
def dynperceiver_regnety_800m(num_classes: int = 1000, **overrides: Any) -> DynPerceiver:
    """README ``reg800m_perceiver_t128``: RegNetY-800MF, 128 latents, depth_factor 1-1-1-2."""
    return _make(
        "dynperceiver_regnety_800m",
        num_classes,
        overrides,
        backbone="regnet_y_800mf",
        depth_factor=(1, 1, 1, 2),
    )


@register_model
def dynperceiver_mobilenetv3_075(num_classes: int = 1000, **overrides: Any) -> DynPerceiver:
    """README ``mobilenetV3_0x75_perceiver_t128``: MobileNetV3-L x0.75, depth_factor 1-1-1-3."""
    return _make(
        "dynperceiver_mobilenetv3_075",
        num_classes,
        overrides,
        backbone="mobilenet_v3_large_075",
        depth_factor=(1, 1, 1, 3),
    )


@register_model
def dynperceiver_resnet50_0375(num_classes: int = 1000, **overrides: Any) -> DynPerceiver:
    """README ``resnet50_0375_perceiver_t128``: ResNet-50 x0.375, depth_factor 1-1-1-1."""
    return _make(
        "dynperceiver_resnet50_0375",
        num_classes,
        overrides,
        backbone="resnet50_0375",
        depth_factor=(1, 1, 1, 1),
    )
