"""Hypothesis strategies that generate valid grammar specs (shared by the grammar/model tests)."""
from __future__ import annotations

from hypothesis import strategies as st

from mvlab.grammar import MixerOptions, ModelSpec, StageSpec, expand_pattern

NAMED = ["conv", "last_half", "first_half", "interleave", "interleave:A", "last_quarter",
         "mamba_only", "attn_only"]

mixer_options = st.builds(
    MixerOptions,
    d_state=st.integers(1, 16),
    d_conv=st.integers(1, 4),
    expand=st.integers(1, 2),
    branch=st.booleans(),
    conv1d=st.sampled_from(["regular", "causal"]),
    out=st.sampled_from(["concat", "gate"]),
)


@st.composite
def patterns(draw, depth: int) -> str:
    kind = draw(st.sampled_from(["named", "count", "every", "random", "letters"]))
    if kind == "named":
        return draw(st.sampled_from(NAMED))
    if kind == "count":
        return f"{draw(st.sampled_from(['last_n', 'first_n']))}:{draw(st.integers(0, depth))}"
    if kind == "every":
        return f"every_k:{draw(st.integers(1, depth + 2))}"
    if kind == "random":
        p = draw(st.floats(0, 1, allow_nan=False))
        return f"random:{p!r},{draw(st.integers(0, 10**6))}"
    return "".join(draw(st.lists(st.sampled_from("CMA"), min_size=depth, max_size=depth)))


@st.composite
def stages(draw, max_depth: int = 6, max_width_units: int = 8) -> StageSpec:
    depth = draw(st.integers(1, max_depth))
    heads = draw(st.sampled_from([1, 2, 4]))
    width = heads * 2 * draw(st.integers(1, max_width_units))
    pattern = draw(patterns(depth))
    mixer = draw(mixer_options)
    letters = expand_pattern(pattern, depth)
    mixer_blocks = [j for j, letter in enumerate(letters) if letter == "M"]
    overrides = ()
    if mixer_blocks and draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(mixer_blocks), unique=True, max_size=2))
        overrides = tuple((j, draw(mixer_options)) for j in sorted(chosen))
    window = draw(st.one_of(st.none(), st.integers(1, 16)))
    return StageSpec(depth, width, pattern, heads, window, mixer, overrides)


@st.composite
def model_specs(draw, max_depth: int = 6, max_width_units: int = 8) -> ModelSpec:
    return ModelSpec(
        stem=draw(st.integers(1, 64)),
        stages=tuple(draw(stages(max_depth, max_width_units)) for _ in range(4)),
        mlp_ratio=draw(st.sampled_from([0.5, 1.0, 2.0, 3.5, 4.0])),
        drop_path=draw(st.floats(0, 0.9, allow_nan=False)),
        layer_scale=draw(st.one_of(st.none(), st.floats(1e-6, 1.0))),
        stem_stride=draw(st.sampled_from([4, 2, 1])),
    )


# Just past a limit, or far past it: the sizes a typo or a hostile spec gives.
def _past(limit: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(limit + 1, limit + 64), st.sampled_from([10**9, 2**63, 10**30]))


@st.composite
def oversized_specs(draw) -> tuple[ModelSpec, str, int]:
    """A valid spec with one size past its limit (``mvlab.grammar.MAX_SIZES``); returns the
    spec, the key and the stage (0 = global) the error must name."""
    from dataclasses import replace

    from mvlab.grammar import MAX_SIZES

    spec = draw(model_specs())
    key = draw(st.sampled_from(sorted(MAX_SIZES)))
    value = draw(_past(MAX_SIZES[key]))
    if key == "stem":
        return replace(spec, stem=value), key, 0
    index = draw(st.integers(0, 3))
    stage = spec.stages[index]
    if key in ("d_state", "d_conv", "expand"):
        stage = replace(stage, pattern="mamba_only",
                        mixer=replace(stage.mixer or MixerOptions(), **{key: value}), overrides=())
    elif key in ("heads", "window"):
        stage = replace(stage, pattern="attn_only", overrides=(), **{key: value})
    else:
        stage = replace(stage, overrides=(), **{key: value})
    stages = tuple(stage if i == index else s for i, s in enumerate(spec.stages))
    return replace(spec, stages=stages), key, index + 1
