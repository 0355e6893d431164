"""``mvlab train``: train one spec on one data proxy, print per-epoch progress and a summary."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from mvlab.errors import UserError
from mvlab.safety import check_output_dir, check_output_file

EPILOG = """examples:
  mvlab train tiny --data builtin --set train.epochs=2 data.per_class=50
  mvlab train proxy --data builtin --set epochs=10 lr=2e-3 data.resolution=64 --out runs/proxy
  mvlab train proxy --data builtin --out runs/proxy --resume      # continue after an interruption
  mvlab train proxy --data /datasets/imagenet --set data.classes=imagenet100 data.resolution=128
  mvlab train T --data builtin --set model.s3.pattern=interleave model.d_state=16

--set keys: train.<key> (TrainConfig), data.<key> (DataConfig), model.<key> (the spec's
options, see docs/grammar.md); a key without prefix is looked up in TrainConfig, then DataConfig.
See docs/training.md for every key and its default."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a spec or preset on a data proxy and report accuracy and speed",
        description="Train one architecture (an mvlab preset, a spec string or a timm model name) "
                    "on the built-in data or an ImageNet-style folder, evaluating top-1/top-5 on "
                    "the held-out split every epoch and on val at the end.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", metavar="SPEC|PRESET", help="preset (tiny, proxy, T, ...), spec "
                        "string, or timm model name")
    parser.add_argument("--data", default="builtin", metavar="builtin|PATH",
                        help="'builtin' (Fashion-MNIST subset, offline) or an ImageNet-style root "
                             "with train/ and val/ (default: builtin)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        action="extend", help="override settings, e.g. train.epochs=3 "
                        "data.resolution=64 model.d_state=16")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="checkpoint directory: last.pt each epoch, result.json at the end")
    parser.add_argument("--resume", action="store_true",
                        help="continue from DIR/last.pt when it exists (needs --out)")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
    parser.add_argument("--json", dest="json_path", default=None, metavar="FILE",
                        help="also write the full result (config, history, metrics) as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from mvlab.training.trainer import train

    spec, train_cfg, data_cfg = build_configs(args.spec, args.data, args.overrides)
    if args.out:
        train_cfg = dataclasses.replace(train_cfg, checkpoint_dir=args.out)
    if args.resume:
        if not train_cfg.checkpoint_dir:
            raise UserError("--resume needs --out DIR (the directory holding last.pt)")
        train_cfg = dataclasses.replace(train_cfg, resume=True)
    if args.device:
        train_cfg = dataclasses.replace(train_cfg, device=args.device)
    train_cfg = dataclasses.replace(train_cfg, progress=not args.quiet)
    # Before training: a path that cannot be written would lose the result at the end.
    if train_cfg.checkpoint_dir:
        check_output_dir(train_cfg.checkpoint_dir, "--out")
    if args.json_path:
        check_output_file(args.json_path, "--json")

    def on_epoch(epoch: int, metrics: dict) -> None:
        if not args.quiet:
            _print_epoch(epoch, train_cfg.epochs, metrics)

    result = train(spec, data_cfg, train_cfg, on_epoch=on_epoch)
    if not result.ok:
        print(f"mvlab train: {result.summary()}", file=sys.stderr)
    else:
        print(f"{result.spec}\n  {result.summary()}")
        print(f"  precision={result.precision} channels_last={result.channels_last} "
              f"compile={result.compile} scan_backend={result.scan_backend} device={result.device}")
        if result.checkpoint:
            print(f"  checkpoint: {result.checkpoint}")
    if args.json_path:  # after the summary: a disk that filled up meanwhile loses only the file
        try:
            Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_path).write_text(json.dumps(result.to_dict(), indent=2, default=str)
                                            + "\n")
        except OSError as exc:
            raise UserError(f"--json {args.json_path}: cannot write it ({exc.strerror or exc}); "
                            f"the result above was not saved") from None
    return 0 if result.ok else 1


def build_configs(spec: str, data: str, overrides: list[str]):
    """(spec, TrainConfig, DataConfig) from the command line's SPEC, --data and --set pairs."""
    from mvlab.data.config import DataConfig
    from mvlab.study.yamlsource import load_value
    from mvlab.training.config import RENAMED, TrainConfig

    train_values: dict[str, Any] = {}
    data_values: dict[str, Any] = (
        {"dataset": "builtin"} if data == "builtin" else {"dataset": "folder", "root": data})
    model_values: list[tuple[str, Any]] = []
    # A renamed key goes to TrainConfig.from_dict, whose error names the new key.
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} | set(RENAMED)
    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: write KEY=VALUE, e.g. train.epochs=3")
        scope, _, name = key.partition(".") if "." in key else ("", "", key)
        if scope == "model":
            model_values.append((name, text))
            continue
        if scope not in ("", "train", "data"):
            scope, name = "", key  # e.g. a bare per-stage key is not ours: report it below
        if scope == "" and name in train_fields and name in data_fields:
            raise UserError(f"--set {key}: both train.{name} and data.{name} exist; write one of them")
        if scope == "train" or (scope == "" and name in train_fields):
            if name not in train_fields:
                raise UserError(f"--set {key}: TrainConfig has no {name!r}; known: "
                                f"{', '.join(sorted(train_fields - set(RENAMED)))}")
            train_values[name] = load_value(text, f"--set {key}")
        elif scope == "data" or (scope == "" and name in data_fields):
            if name not in data_fields:
                raise UserError(f"--set {key}: DataConfig has no {name!r}; known: "
                                f"{', '.join(sorted(data_fields))}")
            data_values[name] = load_value(text, f"--set {key}")
        else:
            raise UserError(f"--set {key}: not a train, data or model setting; prefix it with "
                            f"train., data. or model. (see mvlab train --help)")
    if model_values:
        from mvlab.grammar import format_spec, parse_spec, set_option

        parsed = parse_spec(spec)
        for name, text in model_values:
            parsed = set_option(parsed, name, text)
        spec = format_spec(parsed)
    # Read as a study's --set values are, then typed by the configs' own coercion
    # (mvlab.config_fields), so the two commands accept the same text.
    return spec, TrainConfig.from_dict(train_values), DataConfig.from_dict(data_values)


def _print_epoch(epoch: int, epochs: int, m: dict) -> None:
    from tqdm.auto import tqdm

    held = (f" held-out top1 {m['heldout_top1']:.2f}% top5 {m['heldout_top5']:.2f}%"
            if "heldout_top1" in m else "")
    ema = f" (ema {m['ema_heldout_top1']:.2f}%)" if "ema_heldout_top1" in m else ""
    tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {m['train_loss']:.4f} lr {m['lr']:.2e}{held}{ema} "
               f"{m['images_per_s']:.1f} img/s {m['epoch_time_s']:.1f}s")
