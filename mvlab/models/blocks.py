"""The three block kinds and the pieces around them (stem, downsample, windows).

Module and parameter names follow NVIDIA's released MambaVision checkpoints, so their state
dicts load with ``strict=True``. The numerics follow the reference too, quirks included: the
mixer's dt bias is counted twice, the convs in the mixer are non-causal and bias-free, the
output concatenates the scan with the symmetric branch, conv blocks use tanh-GELU and the MLP
exact GELU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, register_notrace_function
from torch import nn

from mvlab.grammar import STEM_CONV_STRIDES, MixerOptions
from mvlab.models.dims import MixerDims
from mvlab.ops import selective_scan

# The scan dispatches on device and backend in Python (compiled C, Triton, loops): FX keeps it
# as one leaf call (timm's registry for timm's tracers, torch.fx.wrap for any other).
register_notrace_function(selective_scan)
torch.fx.wrap("selective_scan")


class Stem(nn.Module):
    """The stem: two conv3x3 (no bias) -> BN(eps 1e-4) -> ReLU, stride 2 each as released.

    ``stride`` 2 keeps the first conv's stride only and 1 neither (``stem_stride`` in the spec):
    same parameters, more tokens per stage at a low input resolution."""

    def __init__(self, in_chans: int, stem: int, width: int, stride: int = 4,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        first, second = STEM_CONV_STRIDES[stride]
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, stem, 3, first, 1, bias=False, **dd),
            nn.BatchNorm2d(stem, eps=1e-4, **dd),
            nn.ReLU(),
            nn.Conv2d(stem, width, 3, second, 1, bias=False, **dd),
            nn.BatchNorm2d(width, eps=1e-4, **dd),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_down(x)


class Downsample(nn.Module):
    """Between stages: one conv3x3 stride 2, no bias, no norm."""

    def __init__(self, dim: int, out_dim: int, device=None, dtype=None):
        super().__init__()
        self.reduction = nn.Sequential(
            nn.Conv2d(dim, out_dim, 3, 2, 1, bias=False, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(x)


class ConvBlock(nn.Module):
    """Residual conv block on NCHW maps: conv3x3 -> BN -> GELU(tanh) -> conv3x3 -> BN."""

    def __init__(self, dim: int, drop_path: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1, **dd)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5, **dd)
        self.act1 = nn.GELU(approximate="tanh")
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1, **dd)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return x + self.drop_path(y)


def _depthwise_conv_tokens(x: torch.Tensor, conv: nn.Conv1d, causal: bool) -> torch.Tensor:
    """Depthwise conv (``conv``'s weight) over the token axis of a token-major (batch, L,
    channels) tensor; no bias.

    Runs as a channels-last conv2d on the (batch, channels, 1, L) view of the same memory, so
    neither the input nor the output is transposed in memory (a conv1d would copy both to
    channel-major). Returns token-major (batch, L, channels). Kernel size and groups come from
    the module, not from tensor shapes: an FX trace sees plain ints there, not proxies."""
    k = conv.kernel_size[0]
    length = x.shape[1]
    image = x.transpose(1, 2).unsqueeze(2)  # (batch, C, 1, L): channels-last strides, a view
    weight = conv.weight.unsqueeze(2)
    if causal:  # out[t] = sum_j w[j] x[t - k + 1 + j]
        y = F.conv2d(image, weight, padding=(0, k - 1), groups=conv.groups)
        y = y[..., :length]
    else:  # odd k: centred; even k: the extra zero on the right, as padding="same"
        y = F.conv2d(image, weight, padding=(0, k // 2), groups=conv.groups)
        if k % 2 == 0:
            y = y[..., 1:length + 1]
    return y.squeeze(2).transpose(1, 2)


class MambaVisionMixer(nn.Module):
    """The MambaVision token mixer on (batch, L, C) sequences.

    ``in_proj`` splits into x and z halves of ``d_inner/2 = expand*C/2`` channels each. x goes
    through a depthwise conv, SiLU and the selective scan. The ablation options change the rest:

    ==========  ======  ===========================================================  ==========
    branch      out     y                                                            out_proj in
    ==========  ======  ===========================================================  ==========
    on          concat  [scan(x), SiLU(conv1d_z(z))]  (released MambaVision)         d_inner
    on          gate    scan(x) * SiLU(conv1d_z(z))                                  d_inner/2
    off         gate    scan(x) * SiLU(z)  (original Mamba; z gates inside the scan)   d_inner/2
    off         concat  scan(x)  (in_proj has no z half)                            d_inner/2
    ==========  ======  ===========================================================  ==========

    The scan always runs on ``d_inner/2`` channels, so its cost is the same in every variant.
    """

    def __init__(self, dim: int, opts: MixerOptions | None = None,
                 scan_backend: str = "auto", device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        opts = opts or MixerOptions()
        dims = MixerDims.of(dim, opts)
        self.dim = dim
        self.opts = opts
        self.dims = dims
        self.d_state = dims.d_state
        self.d_inner = dims.d_inner
        self.d_half = dims.d_half
        self.dt_rank = dims.dt_rank
        self.causal = opts.conv1d == "causal"
        self.scan_backend = scan_backend
        self.has_z = dims.has_z
        self.in_proj = nn.Linear(dim, dims.in_proj_out, bias=False, **dd)
        self.conv1d_x = nn.Conv1d(self.d_half, self.d_half, dims.d_conv, groups=self.d_half,
                                  bias=False, **dd)
        if dims.branch:
            self.conv1d_z = nn.Conv1d(self.d_half, self.d_half, dims.d_conv, groups=self.d_half,
                                      bias=False, **dd)
        self.x_proj = nn.Linear(self.d_half, dims.x_proj_out, bias=False, **dd)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_half, bias=True, **dd)
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device)
        self.A_log = nn.Parameter(torch.log(A.repeat(self.d_half, 1)).to(dtype=dtype))
        self.D = nn.Parameter(torch.ones(self.d_half, **dd))
        self.out_proj = nn.Linear(dims.out_proj_in, dim, bias=False, **dd)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # Token-major (batch, L, channels) throughout: the scan reads channel-major views of it
        # through their strides, so no activation is transposed in memory. in_proj runs as two
        # GEMMs on row blocks of its weight, giving x and z as separate contiguous tensors.
        w = self.in_proj.weight
        x = F.linear(hidden, w[:self.d_half])
        z = F.linear(hidden, w[self.d_half:]) if self.has_z else None
        x = F.silu(_depthwise_conv_tokens(x, self.conv1d_x, self.causal))
        if self.opts.branch:
            z = F.silu(_depthwise_conv_tokens(z, self.conv1d_z, self.causal))
        x_dbl = F.linear(x, self.x_proj.weight)  # (batch, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # Reference quirk kept for weight compatibility: dt_proj adds its bias here and the
        # scan adds it again through delta_bias, so the step is softplus(W dt + 2b).
        delta = self.dt_proj(dt)
        A = -torch.exp(self.A_log.float())
        gate_in_scan = z if (not self.opts.branch and self.opts.out == "gate") else None
        y = selective_scan(x.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2),
                           C.transpose(1, 2), self.D.float(),
                           z=None if gate_in_scan is None else gate_in_scan.transpose(1, 2),
                           delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                           backend=self.scan_backend).transpose(1, 2)  # (batch, L, d_half)
        if self.opts.branch:
            y = torch.cat([y, z], dim=-1) if self.opts.out == "concat" else y * z
        return self.out_proj(y)


class Attention(nn.Module):
    """Plain multi-head self-attention on (batch, L, C): fused SDPA, no position bias."""

    def __init__(self, dim: int, heads: int, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenBlock(nn.Module):
    """Pre-norm block on (batch, L, C): x += g1*mixer(LN(x)); x += g2*MLP(LN(x)).

    ``mixer`` is a MambaVisionMixer ("M") or Attention ("A"); ``gamma_1``/``gamma_2`` exist only
    with layer scale, as in the released checkpoints.
    """

    def __init__(self, dim: int, kind: str, heads: int, mixer_opts: MixerOptions,
                 mlp_ratio: float, drop_path: float, layer_scale: float | None,
                 scan_backend: str = "auto", device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.kind = kind
        self.norm1 = nn.LayerNorm(dim, **dd)
        if kind == "M":
            self.mixer = MambaVisionMixer(dim, mixer_opts, scan_backend, **dd)
        else:
            self.mixer = Attention(dim, heads, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), **dd)
        if layer_scale is not None:
            self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dim, **dd))
            self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dim, **dd))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mixer(self.norm1(x))
        x = x + self.drop_path(y if self.gamma_1 is None else self.gamma_1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma_2 is None else self.gamma_2 * y)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, C, H, W) with H, W multiples of ``window`` -> (B*nW, window*window, C), row-major."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // window, window, w // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``window_partition``: (B*nW, window*window, C) -> (B, C, H, W)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, c, h, w)


def to_tokens(x: torch.Tensor, window: int | None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """NCHW map -> token sequences, zero-padding right/bottom up to a window multiple.

    Returns the tokens and what ``from_tokens`` needs to undo it. ``window=None`` is global
    attention: the whole map is one sequence.
    """
    b, c, h, w = x.shape
    if window is None:
        return x.flatten(2).transpose(1, 2), (h, w, h, w)
    pad_r, pad_b = (window - w % window) % window, (window - h % window) % window
    x = _pad_right_bottom(x, pad_r, pad_b)
    hp, wp = h + pad_b, w + pad_r
    return window_partition(x, window), (h, w, hp, wp)


def from_tokens(tokens: torch.Tensor, window: int | None, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``to_tokens`` (crops the padding away)."""
    h, w, hp, wp = shape
    if window is None:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
    return _crop(window_reverse(tokens, window, hp, wp), h, w)


# The two size-dependent branches of the windowing are FX leaves: a symbolic trace cannot take a
# branch on a traced size, so each becomes one call node that decides at run time. timm's tracers
# read the registry; torch.fx.wrap covers any other FX tracer.
@register_notrace_function
def _pad_right_bottom(x: torch.Tensor, right: int, bottom: int) -> torch.Tensor:
    """Zero-pad the right and bottom of an NCHW map (no copy when nothing is padded)."""
    if right or bottom:
        x = F.pad(x, (0, right, 0, bottom))
    return x


@register_notrace_function
def _crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The top-left ``h`` x ``w`` of an NCHW map (no copy when it is the whole map)."""
    if x.shape[2] != h or x.shape[3] != w:
        x = x[:, :, :h, :w].contiguous()
    return x


torch.fx.wrap("_pad_right_bottom")
torch.fx.wrap("_crop")
