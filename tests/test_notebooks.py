"""The analysis notebooks execute headless on a study the test writes (no training)."""
from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import nbformat
import pytest

from mvlab.analysis.synthetic import write_synthetic_study

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("pareto", "design_space", "proxy_fidelity")


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, nbformat.NotebookNode]:
    from nbclient import NotebookClient

    root = tmp_path_factory.mktemp("notebooks")
    storage = root / "studies" / "tiny_nb" / "optuna.journal"
    storage.parent.mkdir(parents=True)
    write_synthetic_study("tiny_nb", str(storage), patterns=("last_half", "interleave",
                          "mamba_only", "attn_only"), d_states=(4,), epochs=(1, 3),
                          repeated_seeds=2)
    # The notebooks find studies/<name>/optuna.journal from their working directory, as they
    # do in a checkout where `mvlab sweep` ran.
    os.environ["MVLAB_STUDY"] = "tiny_nb"
    try:
        notebooks = {name: nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
                     for name in NAMES}
        clients = [NotebookClient(nb, timeout=300, kernel_name="python3",
                                  resources={"metadata": {"path": str(root)}})
                   for nb in notebooks.values()]

        async def run_all() -> None:  # in parallel: each kernel spends most of its time importing
            await asyncio.gather(*(client.async_execute() for client in clients))

        asyncio.run(run_all())
    finally:
        os.environ.pop("MVLAB_STUDY", None)
    return notebooks


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


@pytest.mark.slow  # the executed notebooks: about 25 s
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_draws(executed, name):
    outputs = _outputs(executed[name])
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pictures and all(base64.b64decode(p["data"]["image/png"])[:4] == b"\x89PNG"
                            for p in pictures)
    markdown = " ".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    assert "synthetic study" in markdown  # the made-up data says so


@pytest.mark.slow  # the executed notebooks: about 25 s
def test_notebooks_have_a_parameters_cell_and_open_the_named_study(executed):
    for name in NAMES:
        source = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        tagged = [c for c in source.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "MVLAB_STUDY" in tagged[0].source
    text = "".join(o.get("text", "") for o in _outputs(executed["pareto"]))
    assert "study 'tiny_nb'" in text


@pytest.mark.slow  # the executed notebooks: about 25 s
def test_fidelity_notebook_reports_rank_agreement_against_baselines(executed):
    tables = [o["data"]["text/plain"] for o in _outputs(executed["proxy_fidelity"])
              if "text/plain" in o.get("data", {})]
    agreement = next(t for t in tables if "kendall_tau_low" in t)
    assert "epochs=1 res=32" in agreement and "params" in agreement


@pytest.mark.slow  # the executed notebooks: about 25 s
def test_notebooks_show_verdicts_from_the_report_code_and_never_speak_of_ties(executed):
    tables = " ".join(o["data"].get("text/plain", "") for o in _outputs(executed["pareto"])
                      if "data" in o)
    assert "verdict" in tables and "seeds_for_margin" in tables
    markdown = " ".join(o["data"].get("text/markdown", "") for o in _outputs(executed["pareto"])
                        if "data" in o)
    assert "split-half reliability" in markdown  # the ranking says whether it can be trusted
    for name in NAMES:
        source = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        text = " ".join(c.source for c in source.cells).lower()
        assert "report.analyse" in text and " tie" not in text and "tied" not in text


@pytest.mark.slow  # the executed notebooks
def test_pareto_notebook_says_when_each_seed_left_the_plateau(executed):
    markdown = " ".join(o["data"].get("text/markdown", "") for o in _outputs(executed["pareto"])
                        if "data" in o)
    assert "When each seed left the plateau" in markdown
    assert "seed 0: 1" in markdown or "seed 0: 2" in markdown
