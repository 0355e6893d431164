"""The block grammar: one typed spec per network, one canonical text form per spec.

A spec says, for each of the four stages, how deep and wide it is, which blocks it holds (conv
``C``, MambaVision mixer ``M``, attention ``A``) through a named pattern or an explicit sequence,
and the mixer/attention options. ``format_spec`` writes the canonical text form and
``parse_spec`` reads it back: ``parse_spec(format_spec(s)) == s`` for every valid spec, so any
trial can be rebuilt exactly from the string it logged.

    stem=32 mlp=4 drop_path=0.2 layer_scale=none | depth=1 width=80 pattern=conv | ...
      | depth=8 width=320 pattern=last_half heads=8 window=14 d_state=8 d_conv=3 expand=1
        branch=on conv1d=regular out=concat | ...

This module knows nothing of torch: it is plain data, shared by the builder, the analytic
complexity, the study's search space and the CLI. See docs/grammar.md for the user reference.
"""
from __future__ import annotations

import functools
import math
import random
import re
import shlex
from dataclasses import dataclass, replace
from typing import Any

from mvlab.errors import SpecError

NUM_STAGES = 4
BLOCK_LETTERS = ("C", "M", "A")
# Upper bounds on every size a spec gives (docs/grammar.md, "Limits"), checked before anything is
# expanded or built: a typo such as depth=1000000000 is an error, not gigabytes of blocks. Each is
# several times what the largest released model (L3) uses.
MAX_SIZES = {"stem": 1024, "depth": 64, "width": 4096, "heads": 256, "window": 256,
             "d_state": 256, "d_conv": 16, "expand": 8}
MAX_MLP_RATIO = 16.0
MAX_WEIGHTS = 4_000_000_000  # about 5x L3; estimated from the sizes (approx_weights)


