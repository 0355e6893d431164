"""The block grammar: canonical round-trip, pattern expansion, presets, set_option, errors."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from spec_strategies import model_specs

from mvlab.errors import SpecError, UserError
from mvlab.grammar import (
    PRESETS,
    MixerOptions,
    expand_pattern,
    format_spec,
    normalize_spec,
    parse_spec,
    set_option,
)

T_CANONICAL = (
    "stem=32 mlp=4 drop_path=0.2 layer_scale=none | depth=1 width=80 pattern=conv | depth=3 "
    "width=160 pattern=conv | depth=8 width=320 pattern=last_half heads=8 window=14 d_state=8 "
    "d_conv=3 expand=1 branch=on conv1d=regular out=concat | depth=4 width=640 pattern=last_half "
    "heads=16 window=7 d_state=8 d_conv=3 expand=1 branch=on conv1d=regular out=concat"
)


@settings(max_examples=100, deadline=None)
@given(model_specs())
def test_round_trip_is_exact(spec):
    canonical = normalize_spec(spec)
    text = format_spec(spec)
    assert parse_spec(text) == canonical
    assert format_spec(parse_spec(text)) == text


def test_t_preset_canonical_form_is_the_documented_one():
    assert format_spec(PRESETS["T"]) == T_CANONICAL
    assert parse_spec(T_CANONICAL) == PRESETS["T"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_and_aliases(name):
    spec = PRESETS[name]
    assert parse_spec(format_spec(spec)) == spec
    assert parse_spec(name) == spec
    assert parse_spec(f"mambavision_{name.lower()}") == spec
    assert parse_spec(name.lower()) == spec


def test_released_split_matches_the_paper():
    # T stage 3 = 4 mixer + 4 attention; S stage 3 (N=7) = 4 + 3; T2 stage 3 (N=11) = 6 + 5.
    for name, mixers, attns in (("T", 4, 4), ("S", 4, 3), ("T2", 6, 5)):
        letters = PRESETS[name].stages[2].blocks
        assert letters == ("M",) * mixers + ("A",) * attns
    assert PRESETS["T"].stages[0].blocks == ("C",)


# Each pattern's expansion at an odd (7) and an even (8) depth, written out from the rule
# stated in docs/grammar.md.
EXPANSIONS = {
    "conv": ("CCCCCCC", "CCCCCCCC"),
    "mamba_only": ("MMMMMMM", "MMMMMMMM"),
    "attn_only": ("AAAAAAA", "AAAAAAAA"),
    "last_half": ("MMMMAAA", "MMMMAAAA"),
    "first_half": ("AAAMMMM", "AAAAMMMM"),
    "last_quarter": ("MMMMMMA", "MMMMMMAA"),
    "interleave": ("MAMAMAM", "MAMAMAMA"),
    "interleave:A": ("AMAMAMA", "AMAMAMAM"),
    "last_n:3": ("MMMMAAA", "MMMMMAAA"),
    "first_n:3": ("AAAMMMM", "AAAMMMMM"),
    "every_k:3": ("MMAMMAM", "MMAMMAMM"),
    "last_n:0": ("MMMMMMM", "MMMMMMMM"),
}


@pytest.mark.parametrize("pattern", list(EXPANSIONS))
def test_named_pattern_expansion_odd_and_even(pattern):
    odd, even = EXPANSIONS[pattern]
    assert "".join(expand_pattern(pattern, 7)) == odd
    assert "".join(expand_pattern(pattern, 8)) == even


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 8, 11])
def test_half_patterns_round_mixers_up(depth):
    last = expand_pattern("last_half", depth)
    assert last.count("M") == (depth + 1) // 2 and last.count("A") == depth // 2
    assert expand_pattern("first_half", depth) == tuple(reversed(last))


@pytest.mark.parametrize("depth", [5, 8, 9])
def test_random_pattern_is_reproducible_and_has_the_right_count(depth):
    a = expand_pattern("random:0.4,7", depth)
    assert a == expand_pattern("random:0.4,7", depth)
    assert a.count("A") == int(0.4 * depth + 0.5)
    seeds = {expand_pattern(f"random:0.5,{seed}", depth) for seed in range(20)}
    assert len(seeds) > 1  # the seed moves the attention blocks


def test_explicit_sequences_and_their_spellings():
    base = format_spec(PRESETS["tiny"]).replace("depth=2 width=64 pattern=last_half",
                                                "width=64 pattern='M M A M A A'")
    spec = parse_spec(base)
    assert spec.stages[2].depth == 6 and spec.stages[2].pattern == "MMAMAA"
    again = parse_spec(base.replace("'M M A M A A'", "M,M,A,M,A,A"))
    assert again == spec
    assert "pattern=MMAMAA" in format_spec(spec)


def test_per_block_overrides_round_trip_and_follow_the_stage():
    spec = set_option(PRESETS["T"], "s3.b1.conv1d", "causal")
    text = format_spec(spec)
    assert "b1.conv1d=causal" in text and parse_spec(text) == spec
    assert spec.stages[2].mixer_for(1).conv1d == "causal"
    assert spec.stages[2].mixer_for(0).conv1d == "regular"
    bigger = set_option(spec, "d_state", 16)
    assert bigger.stages[2].mixer_for(1) == MixerOptions(d_state=16, conv1d="causal")
    # An override that equals the stage options disappears from the canonical form.
    assert set_option(spec, "s3.b1.conv1d", "regular") == PRESETS["T"]


def test_set_option_keys():
    t = PRESETS["T"]
    assert set_option(t, "dim", 64).widths == (64, 128, 256, 512)
    assert set_option(t, "depths", [2, 2, 6, 2]).depths == (2, 2, 6, 2)
    assert set_option(t, "depths", "2,2,6,2").depths == (2, 2, 6, 2)
    interleaved = set_option(t, "pattern", "interleave")
    assert interleaved.stages[0].pattern == "conv"  # conv stages are not touched
    assert interleaved.stages[2].blocks == tuple("MAMAMAMA")
    assert set_option(t, "window", None).stages[3].window is None
    assert set_option(t, "branch", "off").stages[2].mixer.branch is False
    assert set_option(t, "branch", False) == set_option(t, "branch", "off")
    assert set_option(t, "s4.heads", 8).stages[3].heads == 8
    assert set_option(t, "layer_scale", 1e-5).layer_scale == 1e-5
    assert set_option(t, "mlp_ratio", 3).mlp_ratio == 3.0
    assert set_option(format_spec(t), "stem", 16).stem == 16
    # A conv stage turned into a token stage gets defaults it can be rebuilt from.
    hybrid = set_option(t, "s2.pattern", "last_half")
    assert hybrid.stages[1].heads is not None and parse_spec(format_spec(hybrid)) == hybrid


TINY = format_spec(PRESETS["tiny"])
S3 = "depth=2 width=64 pattern=last_half heads=2"


@pytest.mark.parametrize("text, fragments", [
    (TINY.replace(S3, "depth=4 width=64 pattern=last_n:6 heads=2"),
     ["stage 3", "last_n:6 needs depth >= 6, got 4"]),
    (TINY.replace(S3, "depth=2 width=64 pattern=zigzag heads=2"), ["stage 3", "'zigzag'"]),
    (TINY.replace(S3, "depth=2 width=64 pattern=last_half heads=3"),
     ["stage 3", "width 64", "heads=3"]),
    (TINY.replace(S3, "depth=4 width=64 pattern=MMA heads=2"), ["stage 3", "MMA", "depth is 4"]),
    (TINY.replace("depth=1 width=16 pattern=conv", "depth=1 width=16 pattern=conv heads=2"),
     ["stage 1", "heads", "pattern=conv"]),
    (TINY.replace("d_state=8", "d_state=0", 1), ["stage 3", "d_state"]),
    (TINY.replace("d_state=8", "d_state=x", 1), ["stage 3", "d_state", "'x'"]),
    (TINY.replace("conv1d=regular", "conv1d=sideways", 1), ["stage 3", "conv1d", "sideways"]),
    (TINY.replace("out=concat", "out=sum", 1), ["stage 3", "out", "sum"]),
    (TINY.replace("branch=on", "branch=maybe", 1), ["stage 3", "branch"]),
    (TINY.replace("heads=2", "heads=2 colour=red", 1), ["stage 3", "'colour'"]),
    (TINY.replace("heads=2", "heads=2 stem=4", 1), ["stage 3", "'stem'", "first segment"]),
    (TINY.replace("stem=8", "stem=8 depth=3"), ["global", "'depth'"]),
    (TINY.replace("stem=8 ", ""), ["global", "stem is missing"]),
    (TINY.replace("drop_path=0", "drop_path=1.5"), ["global", "drop_path"]),
    (TINY.replace("heads=2", "heads=2 b1.conv1d=causal", 1), ["stage 3", "b1", "attention"]),
    (TINY.replace("heads=2", "heads=2 b7.conv1d=causal", 1), ["stage 3", "b7", "0..1"]),
    (TINY.replace("heads=2", "heads 2", 1), ["stage 3", "key=value", "'heads'"]),
    (TINY.replace("heads=2", "heads=2 heads=4", 1), ["stage 3", "heads given twice"]),
    (TINY.replace("window=none", "window=0", 1), ["stage 3", "window"]),
    (TINY.replace(" | depth=2 width=128", " | depth=2 width=128 | depth=1 width=8"), ["4 stage"]),
    (TINY.replace("depth=1 width=16 ", "depth=1 "), ["stage 1", "width is missing"]),
    (TINY.replace(S3, "depth=5 width=64 pattern=random:1.5,0 heads=2"), ["stage 3", "random"]),
    (TINY.replace(S3, "depth=5 width=64 pattern=every_k:0 heads=2"), ["stage 3", "every_k"]),
    (TINY.replace("width=64", "width=0", 1), ["stage 3", "width must be an integer >= 1"]),
    ("Q", ["unknown preset 'Q'"]),
])
def test_malformed_specs_name_the_problem(text, fragments):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, UserError)


def test_odd_mixer_width_is_rejected():
    with pytest.raises(SpecError, match="width\\*expand = 15"):
        set_option(set_option(PRESETS["tiny"], "s3.heads", 1), "s3.width", 15)


def test_set_option_errors():
    with pytest.raises(SpecError, match="unknown option"):
        set_option(PRESETS["T"], "colour", "red")
    with pytest.raises(SpecError, match="s9"):
        set_option(PRESETS["T"], "s9.depth", 2)
    with pytest.raises(SpecError, match="needs 4 depths"):
        set_option(PRESETS["T"], "depths", [1, 2])
    with pytest.raises(SpecError, match="last_n:5 needs depth >= 5, got 4"):
        set_option(PRESETS["T"], "pattern", "last_n:5")


def test_stem_stride_round_trips_and_the_default_stays_unwritten():
    assert "stem_stride" not in format_spec(PRESETS["T"])
    spec = set_option("proxy", "stem_stride", 2)
    text = format_spec(spec)
    assert text.startswith("stem=16 stem_stride=2 mlp=4 ")
    assert parse_spec(text) == spec and format_spec(parse_spec(text)) == text
    assert parse_spec(text.replace(" stem_stride=2", "")) == PRESETS["proxy"]
    assert parse_spec(text.replace("stem_stride=2", "stem_stride=4")) == PRESETS["proxy"]
    for bad in ("3", "0", "two"):
        with pytest.raises(SpecError, match="stem_stride"):
            parse_spec(text.replace("stem_stride=2", f"stem_stride={bad}"))
