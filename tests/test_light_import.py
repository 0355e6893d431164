"""The torch-free parts stay torch-free: ``import mvlab.grammar`` / ``mvlab.analysis``, ``mvlab
--help`` (and every command's ``--help``) and ``mvlab sweep --check`` must not import torch, timm
or torchvision (seconds of start-up each time), while the lazy package exports still work.

The import checks run in fresh interpreters: this test process has long imported torch."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mvlab.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision")


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter at the repository root; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_torch_free_modules_do_not_import_torch():
    loaded = _run(f"""
        import json, sys
        import mvlab, mvlab.grammar, mvlab.analysis, mvlab.errors, mvlab.safety
        from mvlab.data import DataConfig, build_data, select_subset  # loaders load in build_data
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """)
    assert loaded == []


# Each invocation runs in one interpreter, one after another; the modules are checked after each
# so a failure names the invocation that pulled torch in.
CLI_RUNS = ([["--help"]] + [[name, "--help"] for name in COMMANDS]
            + [["sweep", "experiments/hybrid_patterns.yaml", "--check"]])


def test_cli_help_and_sweep_check_do_not_import_torch():
    result = _run(f"""
        import contextlib, io, json, sys
        from mvlab.cli import main
        out = {{}}
        for argv in {CLI_RUNS!r}:
            text = io.StringIO()
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code
            out[" ".join(argv)] = [code, text.getvalue(),
                                   [m for m in {HEAVY!r} if m in sys.modules]]
        print(json.dumps(out))
        """)
    for argv, (code, text, heavy) in result.items():
        assert code == 0, (argv, text)
        assert heavy == [], f"mvlab {argv} imported {heavy}"
    assert "sweep" in result["--help"][1] and "usage: mvlab sweep" in result["sweep --help"][1]
    assert "storage:" in result["sweep experiments/hybrid_patterns.yaml --check"][1]


def test_running_a_command_imports_only_its_module():
    loaded = _run("""
        import contextlib, io, json, sys
        from mvlab.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["show", "--help"])
            except SystemExit:
                pass
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("mvlab.commands."))))
        """)
    assert loaded == ["mvlab.commands.show"]


def test_lazy_exports_resolve():
    import mvlab.analysis
    import mvlab.data
    import mvlab.models

    assert mvlab.build_model is mvlab.models.build_model
    assert mvlab.create_model is mvlab.models.create_model
    for package in (mvlab, mvlab.analysis, mvlab.data):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
            assert name in dir(package)
    with pytest.raises(AttributeError):
        mvlab.no_such_name  # noqa: B018


def test_analysis_edf_stays_the_function():
    """``edf`` names a function and its submodule; importing the submodule must not hide the
    function behind the package attribute (the eager package kept the function)."""
    import mvlab.analysis
    import mvlab.analysis.edf
    from mvlab.analysis.edf import edf

    assert mvlab.analysis.edf is edf


@pytest.mark.slow  # a fresh interpreter importing timm: about 6 s
def test_import_mvlab_models_registers_timm_names():
    registered = _run("""
        import json
        import timm
        import mvlab.models
        print(json.dumps([timm.is_model(n) for n in mvlab.models.TIMM_NAMES]))
        """)
    assert registered and all(registered)


def test_token_maps_match_complexity():
    """``mvlab sweep --check``'s few-token warning counts token maps without the model package;
    its arithmetic must stay that of the analytic complexity count."""
    from mvlab.grammar import PRESETS, set_option
    from mvlab.models.complexity import complexity
    from mvlab.study.tokens import _token_maps

    for name in ("T", "tiny", "proxy"):
        for stem_stride in (4, 2, 1):
            spec = set_option(PRESETS[name], "stem_stride", stem_stride)
            for resolution in (17, 32, 48, 63, 64, 97, 224):
                maps = [(m.index, m.letters, m.window, m.map_size)
                        for m in _token_maps(spec, resolution)]
                expected = [(s.index, s.letters, s.window, s.map_size)
                            for s in complexity(spec, resolution).stages]
                assert maps == expected, (name, stem_stride, resolution)