# --------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class MixerOptions:
    """Options of one MambaVision mixer (the released design is the default)."""

    d_state: int = 8
    d_conv: int = 3
    expand: int = 1
    branch: bool = True  # the symmetric non-SSM branch (conv1d_z -> SiLU on z)
    conv1d: str = "regular"  # "regular" (same padding, non-causal) | "causal" (left padding)
    out: str = "concat"  # "concat" [scan(x), z] | "gate" scan(x) * SiLU(z)


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``depth`` blocks of width ``width`` laid out by ``pattern``.

    ``heads``, ``window`` and ``mixer`` are set exactly when the stage holds a mixer or an
    attention block (``window=None`` means global: the whole map is one sequence).
    ``overrides`` gives some mixer blocks (index from 0 within the stage) their own options.
    """

    depth: int
    width: int
    pattern: str = "conv"
    heads: int | None = None
    window: int | None = None
    mixer: MixerOptions | None = None
    overrides: tuple[tuple[int, MixerOptions], ...] = ()

    @property
    def blocks(self) -> tuple[str, ...]:
        """The block letters of this stage, one per block."""
        return expand_pattern(self.pattern, self.depth)

    @property
    def has_tokens(self) -> bool:
        """True when the stage holds mixer or attention blocks (runs on token sequences)."""
        return any(letter != "C" for letter in self.blocks)

    def mixer_for(self, index: int) -> MixerOptions:
        """The mixer options of block ``index`` (its override, else the stage's)."""
        for i, opts in self.overrides:
            if i == index:
                return opts
        return self.mixer or MixerOptions()


@dataclass(frozen=True)
class ModelSpec:
    """A whole network: stem width, four stages and the global training-time options."""

    stem: int
    stages: tuple[StageSpec, ...]
    mlp_ratio: float = 4.0
    drop_path: float = 0.2
    layer_scale: float | None = None
    stem_stride: int = 4  # 4 as released; 2 or 1 keep more tokens at a low input resolution

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    @property
    def num_features(self) -> int:
        return self.stages[-1].width

    def __str__(self) -> str:
        return format_spec(self)


# ------------------------------------------------------------------------------------ patterns
_PATTERN_HELP = (
    "conv, last_half, first_half, interleave, interleave:A, last_quarter, last_n:K, first_n:K, "
    "every_k:K, mamba_only, attn_only, random:P,SEED, or letters C/M/A such as MMAMAA"
)
_NAMED = re.compile(r"^(?P<name>[a-z_]+)(?::(?P<arg>.*))?$")


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{what}: expected an integer, got {text!r}") from None


def _parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{what}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise SpecError(f"{what}: expected a finite number, got {text!r}")
    return value


def _fmt_float(value: float) -> str:
    """Shortest text that reads back as the same float (``4.0`` -> ``4``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def canonical_pattern(pattern: str, depth: int | None = None, where: str = "pattern") -> str:
    """The canonical spelling of ``pattern`` (checked against ``depth`` when given).

    Raises SpecError naming the token when the pattern is unknown or impossible at ``depth``.
    """
    text = str(pattern).strip()
    letters = re.sub(r"[\s,]+", "", text)
    if letters and set(letters.upper()) <= set(BLOCK_LETTERS):  # no named pattern is all C/M/A
        seq = letters.upper()
        if depth is not None and len(seq) != depth:
            raise SpecError(f"{where}: sequence {seq} has {len(seq)} blocks but depth is {depth}; "
                            f"give one letter per block or change depth")
        return seq
    match = _NAMED.match(text)
    if not match:
        raise SpecError(f"{where}: unknown pattern {text!r}; use one of: {_PATTERN_HELP}")
    name, arg = match["name"], match["arg"]
    plain = {"conv", "last_half", "first_half", "last_quarter", "mamba_only", "attn_only"}
    if name in plain:
        if arg is not None:
            raise SpecError(f"{where}: pattern {name} takes no argument, got {text!r}")
        return name
    if name == "interleave":
        first = (arg or "M").upper()
        if first not in ("M", "A"):
            raise SpecError(f"{where}: interleave:{arg} must start with M or A "
                            f"(interleave = M first, interleave:A = A first)")
        return "interleave" if first == "M" else "interleave:A"
    if name in ("last_n", "first_n", "every_k"):
        if arg is None:
            raise SpecError(f"{where}: pattern {name} needs a count, e.g. {name}:2")
        k = _parse_int(arg, f"{where}: {name}")
        if name == "every_k" and k < 1:
            raise SpecError(f"{where}: every_k:{k} needs k >= 1")
        if k < 0:
            raise SpecError(f"{where}: {name}:{k} needs a count >= 0")
        if depth is not None and name != "every_k" and k > depth:
            raise SpecError(f"{where}: {name}:{k} needs depth >= {k}, got {depth}")
        return f"{name}:{k}"
    if name == "random":
        parts = (arg or "").split(",")
        if len(parts) != 2:
            raise SpecError(f"{where}: random needs an attention fraction and a seed, "
                            f"e.g. random:0.5,0; got {text!r}")
        p = _parse_float(parts[0], f"{where}: random fraction")
        seed = _parse_int(parts[1], f"{where}: random seed")
        if not 0.0 <= p <= 1.0:
            raise SpecError(f"{where}: random fraction must be in [0, 1], got {parts[0]}")
        return f"random:{_fmt_float(p)},{seed}"
    raise SpecError(f"{where}: unknown pattern {text!r}; use one of: {_PATTERN_HELP}")


@functools.lru_cache(maxsize=4096)  # a pure function, called for every stage of every spec
def expand_pattern(pattern: str, depth: int) -> tuple[str, ...]:
    """The block letters ("C", "M", "A") that ``pattern`` gives a stage of ``depth`` blocks.

    ``last_half`` is the paper's rule: floor(N/2) attention blocks at the end, so an odd depth
    gets one more mixer block than attention blocks. ``first_half`` is its mirror image.
    """
    if depth < 1:
        raise SpecError(f"pattern {pattern}: depth must be >= 1, got {depth}")
    if depth > MAX_SIZES["depth"]:
        raise SpecError(f"pattern {pattern}: depth must be <= {MAX_SIZES['depth']}, got {depth}")
    canon = canonical_pattern(pattern, depth)
    n = depth
    if set(canon) <= set(BLOCK_LETTERS):
        return tuple(canon)
    name, _, arg = canon.partition(":")
    if name == "conv":
        return ("C",) * n
    if name == "mamba_only":
        return ("M",) * n
    if name == "attn_only":
        return ("A",) * n
    if name == "last_half":
        return ("M",) * (n - n // 2) + ("A",) * (n // 2)
    if name == "first_half":
        return ("A",) * (n // 2) + ("M",) * (n - n // 2)
    if name == "last_quarter":
        return ("M",) * (n - n // 4) + ("A",) * (n // 4)
    if name == "interleave":
        first, second = ("A", "M") if arg == "A" else ("M", "A")
        return tuple(first if j % 2 == 0 else second for j in range(n))
    if name == "last_n":
        k = int(arg)
        return ("M",) * (n - k) + ("A",) * k
    if name == "first_n":
        k = int(arg)
        return ("A",) * k + ("M",) * (n - k)
    if name == "every_k":
        k = int(arg)
        return tuple("A" if (j + 1) % k == 0 else "M" for j in range(n))
    if name == "random":
        p_text, seed_text = arg.split(",")
        count = min(n, int(math.floor(float(p_text) * n + 0.5)))
        chosen = set(random.Random(int(seed_text)).sample(range(n), count))
        return tuple("A" if j in chosen else "M" for j in range(n))
    raise AssertionError(f"unhandled pattern {canon}")  # canonical_pattern rejects the rest


# ---------------------------------------------------------------------------------- validation
def default_heads(width: int) -> int:
    """Heads used when a spec omits them: the most powers of two keeping head dim >= 32."""
    heads = 1
    while width % (heads * 2) == 0 and width // (heads * 2) >= 32:
        heads *= 2
    return heads


def _check_size(value: Any, key: str, where: str) -> None:
    """``value`` is an integer in 1..MAX_SIZES[key]."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"{where}: {key} must be an integer >= 1, got {value!r}")
    if value > MAX_SIZES[key]:
        raise SpecError(f"{where}: {key}={value} is above the limit of {MAX_SIZES[key]} "
                        f"(docs/grammar.md, Limits)")


def _check_mixer(opts: MixerOptions, width: int, where: str) -> None:
    for key in ("d_state", "d_conv", "expand"):
        _check_size(getattr(opts, key), key, where)
    if not isinstance(opts.branch, bool):
        raise SpecError(f"{where}: branch must be on or off, got {opts.branch!r}")
    if opts.conv1d not in ("regular", "causal"):
        raise SpecError(f"{where}: conv1d must be regular or causal, got {opts.conv1d!r}")
    if opts.out not in ("concat", "gate"):
        raise SpecError(f"{where}: out must be concat or gate, got {opts.out!r}")
    if (width * opts.expand) % 2:
        raise SpecError(f"{where}: width*expand = {width * opts.expand} must be even "
                        f"(the mixer splits it into x and z halves)")


def normalize_stage(stage: StageSpec, where: str) -> StageSpec:
    """Check ``stage`` and bring it to canonical form (defaults filled, irrelevant keys dropped)."""
    for key in ("depth", "width"):
        _check_size(getattr(stage, key), key, where)
    pattern = canonical_pattern(stage.pattern, stage.depth, where)
    blocks = expand_pattern(pattern, stage.depth)
    if all(b == "C" for b in blocks):
        if stage.overrides:
            raise SpecError(f"{where}: per-block mixer options (b{stage.overrides[0][0]}.*) "
                            f"need mixer blocks, but pattern {pattern} has only conv blocks")
        return StageSpec(stage.depth, stage.width, pattern)
    heads = default_heads(stage.width) if stage.heads is None else stage.heads
    _check_size(heads, "heads", where)
    if stage.width % heads:
        raise SpecError(f"{where}: width {stage.width} is not divisible by heads={heads}; "
                        f"pick heads that divide the width")
    window = stage.window
    if window is not None:
        _check_size(window, "window", where)
    mixer = stage.mixer or MixerOptions()
    _check_mixer(mixer, stage.width, where)
    overrides = {}
    for index, opts in stage.overrides:
        if not 0 <= index < stage.depth:
            raise SpecError(f"{where}: b{index}.* names block {index}, but the stage has blocks "
                            f"0..{stage.depth - 1}")
        if blocks[index] != "M":
            raise SpecError(f"{where}: b{index}.* sets mixer options, but block {index} is "
                            f"{_LETTER_NAMES[blocks[index]]} block (pattern {pattern})")
        if index in overrides:
            raise SpecError(f"{where}: block b{index} has two override entries")
        _check_mixer(opts, stage.width, f"{where}: b{index}")
        if opts != mixer:  # an override equal to the stage options is no override
            overrides[index] = opts
    return StageSpec(stage.depth, stage.width, pattern, heads, window, mixer,
                     tuple(sorted(overrides.items())))


_LETTER_NAMES = {"C": "a conv", "M": "a mixer", "A": "an attention"}


def approx_weights(stages: tuple[StageSpec, ...], mlp_ratio: float) -> int:
    """An upper estimate of a network's weights from its sizes alone (the exact count is
    ``mvlab.models.complexity``): conv blocks two 3x3 convs, token blocks their MLP, four
    width^2 projections and the mixer's expanded ones."""
    total = 0
    for stage in stages:
        for j, letter in enumerate(stage.blocks):
            w = stage.width
            if letter == "C":
                total += 18 * w * w
                continue
            opts = stage.mixer_for(j)
            total += int(2 * mlp_ratio * w * w) + 4 * w * w
            if letter == "M":
                inner = w * opts.expand
                total += 2 * w * inner + inner * (opts.d_conv + 2 * opts.d_state + w)
    return total


def normalize_spec(spec: ModelSpec) -> ModelSpec:
    """Check ``spec`` and return its canonical form; raises SpecError naming the bad part."""
    _check_size(spec.stem, "stem", "global")
    if len(spec.stages) != NUM_STAGES:
        raise SpecError(f"a spec has {NUM_STAGES} stages separated by ' | ' after the global "
                        f"segment; got {len(spec.stages)}")
    mlp = float(spec.mlp_ratio)
    if not math.isfinite(mlp) or mlp <= 0:
        raise SpecError(f"global: mlp must be > 0, got {spec.mlp_ratio!r}")
    if mlp > MAX_MLP_RATIO:
        raise SpecError(f"global: mlp={_fmt_float(mlp)} is above the limit of "
                        f"{_fmt_float(MAX_MLP_RATIO)} (docs/grammar.md, Limits)")
    dp = float(spec.drop_path)
    if not 0.0 <= dp < 1.0:
        raise SpecError(f"global: drop_path must be in [0, 1), got {spec.drop_path!r}")
    ls = spec.layer_scale
    if ls is not None:
        ls = float(ls)
        if not math.isfinite(ls) or ls <= 0:
            raise SpecError(f"global: layer_scale must be > 0 or none, got {spec.layer_scale!r}")
    if not isinstance(spec.stem_stride, int) or spec.stem_stride not in STEM_STRIDES \
            or isinstance(spec.stem_stride, bool):
        raise SpecError(f"global: stem_stride must be one of {', '.join(map(str, STEM_STRIDES))}, "
                        f"got {spec.stem_stride!r}")
    stages = tuple(normalize_stage(s, f"stage {i + 1}") for i, s in enumerate(spec.stages))
    for i, stage in enumerate(stages):
        if stage.has_tokens and int(stage.width * mlp) < 1:
            raise SpecError(f"stage {i + 1}: mlp={_fmt_float(mlp)} gives an empty MLP hidden "
                            f"layer at width {stage.width}")
    weights = approx_weights(stages, mlp)
    if weights > MAX_WEIGHTS:
        raise SpecError(f"global: the spec has about {weights / 1e9:.1f} billion weights, above "
                        f"the limit of {MAX_WEIGHTS / 1e9:.0f} billion (docs/grammar.md, Limits); "
                        f"use smaller widths or depths")
    return ModelSpec(spec.stem, stages, mlp, dp, ls, spec.stem_stride)


# ------------------------------------------------------------------------------- text form
GLOBAL_KEYS = ("stem", "stem_stride", "mlp", "drop_path", "layer_scale")
# The stem's two 3x3 convs: stride 2 each as released (4), the first only (2), neither (1).
STEM_CONV_STRIDES = {4: (2, 2), 2: (2, 1), 1: (1, 1)}
STEM_STRIDES = tuple(sorted(STEM_CONV_STRIDES))
DEFAULT_STEM_STRIDE = 4
STAGE_KEYS = ("depth", "width", "pattern", "heads", "window")
MIXER_KEYS = ("d_state", "d_conv", "expand", "branch", "conv1d", "out")
_OVERRIDE = re.compile(r"^b(\d+)\.(\w+)$")


def _fmt_mixer_value(key: str, value: Any) -> str:
    if key == "branch":
        return "on" if value else "off"
    return str(value)


def _parse_mixer_value(key: str, text: str, where: str) -> Any:
    if key in ("d_state", "d_conv", "expand"):
        return _parse_int(text, f"{where}: {key}")
    if key == "branch":
        low = text.lower()
        if low in ("on", "true", "1", "yes"):
            return True
        if low in ("off", "false", "0", "no"):
            return False
        raise SpecError(f"{where}: branch must be on or off, got {text!r}")
    low = text.lower()
    allowed = ("regular", "causal") if key == "conv1d" else ("concat", "gate")
    if low not in allowed:
        raise SpecError(f"{where}: {key} must be {' or '.join(allowed)}, got {text!r}")
    return low


def format_spec(spec: ModelSpec) -> str:
    """The canonical text form of ``spec`` (validated first)."""
    spec = normalize_spec(spec)
    ls = "none" if spec.layer_scale is None else _fmt_float(spec.layer_scale)
    # stem_stride is written only when it differs from the released 4, so every spec that
    # predates the knob keeps its exact string (and the trials logged under it their identity).
    stride = "" if spec.stem_stride == DEFAULT_STEM_STRIDE else f" stem_stride={spec.stem_stride}"
    segments = [f"stem={spec.stem}{stride} mlp={_fmt_float(spec.mlp_ratio)} "
                f"drop_path={_fmt_float(spec.drop_path)} layer_scale={ls}"]
    for stage in spec.stages:
        words = [f"depth={stage.depth}", f"width={stage.width}", f"pattern={stage.pattern}"]
        if stage.has_tokens:
            words.append(f"heads={stage.heads}")
            words.append(f"window={'none' if stage.window is None else stage.window}")
            for key in MIXER_KEYS:
                words.append(f"{key}={_fmt_mixer_value(key, getattr(stage.mixer, key))}")
            for index, opts in stage.overrides:
                for key in MIXER_KEYS:
                    value = getattr(opts, key)
                    if value != getattr(stage.mixer, key):
                        words.append(f"b{index}.{key}={_fmt_mixer_value(key, value)}")
        segments.append(" ".join(words))
    return " | ".join(segments)


def _words(segment: str, where: str) -> list[tuple[str, str]]:
    try:
        tokens = shlex.split(segment)
    except ValueError as exc:
        raise SpecError(f"{where}: cannot split {segment.strip()!r} into words ({exc})") from None
    pairs: list[tuple[str, str]] = []
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq or not key or value == "":
            raise SpecError(f"{where}: expected key=value, got {token!r}")
        pairs.append((key.strip().lower(), value.strip()))
    return pairs


def _parse_stage(segment: str, where: str) -> StageSpec:
    values: dict[str, str] = {}
    mixer_values: dict[str, Any] = {}
    override_values: dict[int, dict[str, Any]] = {}
    for key, value in _words(segment, where):
        override = _OVERRIDE.match(key)
        if override:
            index, sub = int(override[1]), override[2]
            if sub not in MIXER_KEYS:
                raise SpecError(f"{where}: {key}: per-block keys are {', '.join(MIXER_KEYS)}")
            slot = override_values.setdefault(index, {})
            if sub in slot:
                raise SpecError(f"{where}: {key} given twice")
            slot[sub] = _parse_mixer_value(sub, value, f"{where}: {key}")
        elif key in MIXER_KEYS:
            if key in mixer_values:
                raise SpecError(f"{where}: {key} given twice")
            mixer_values[key] = _parse_mixer_value(key, value, where)
        elif key in STAGE_KEYS:
            if key in values:
                raise SpecError(f"{where}: {key} given twice")
            values[key] = value
        else:
            hint = " (global keys go in the first segment)" if key in GLOBAL_KEYS else ""
            raise SpecError(f"{where}: unknown key {key!r}{hint}; stage keys are "
                            f"{', '.join(STAGE_KEYS + MIXER_KEYS)} and b<i>.<mixer key>")
    pattern = values.get("pattern", "conv")
    token_keys = sorted(set(values) & {"heads", "window"}) + sorted(mixer_values)
    if override_values:
        token_keys.append(f"b{min(override_values)}.*")
    if token_keys and pattern.strip() == "conv":
        raise SpecError(f"{where}: {token_keys[0]} does not apply to pattern=conv (conv blocks "
                        f"only); drop it or give a pattern with M/A blocks")
    if "depth" in values:
        depth = _parse_int(values["depth"], f"{where}: depth")
    else:
        seq = re.sub(r"[\s,]+", "", pattern).upper()
        if seq and set(seq) <= set(BLOCK_LETTERS):
            depth = len(seq)  # an explicit sequence says its own depth
        else:
            raise SpecError(f"{where}: depth is missing; add depth=N")
    if "width" not in values:
        raise SpecError(f"{where}: width is missing; add width=N")
    width = _parse_int(values["width"], f"{where}: width")
    heads = _parse_int(values["heads"], f"{where}: heads") if "heads" in values else None
    window = None
    if values.get("window", "none").lower() not in ("none", "global"):
        window = _parse_int(values["window"], f"{where}: window")
    mixer = replace(MixerOptions(), **mixer_values)
    overrides = tuple((i, replace(mixer, **v)) for i, v in sorted(override_values.items()))
    return StageSpec(depth, width, pattern, heads, window, mixer, overrides)


def parse_spec(text: str | ModelSpec) -> ModelSpec:
    """Parse a canonical (or hand-written) spec string, or a preset name, into a ModelSpec.

    Accepts ``T``, ``mambavision_t``, ``tiny``... for presets. Missing stage keys take defaults
    (pattern=conv; heads, window=none and the released mixer options for token stages).
    Raises SpecError naming the offending key/token and the stage it is in.
    """
    if isinstance(text, ModelSpec):
        return normalize_spec(text)
    if not isinstance(text, str):
        raise SpecError(f"a spec is a string or ModelSpec, got {type(text).__name__}")
    stripped = text.strip()
    preset = preset_name(stripped)
    if preset is not None:
        return PRESETS[preset]
    if "=" not in stripped:
        raise SpecError(f"unknown preset {stripped!r}; presets are {', '.join(PRESETS)}, "
                        f"or write a spec such as: {format_spec(PRESETS['tiny'])}")
    segments = stripped.split("|")
    if len(segments) != NUM_STAGES + 1:
        raise SpecError(f"a spec has a global segment and {NUM_STAGES} stage segments separated "
                        f"by ' | '; got {len(segments)} segment(s)")
    glob: dict[str, str] = {}
    for key, value in _words(segments[0], "global"):
        key = "mlp" if key == "mlp_ratio" else key
        if key not in GLOBAL_KEYS:
            hint = " (stage keys go in the stage segments)" if key in STAGE_KEYS else ""
            raise SpecError(f"global: unknown key {key!r}{hint}; global keys are "
                            f"{', '.join(GLOBAL_KEYS)}")
        if key in glob:
            raise SpecError(f"global: {key} given twice")
        glob[key] = value
    if "stem" not in glob:
        raise SpecError("global: stem is missing; add stem=N to the first segment")
    stages = tuple(_parse_stage(seg, f"stage {i + 1}") for i, seg in enumerate(segments[1:]))
    ls_text = glob.get("layer_scale", "none")
    spec = ModelSpec(
        stem=_parse_int(glob["stem"], "global: stem"),
        stages=stages,
        mlp_ratio=_parse_float(glob.get("mlp", "4"), "global: mlp"),
        drop_path=_parse_float(glob.get("drop_path", "0.2"), "global: drop_path"),
        layer_scale=None if ls_text.lower() == "none" else _parse_float(ls_text,
                                                                         "global: layer_scale"),
        stem_stride=_parse_int(glob.get("stem_stride", str(DEFAULT_STEM_STRIDE)),
                               "global: stem_stride"),
    )
    return normalize_spec(spec)


# ------------------------------------------------------------------------------------ presets
def make_spec(dim: int, stem: int, depths: tuple[int, ...], heads: tuple[int, ...],
              windows: tuple[int | None, ...] = (None, None, 14, 7),
              patterns: tuple[str, ...] = ("conv", "conv", "last_half", "last_half"),
              drop_path: float = 0.2, layer_scale: float | None = None,
              mlp_ratio: float = 4.0, mixer: MixerOptions = MixerOptions()) -> ModelSpec:
    """A MambaVision-style spec from the paper's table columns (widths dim * 2**i)."""
    stages = tuple(
        StageSpec(depth=d, width=dim * 2 ** i, pattern=p, heads=h, window=w, mixer=mixer)
        for i, (d, h, w, p) in enumerate(zip(depths, heads, windows, patterns, strict=True))
    )
    return normalize_spec(ModelSpec(stem, stages, mlp_ratio, drop_path, layer_scale))


PRESETS: dict[str, ModelSpec] = {
    "T": make_spec(80, 32, (1, 3, 8, 4), (2, 4, 8, 16), drop_path=0.2),
    "T2": make_spec(80, 32, (1, 3, 11, 4), (2, 4, 8, 16), drop_path=0.2),
    "S": make_spec(96, 64, (3, 3, 7, 5), (2, 4, 8, 16), drop_path=0.2),
    "B": make_spec(128, 64, (3, 3, 10, 5), (2, 4, 8, 16), drop_path=0.3, layer_scale=1e-5),
    "L": make_spec(196, 64, (3, 3, 10, 5), (4, 8, 16, 32), drop_path=0.3, layer_scale=1e-5),
    "L2": make_spec(196, 64, (3, 3, 12, 5), (4, 8, 16, 32), drop_path=0.3, layer_scale=1e-5),
    "L3": make_spec(256, 64, (3, 3, 20, 10), (4, 8, 16, 32), drop_path=0.5, layer_scale=1e-5),
    # CPU test size: every block kind, small enough for fast forward/backward in tests.
    "tiny": make_spec(16, 8, (1, 1, 2, 2), (1, 1, 2, 4), windows=(None, None, None, None),
                      drop_path=0.0),
    # The sweep's default proxy: T's layout at a quarter of its width, global attention (64 px).
    "proxy": make_spec(24, 16, (1, 3, 8, 4), (1, 2, 4, 8), windows=(None, None, None, None),
                       drop_path=0.1),
}
"""Named specs. T..L3 equal the released MambaVision models (224 px windows)."""

_PRESET_ALIASES = {name.lower(): name for name in PRESETS}
_PRESET_ALIASES.update({f"mambavision_{name.lower()}": name for name in PRESETS})


def preset_name(text: str) -> str | None:
    """The preset ``text`` names ("T", "t", "mambavision_t", "tiny"), or None."""
    return _PRESET_ALIASES.get(text.strip().lower())


# ---------------------------------------------------------------------------------- set_option
_STAGE_KEY = re.compile(r"^s(\d+)\.(\w+)$")
_BLOCK_KEY = re.compile(r"^s(\d+)\.b(\d+)\.(\w+)$")
TOKEN_STAGE_KEYS = ("pattern", "heads", "window") + MIXER_KEYS
# The global keys set_option takes (``mlp`` is the canonical form's spelling of ``mlp_ratio``).
OPTION_GLOBAL_KEYS = ("stem", "stem_stride", "mlp_ratio", "mlp", "drop_path", "layer_scale", "dim",
                      "depths")


def option_keys() -> tuple[str, ...]:
    """The keys ``set_option`` takes, for listings and "did you mean" hints; per-block keys
    (``s{i}.b{j}.<mixer key>``, any block ``j``) are open-ended: ``is_option_key`` tells them."""
    return (OPTION_GLOBAL_KEYS + TOKEN_STAGE_KEYS
            + tuple(f"s{i}.{k}" for i in range(1, NUM_STAGES + 1) for k in STAGE_KEYS + MIXER_KEYS))


def is_option_key(key: str) -> bool:
    """Whether ``set_option`` knows ``key`` (whether a value fits a given spec is its own
    question: ``s3.b9.conv1d`` is a key, and an error on a stage of 8 blocks)."""
    if key in OPTION_GLOBAL_KEYS or key in TOKEN_STAGE_KEYS:
        return True
    match = _BLOCK_KEY.match(key)
    if match:
        return 1 <= int(match[1]) <= NUM_STAGES and match[3] in MIXER_KEYS
    match = _STAGE_KEY.match(key)
    return bool(match) and 1 <= int(match[1]) <= NUM_STAGES and match[2] in STAGE_KEYS + MIXER_KEYS


def _coerce(key: str, value: Any, where: str) -> Any:
    """Bring a search-space value (str, int, float, bool, None) to the field's type."""
    if key in ("branch",):
        if isinstance(value, bool):
            return value
        return _parse_mixer_value(key, str(value), where)
    if key in ("conv1d", "out"):
        return _parse_mixer_value(key, str(value), where)
    if key == "pattern":
        return str(value)
    if key == "window":
        if value is None or str(value).lower() in ("none", "global"):
            return None
        return _parse_int(str(value), f"{where}: window")
    if key in ("depth", "width", "heads", "d_state", "d_conv", "expand", "stem", "dim",
               "stem_stride"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return _parse_int(str(value), f"{where}: {key}")
    raise AssertionError(key)


def _set_stage(stage: StageSpec, key: str, value: Any) -> StageSpec:
    if key in MIXER_KEYS:
        old = stage.mixer or MixerOptions()
        new = replace(old, **{key: value})
        # An override keeps what it changed relative to the stage, and follows the rest.
        overrides = tuple(
            (i, replace(new, **{k: getattr(o, k) for k in MIXER_KEYS
                                if getattr(o, k) != getattr(old, k)}))
            for i, o in stage.overrides)
        return replace(stage, mixer=new, overrides=overrides)
    return replace(stage, **{key: value})


def set_option(spec: ModelSpec | str, key: str, value: Any) -> ModelSpec:
    """A copy of ``spec`` with one option changed: what a study's search space varies.

    Keys: global ``stem``, ``stem_stride``, ``mlp_ratio`` (or ``mlp``), ``drop_path``,
    ``layer_scale``, ``dim``
    (widths dim*2**i), ``depths`` (list of 4); per stage ``s{1..4}.<key>`` for depth, width,
    pattern, heads, window, d_state, d_conv, expand, branch, conv1d, out; and pattern, heads,
    window and the mixer keys without prefix, applied to every stage holding mixer or attention
    blocks; ``s{i}.b{j}.<mixer key>`` overrides one mixer block. Raises SpecError for an
    unknown key or a value that makes the spec invalid.
    """
    spec = parse_spec(spec)
    where = f"option {key}"
    key = key.strip()
    if key in ("mlp", "mlp_ratio"):
        return normalize_spec(replace(spec, mlp_ratio=_parse_float(str(value), where)))
    if key == "drop_path":
        return normalize_spec(replace(spec, drop_path=_parse_float(str(value), where)))
    if key == "layer_scale":
        ls = None if value is None or str(value).lower() == "none" else _parse_float(str(value),
                                                                                     where)
        return normalize_spec(replace(spec, layer_scale=ls))
    if key == "stem":
        return normalize_spec(replace(spec, stem=_coerce("stem", value, where)))
    if key == "stem_stride":
        return normalize_spec(replace(spec, stem_stride=_coerce("stem_stride", value, where)))
    if key == "dim":
        dim = _coerce("dim", value, where)
        stages = tuple(replace(s, width=dim * 2 ** i) for i, s in enumerate(spec.stages))
        return normalize_spec(replace(spec, stages=stages))
    if key == "depths":
        depths = list(value) if not isinstance(value, str) else re.split(r"[\s,]+", value.strip())
        if len(depths) != NUM_STAGES:
            raise SpecError(f"{where}: needs {NUM_STAGES} depths, got {value!r}")
        stages = tuple(replace(s, depth=_coerce("depth", d, f"{where}[{i}]"))
                       for i, (s, d) in enumerate(zip(spec.stages, depths, strict=True)))
        return normalize_spec(replace(spec, stages=stages))
    match = _BLOCK_KEY.match(key)
    if match:
        index, block, sub = int(match[1]), int(match[2]), match[3]
        if not 1 <= index <= NUM_STAGES:
            raise SpecError(f"{where}: stages are s1..s{NUM_STAGES}, got s{index}")
        if sub not in MIXER_KEYS:
            raise SpecError(f"{where}: per-block keys are {', '.join(MIXER_KEYS)}")
        stage = spec.stages[index - 1]
        current = dict(stage.overrides)
        current[block] = replace(stage.mixer_for(block), **{sub: _coerce(sub, value, where)})
        stages = list(spec.stages)
        stages[index - 1] = replace(stage, overrides=tuple(sorted(current.items())))
        return normalize_spec(replace(spec, stages=tuple(stages)))
    match = _STAGE_KEY.match(key)
    if match:
        index, sub = int(match[1]), match[2]
        if not 1 <= index <= NUM_STAGES:
            raise SpecError(f"{where}: stages are s1..s{NUM_STAGES}, got s{index}")
        if sub not in STAGE_KEYS + MIXER_KEYS:
            raise SpecError(f"{where}: unknown stage key {sub!r}; stage keys are "
                            f"{', '.join(STAGE_KEYS + MIXER_KEYS)}")
        stages = list(spec.stages)
        stages[index - 1] = _set_stage(stages[index - 1], sub,
                                       _coerce(sub, value, f"{where}"))
        return normalize_spec(replace(spec, stages=tuple(stages)))
    if key in TOKEN_STAGE_KEYS:
        coerced = _coerce(key, value, where)
        targets = [i for i, s in enumerate(spec.stages) if s.has_tokens]
        if not targets:
            raise SpecError(f"{where}: no stage has mixer or attention blocks; "
                            f"use s<i>.{key} to set it on one stage")
        stages = list(spec.stages)
        for i in targets:
            stages[i] = _set_stage(stages[i], key, coerced)
        return normalize_spec(replace(spec, stages=tuple(stages)))
    raise SpecError(f"{where}: unknown option; use stem, stem_stride, mlp_ratio, drop_path, "
                    f"layer_scale, dim, "
                    f"depths, s<i>.<stage key> or one of {', '.join(TOKEN_STAGE_KEYS)}")


def network_spec(spec: ModelSpec | str) -> str:
    """The canonical spec of the network ``spec`` builds, with everything that builds nothing
    dropped: patterns as their block letters, mixer options only where a stage has mixer blocks
    (an ``attn_only`` stage's ``branch`` builds nothing), heads only where it has attention.

    Two specs with the same network spec build the same modules in the same order, so under one
    seed they are one network: a study trains and counts it once."""
    spec = normalize_spec(parse_spec(spec) if isinstance(spec, str) else spec)
    stages = []
    for stage in spec.stages:
        letters = stage.blocks
        if not stage.has_tokens:
            stages.append(stage)
            continue
        mixer = stage.mixer if "M" in letters else MixerOptions()
        overrides = stage.overrides if "M" in letters else ()
        heads = stage.heads if "A" in letters else default_heads(stage.width)
        stages.append(replace(stage, pattern="".join(letters), heads=heads, mixer=mixer,
                              overrides=overrides))
    return format_spec(replace(spec, stages=tuple(stages)))


__all__ = [
    "MixerOptions", "StageSpec", "ModelSpec", "PRESETS", "parse_spec", "format_spec",
    "expand_pattern", "canonical_pattern", "set_option", "normalize_spec", "make_spec",
    "preset_name", "default_heads", "network_spec", "option_keys", "is_option_key",
]
