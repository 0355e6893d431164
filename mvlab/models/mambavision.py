"""The network: a grammar spec turned into MambaVision's four-stage layout.

    patch_embed (stem_stride) -> levels.0 .. levels.3 (blocks, then downsample except the last)
      -> norm (BatchNorm2d) -> global average pool -> head

A level runs its blocks in order. Conv blocks work on the NCHW map; each run of consecutive
mixer/attention blocks works on token sequences (windows, zero-padded right/bottom when the map
does not divide, or the whole map when ``window`` is none) and is folded back to a map after.
For the released layouts that is exactly the reference: one partition per level.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from mvlab.grammar import PRESETS, ModelSpec, StageSpec, format_spec, parse_spec
from mvlab.models.blocks import ConvBlock, Downsample, Stem, TokenBlock, from_tokens, to_tokens
from mvlab.models.weights import checkpoint_filter_fn
from mvlab.ops import resolve_backend


class Level(nn.Module):
    """One stage: ``blocks`` (module names as in the released checkpoints) then ``downsample``."""

    def __init__(self, stage: StageSpec, out_width: int | None, drop_path: list[float],
                 mlp_ratio: float, layer_scale: float | None, scan_backend: str,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.window = stage.window
        self.letters = stage.blocks
        blocks: list[nn.Module] = []
        for j, letter in enumerate(self.letters):
            if letter == "C":
                blocks.append(ConvBlock(stage.width, drop_path[j], **dd))
            else:
                blocks.append(TokenBlock(stage.width, letter, stage.heads or 1,
                                         stage.mixer_for(j), mlp_ratio, drop_path[j],
                                         layer_scale, scan_backend, **dd))
        self.blocks = nn.ModuleList(blocks)
        self.downsample = Downsample(stage.width, out_width, **dd) if out_width else None
        # The stage's features are the blocks' output, before the downsample: this parameter-free
        # module names that point for timm's FX and hook feature extraction (feature_info).
        self.features = nn.Identity()
        self.grad_checkpointing = False
        # Runs of same-domain blocks: (is_token_run, start, stop).
        self._runs: list[tuple[bool, int, int]] = []
        for j, letter in enumerate(self.letters):
            token = letter != "C"
            if self._runs and self._runs[-1][0] == token:
                self._runs[-1] = (token, self._runs[-1][1], j + 1)
            else:
                self._runs.append((token, j, j + 1))

    def _run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks only (NCHW in, NCHW out, same size): what a feature tap sees."""
        for token, start, stop in self._runs:
            if token:
                tokens, shape = to_tokens(x, self.window)
                x = from_tokens(self._run(tokens, start, stop), self.window, shape)
            else:
                x = self._run(x, start, stop)
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


