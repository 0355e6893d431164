"""Execute the analysis notebooks headless against a study, writing their outputs.

    python -m mvlab.analysis.execute_notebooks --study hybrid_patterns \\
        --fidelity-study proxy_fidelity            # notebooks/*.ipynb, in place, with outputs

Each notebook reads its parameters from the environment (``MVLAB_STUDY``, ``MVLAB_STORAGE``,
``MVLAB_TRACKING_URI``), so the committed notebooks stay the single source; this command only
sets those and runs them (nbclient), from the working directory, so relative storage paths
resolve as they do for ``mvlab sweep``."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Which study each notebook reads: the fidelity notebook needs a two-fidelity study.
STUDY_NOTEBOOKS = ("pareto.ipynb", "design_space.ipynb")
FIDELITY_NOTEBOOKS = ("proxy_fidelity.ipynb",)


def execute_notebook(path: Path, env: Mapping[str, str], output: Path | None = None,
                     timeout: int = 600, cwd: Path | None = None) -> Path:
    """Run notebook ``path`` with ``env`` added to the kernel's environment; write the executed
    copy to ``output`` (default: in place). Raises nbclient's CellExecutionError on failure."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment at start
    try:
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd or Path.cwd())}})
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    target = output or path
    nbformat.write(notebook, target)
    return target


def _study_env(study: str, storage: str | None, tracking_uri: str | None) -> dict[str, str]:
    env = {"MVLAB_STUDY": study}
    if storage:
        env["MVLAB_STORAGE"] = storage
    if tracking_uri:
        env["MVLAB_TRACKING_URI"] = tracking_uri
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mvlab.analysis.execute_notebooks",
        description="Execute notebooks/pareto, design_space (on --study) and proxy_fidelity (on "
                    "--fidelity-study) in place, so the committed copies carry a real run's "
                    "outputs.")
    parser.add_argument("--study", required=True, help="study for pareto and design_space")
    parser.add_argument("--storage", help="its storage (default: studies/<study>/optuna.journal)")
    parser.add_argument("--fidelity-study", help="two-fidelity study for proxy_fidelity "
                        "(skipped when not given)")
    parser.add_argument("--fidelity-storage", help="its storage (default: studies/<name>/...)")
    parser.add_argument("--tracking-uri", help="also join MLflow metrics from this tracking URI")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS,
                        help="folder holding the notebooks (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path,
                        help="write executed copies here instead of in place")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)

    jobs = [(name, _study_env(args.study, args.storage, args.tracking_uri))
            for name in STUDY_NOTEBOOKS]
    if args.fidelity_study:
        jobs += [(name, _study_env(args.fidelity_study, args.fidelity_storage,
                                   args.tracking_uri)) for name in FIDELITY_NOTEBOOKS]
    else:
        print("proxy_fidelity.ipynb: skipped (no --fidelity-study)", file=sys.stderr)
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    from nbclient.exceptions import CellExecutionError

    failed = 0
    for name, env in jobs:
        source = args.notebooks / name
        output = args.output_dir / name if args.output_dir else None
        try:
            written = execute_notebook(source, env, output=output, timeout=args.timeout)
        except CellExecutionError as exc:  # the notebook is left as it was
            failed += 1
            print(f"{name}: failed on study {env['MVLAB_STUDY']!r}: {exc.ename}: {exc.evalue}",
                  file=sys.stderr)
            continue
        print(f"{name}: executed on study {env['MVLAB_STUDY']!r} -> {written}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
