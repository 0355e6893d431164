"""``mvlab show``: the stage-by-stage layout, parameters and MACs of a preset or spec."""
from __future__ import annotations

import argparse

from mvlab.grammar import PRESETS, parse_spec, set_option

_LETTER_NAMES = {"C": "conv", "M": "mixer", "A": "attention"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="print a model's layout, parameters and MACs",
        description="Print the stage-by-stage layout of a preset or grammar spec (block kinds, "
                    "widths, heads, windows, tokens per window at --img-size), its parameter "
                    "count and two MAC counts: paper-style (scan excluded) and with the scan. "
                    "Nothing is built or run: the numbers are analytic.",
        epilog="examples:\n  mvlab show T\n  mvlab show T --set pattern=interleave --set "
               "s4.window=none\n  mvlab show \"$(mvlab show tiny --spec)\" --img-size 64\n"
               f"presets: {', '.join(PRESETS)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", help="preset name (T, T2, S, B, L, L2, L3, tiny, proxy) or a "
                                     "spec string (quote it)")
    parser.add_argument("--img-size", type=int, default=224, help="input resolution (default 224)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier classes "
                                                                      "(default 1000)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one option (grammar set_option key), repeatable")
    parser.add_argument("--spec", dest="spec_only", action="store_true",
                        help="print only the canonical spec string")
    parser.set_defaults(func=run)


def render(spec_text: str, img_size: int = 224, num_classes: int = 1000) -> str:
    """The text ``mvlab show`` prints for ``spec_text``."""
    from mvlab.models.complexity import complexity

    spec = parse_spec(spec_text)
    cost = complexity(spec, img_size, num_classes)
    unit, scale = ("GMACs", 1e9) if cost.macs >= 1e9 else ("MMACs", 1e6)
    lines = [f"spec: {cost.spec}", "",
             f"input {img_size}x{img_size}, stem {spec.stem} -> stride 4, "
             f"mlp_ratio {spec.mlp_ratio:g}, drop_path {spec.drop_path:g}, "
             f"layer_scale {spec.layer_scale if spec.layer_scale is not None else 'none'}"]
    header = (f"{'stage':<6}{'blocks':<16}{'width':>6}{'heads':>6}{'window':>8}{'map':>9}"
              f"{'windows':>8}{'tokens/win':>11}{'params':>12}{unit:>9}")
    lines += ["", header, "-" * len(header)]
    for stage_spec, s in zip(spec.stages, cost.stages, strict=True):
        letters = "".join(s.letters)
        counts = ", ".join(f"{letters.count(k)}{k}" for k in "CMA" if k in letters)
        window = "-" if not stage_spec.has_tokens else ("global" if s.window is None
                                                        else str(s.window))
        heads = "-" if "A" not in letters else str(s.heads)
        tokens = "-" if not stage_spec.has_tokens else str(s.tokens_per_window)
        windows = "-" if not stage_spec.has_tokens else str(s.num_windows)
        map_size = f"{s.map_size[0]}x{s.map_size[1]}"
        lines.append(f"{s.index + 1:<6}{letters:<16}{s.width:>6}{heads:>6}{window:>8}"
                     f"{map_size:>9}{windows:>8}{tokens:>11}{s.params:>12,}{s.macs / scale:>9.3f}")
        if s.padded_size != s.map_size:
            lines.append(f"{'':<6}(padded to {s.padded_size[0]}x{s.padded_size[1]} for "
                         f"window {s.window}; {counts})")
        for j, opts in stage_spec.overrides:
            lines.append(f"{'':<6}block {j}: {opts}")
    mixer_stages = [s for s in spec.stages if s.mixer is not None and "M" in s.blocks]
    if mixer_stages:
        m = mixer_stages[0].mixer
        lines += ["", f"mixer: d_state {m.d_state}, d_conv {m.d_conv}, expand {m.expand}, "
                      f"branch {'on' if m.branch else 'off'}, conv1d {m.conv1d}, out {m.out}"
                  + ("" if all(s.mixer == m for s in mixer_stages) else " (stage 3; see spec)")]
    lines += ["", f"params: {cost.params:,} ({cost.params / 1e6:.2f} M, {num_classes} classes)",
              f"MACs (paper style, scan excluded): {cost.gmacs:.3f} G",
              f"MACs including the selective scan: {cost.gmacs_with_scan:.3f} G"]
    return "\n".join(lines)


def check_sizes(img_size: int, num_classes: int) -> None:
    """``--img-size`` and ``--num-classes`` that describe a network (analytic numbers for others
    would look plausible and mean nothing); the bounds are `mvlab bench`'s too."""
    from mvlab.errors import UserError
    from mvlab.training.config import bench_limit_error

    for option, key, value in (("--img-size", "img_size", img_size),
                               ("--num-classes", "num_classes", num_classes)):
        why = bench_limit_error(key, value)
        if why:
            raise UserError(f"{option} {value}: {why}")


def run(args: argparse.Namespace) -> int:
    from mvlab.errors import SpecError
    from mvlab.grammar import format_spec

    check_sizes(args.img_size, args.num_classes)
    spec = parse_spec(args.spec)
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set s3.pattern=interleave")
        spec = set_option(spec, key, value)
    if args.spec_only:
        print(format_spec(spec))
        return 0
    print(render(format_spec(spec), args.img_size, args.num_classes))
    return 0