class MambaVision(nn.Module):
    """A MambaVision-family network built from a grammar spec.

    ``spec`` (canonical string) rebuilds it exactly: ``build_model(model.spec)``. The timm model
    API is implemented: forward_features, forward_head(pre_logits=...), forward_intermediates,
    reset_classifier, no_weight_decay, group_matcher, set_grad_checkpointing.
    """

    def __init__(self, spec: ModelSpec | str, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg",
                 drop_path_rate: float | None = None, scan_backend: str = "auto",
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)  # timm's factory kwargs: build on meta, in bf16
        spec = parse_spec(spec)
        if drop_path_rate is not None:  # timm's spelling of the spec's drop_path
            from dataclasses import replace
            spec = parse_spec(replace(spec, drop_path=drop_path_rate))
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '' (none), got {global_pool!r}")
        self.model_spec = spec
        self.spec = format_spec(spec)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self._scan_backend = scan_backend
        widths = spec.widths
        self.num_features = self.head_hidden_size = widths[-1]
        self.patch_embed = Stem(in_chans, spec.stem, widths[0], spec.stem_stride, **dd)
        total = sum(spec.depths)
        rates = [spec.drop_path * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        levels, start = [], 0
        self.feature_info = []
        for i, stage in enumerate(spec.stages):
            out_width = widths[i + 1] if i + 1 < len(widths) else None
            levels.append(Level(stage, out_width, rates[start:start + stage.depth],
                                spec.mlp_ratio, spec.layer_scale, scan_backend, **dd))
            start += stage.depth
            self.feature_info.append(dict(num_chs=stage.width, reduction=spec.stem_stride * 2 ** i,
                                          module=f"levels.{i}.features"))
        self.levels = nn.ModuleList(levels)
        self.norm = nn.BatchNorm2d(self.num_features, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = (nn.Linear(self.num_features, num_classes, **dd) if num_classes
                     else nn.Identity())
        self.apply(_init_weights)

    # ---------------------------------------------------------------------- scan backend
    @property
    def scan_backend(self) -> str:
        return self._scan_backend

    def set_scan_backend(self, name: str) -> None:
        """Route every mixer's scan through backend ``name`` ("auto" or a registered one)."""
        if name != "auto":
            resolve_backend(name)  # fail now, not at the first forward
        self._scan_backend = name
        for module in self.modules():
            if hasattr(module, "scan_backend") and module is not self:
                module.scan_backend = name

    # --------------------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Stage outputs (before each downsample) as timm's feature API expects.

        ``indices``: last n stages if int, all if None, else those stage indices. ``norm``
        applies the final BatchNorm to the last stage's output. With ``stop_early`` the stages
        after the last wanted one do not run, and the returned map is that stage's features.
        """
        if output_fmt != "NCHW":
            raise ValueError("MambaVision intermediates are NCHW only")
        take, max_index = feature_take_indices(len(self.levels), indices)
        intermediates = []
        x = self.patch_embed(x)
        last = len(self.levels) - 1
        levels = self.levels[:max_index + 1] if stop_early else self.levels
        for i, level in enumerate(levels):
            x = level.forward_blocks(x)
            if i in take:
                intermediates.append(self.norm(x) if norm and i == last else x)
            if i == len(levels) - 1 and len(levels) <= last:
                break  # stopped early: x stays the last stage run's features, as they were taken
            if level.downsample is not None:
                x = level.downsample(x)
        if intermediates_only:
            return intermediates
        # the final norm belongs to the last stage's width: only a full pass reaches it
        return (self.norm(x) if len(levels) > last else x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages, norm and head that the wanted intermediates do not need."""
        take, max_index = feature_take_indices(len(self.levels), indices)
        prune_end = max_index < len(self.levels) - 1
        self.levels = self.levels[:max_index + 1]
        self.levels[-1].downsample = None
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take

    # ------------------------------------------------------------------------ timm hooks
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '' (none), got {global_pool!r}")
            self.global_pool = global_pool
        # the new head lives where the network lives (device, dtype, train/eval mode)
        if num_classes:
            like = next(self.parameters())
            self.head = nn.Linear(self.num_features, num_classes, device=like.device,
                                  dtype=like.dtype)
            _init_weights(self.head)
        else:
            self.head = nn.Identity()
        self.head.train(self.training)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Full names of every mixer's A_log and D (the SSM parameters take no weight decay)."""
        return {name for name, _ in self.named_parameters()
                if name.endswith(".mixer.A_log") or name.endswith(".mixer.D")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^levels\.(\d+)" if coarse else [
                (r"^levels\.(\d+)\.blocks\.(\d+)", None),
                (r"^levels\.(\d+)\.downsample", (0,)),
                (r"^norm", (99999,)),
            ],
        )

    def early_part(self, stages: int) -> tuple[str, ...]:
        """State-dict name prefixes of the stem and the first ``stages`` stages, downsamples
        included: the part ``train.early_init_seed`` starts from one seed in every run. At least
        one stage stays out of it, so that a run's own seed still starts something it varies."""
        if not 0 <= stages < len(self.levels):
            raise ValueError(f"{stages} early stages: this network has {len(self.levels)}, and "
                             f"at most {len(self.levels) - 1} can start from a fixed seed")
        return ("patch_embed.", *(f"levels.{i}." for i in range(stages)))

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for level in self.levels:
            level.grad_checkpointing = enable


def _init_weights(module: nn.Module) -> None:
    # As the reference: every Linear trunc-normal(.02), bias 0 -- this also overwrites the
    # Mamba-style dt_proj init; LayerNorm weight 1, bias 0; convs keep PyTorch's default.
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------- timm registry
# As in timm's own model files: the configs, one builder, then one registered function per
# name, so that a name found in a config or a log leads to its definition by a plain search.

_HF = "https://huggingface.co/nvidia/{repo}/resolve/main/{file}"


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.conv_down.0",
        "classifier": "head", "crop_mode": "center",
        "license": "nvidia-source-code-license-nc (weights)", **kwargs,
    }


def _hf(repo: str, file: str, crop_pct: float) -> dict[str, Any]:
    return _cfg(_HF.format(repo=repo, file=file), crop_pct=crop_pct)


