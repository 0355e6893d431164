"""The ``mvlab`` command. Thin: each sub-command lives in ``mvlab/commands/<name>.py`` and
exposes ``register(subparsers)``; the work itself is done by the library modules."""
from __future__ import annotations

import argparse
import importlib
import sys

from mvlab.errors import UserError

# Order is the order shown in --help. A module that is missing is skipped, so the CLI never
# breaks because one command is under construction.
COMMANDS = ["show", "data", "train", "bench", "sweep", "report", "dashboard"]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``mvlab`` parser with every sub-command, or with ``command`` alone: running one
    command imports only its module (a command's help lines live in its ``register``, so the
    full parser, for ``mvlab --help``, imports them all; none imports torch at module level)."""
    parser = argparse.ArgumentParser(
        prog="mvlab",
        description="Ablate and explore hybrid Mamba-Transformer vision backbones (MambaVision).",
    )
    parser.add_argument("--version", action="version", version=f"mvlab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [command] if command in COMMANDS else COMMANDS:
        try:
            module = importlib.import_module(f"mvlab.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mvlab.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _version() -> str:
    from mvlab import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser has no option that takes a value, so a command, if any, comes first.
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        code = int(args.func(args) or 0)
    except UserError as exc:
        print(f"mvlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        from mvlab.study.interrupts import exit_status

        print(f"mvlab {args.command}: interrupted", file=sys.stderr)
        return exit_status(interrupt)
    if code == 0 and "torch" in sys.modules:  # no torch imported: no process group to leave
        from mvlab.training import ddp
        ddp.finish()
    return code


if __name__ == "__main__":
    sys.exit(main())