# Official ImageNet-1K weights (NVIDIA's release on the Hugging Face hub) and the eval crops NVIDIA
# published with them. Nothing is bundled: download the .pth.tar and call
# mvlab.load_pretrained(model, path), or pretrained=True where the hub is reachable.
default_cfgs = generate_default_cfgs({
    "mambavision_t.in1k": _hf("MambaVision-T-1K", "mambavision_tiny_1k.pth.tar", 1.0),
    "mambavision_t2.in1k": _hf("MambaVision-T2-1K", "mambavision_tiny2_1k.pth.tar", 0.98),
    "mambavision_s.in1k": _hf("MambaVision-S-1K", "mambavision_small_1k.pth.tar", 0.93),
    "mambavision_b.in1k": _hf("MambaVision-B-1K", "mambavision_base_1k.pth.tar", 1.0),
    "mambavision_l.in1k": _hf("MambaVision-L-1K", "mambavision_large_1k.pth.tar", 1.0),
    "mambavision_l2.in1k": _hf("MambaVision-L2-1K", "mambavision_large2_1k.pth.tar", 1.0),
    "mambavision_l3.in21k_ft_in1k": _cfg(crop_pct=1.0),
    "mambavision_tiny.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    "mambavision_proxy.untrained": _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    "mambavision_spec.untrained": _cfg(),
})

# timm name -> grammar preset; tests/test_timm_contract.py checks that every preset has its
# registered function below and that nothing else is registered under mambavision_*.
TIMM_NAMES = {f"mambavision_{name.lower()}": name for name in PRESETS}


def create_mambavision(variant: str, spec: ModelSpec | str, pretrained: bool = False,
                       **kwargs: Any) -> MambaVision:
    """timm's builder for the registered ``variant`` (its pretrained config) with ``spec``."""
    return build_model_with_cfg(
        MambaVision, variant, pretrained, spec=spec,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs)


@register_model
def mambavision_t(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """MambaVision-T: depths 1-3-8-4, widths 80-640, 31.8 M parameters."""
    return create_mambavision("mambavision_t", PRESETS["T"], pretrained, **kwargs)


@register_model
def mambavision_t2(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """MambaVision-T2: depths 1-3-11-4, widths 80-640, 35.1 M parameters."""
    return create_mambavision("mambavision_t2", PRESETS["T2"], pretrained, **kwargs)


@register_model
def mambavision_s(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """MambaVision-S: depths 3-3-7-5, widths 96-768, 50.1 M parameters."""
    return create_mambavision("mambavision_s", PRESETS["S"], pretrained, **kwargs)


@register_model
def mambavision_b(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """MambaVision-B: depths 3-3-10-5, widths 128-1024, layer scale, 97.7 M parameters."""
    return create_mambavision("mambavision_b", PRESETS["B"], pretrained, **kwargs)


@register_model
def mambavision_l(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """MambaVision-L: depths 3-3-10-5, widths 196-1568, layer scale, 228.0 M parameters."""
    return create_mambavision("mambavision_l", PRESETS["L"], pretrained, **kwargs)


@register_model
def mambavision_l2(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """MambaVision-L2: depths 3-3-12-5, widths 196-1568, layer scale, 241.6 M parameters."""
    return create_mambavision("mambavision_l2", PRESETS["L2"], pretrained, **kwargs)


@register_model
def mambavision_l3(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """MambaVision-L3: depths 3-3-20-10, widths 256-2048, layer scale, 739.6 M parameters."""
    return create_mambavision("mambavision_l3", PRESETS["L3"], pretrained, **kwargs)


@register_model
def mambavision_tiny(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """mvlab's CPU test size: depths 1-1-2-2, widths 16-128, global attention, 64 px."""
    return create_mambavision("mambavision_tiny", PRESETS["tiny"], pretrained, **kwargs)


@register_model
def mambavision_proxy(pretrained: bool = False, **kwargs: Any) -> MambaVision:
    """The sweeps' default proxy: T's depths at widths 24-192, global attention, 64 px."""
    return create_mambavision("mambavision_proxy", PRESETS["proxy"], pretrained, **kwargs)


@register_model
def mambavision_spec(pretrained: bool = False, spec: ModelSpec | str = "T",
                     **kwargs: Any) -> MambaVision:
    """Any grammar spec (string, ModelSpec or preset name) as a timm model."""
    return create_mambavision("mambavision_spec", spec, pretrained, **kwargs)
