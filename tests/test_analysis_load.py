"""Loading a study the way mvlab.study records it (Optuna journal + MLflow child runs)."""
from __future__ import annotations

import pytest

from mvlab.analysis import (
    AnalysisError,
    completed,
    design_choices,
    fidelity_levels,
    find_storage,
    load_study,
    pareto_mask,
    primary_knob,
    seed_means,
    study_names,
    with_spec_fields,
)
from mvlab.analysis.synthetic import fidelity_label, write_synthetic_study

PATTERNS = ("last_half", "mamba_only", "attn_only")


def _write(root, tracking: str | None) -> str:
    storage = str(root / "studies" / "tiny" / "optuna.journal")
    (root / "studies" / "tiny").mkdir(parents=True)
    write_synthetic_study("tiny", storage, tracking, patterns=PATTERNS, d_states=(4,),
                          epochs=(1, 3), repeated_seeds=2)
    return storage


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The Optuna record alone (about 1 s)."""
    root = tmp_path_factory.mktemp("study")
    return root, _write(root, None), None


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """The same study with its MLflow runs (about 15 s: MLflow's database schema)."""
    root = tmp_path_factory.mktemp("tracked")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    return root, _write(root, tracking), tracking


def test_one_row_per_trial_with_params_objectives_and_attrs(study):
    _, storage, _ = study
    table = load_study("tiny", storage)
    # 3 patterns x 2 branches x 2 budgets, the first config of each pattern with a second seed,
    # plus one failed and one pruned trial
    assert len(table) == 3 * 2 * 2 + 3 * 2 + 2
    assert table["trial"].tolist() == list(range(len(table)))
    assert table["state"].value_counts().to_dict() == {"COMPLETE": 18, "FAIL": 1, "PRUNED": 1}
    assert {"params.pattern", "params.branch", "params.train.epochs", "params.seed", "spec",
            "seed", "fidelity", "status", "heldout_top1", "throughput"} <= set(table.columns)
    assert table.attrs["objectives"] == {"heldout_top1": "maximize", "throughput": "maximize"}
    assert table.attrs["study_attrs"]["synthetic"] is True
    assert table.loc[table["state"] == "FAIL", "heldout_top1"].isna().all()


@pytest.mark.slow
def test_mlflow_metrics_join_on_the_run_id(tracked):
    _, storage, _ = tracked  # the tracking URI comes from the study's user attributes
    table = completed(load_study("tiny", storage))
    assert table["mlflow_run_id"].notna().all()
    assert table["metrics.throughput"].tolist() == pytest.approx(table["throughput"].tolist())
    # the last logged epoch's held-out accuracy is the objective
    assert table["metrics.heldout_top1"].tolist() == pytest.approx(table["heldout_top1"].tolist())
    without = load_study("tiny", storage, mlflow=False)
    assert not any(c.startswith("metrics.") for c in without.columns)


def test_completed_and_design_choices(study):
    table = load_study("tiny", study[1], mlflow=False)
    done = completed(table)
    assert len(done) == 18 and (done["status"] == "ok").all()
    assert done.attrs["objectives"] == table.attrs["objectives"]
    assert design_choices(done) == ["params.pattern", "params.branch", "params.train.epochs"]
    assert primary_knob(done) == "params.pattern"
    assert fidelity_levels(done) == [fidelity_label(1), fidelity_label(3)]


def test_seed_means_give_one_row_per_configuration(study):
    done = completed(load_study("tiny", study[1], mlflow=False))
    means = seed_means(done, ["heldout_top1", "throughput"])
    assert len(means) == 12 and means["runs"].sum() == 18
    assert pareto_mask(means, done.attrs["objectives"]).any()


def test_spec_fields_become_columns(study):
    done = completed(load_study("tiny", study[1], mlflow=False))
    table = with_spec_fields(done)
    assert set(table["spec.s3.pattern"]) == set(PATTERNS)
    assert (table["spec.s3.branch"] == table["params.branch"]).all()


def test_unknown_study_names_the_ones_there(study):
    with pytest.raises(AnalysisError, match=r"no study named 'tine'.*\['tiny'\]"):
        load_study("tine", study[1])
    assert study_names(study[1]) == ["tiny"]
    assert study_names(f"journal:{study[1]}") == ["tiny"]


def test_find_storage_walks_up_from_a_notebook_folder(study, monkeypatch):
    root, storage, _ = study
    (root / "notebooks").mkdir(exist_ok=True)
    monkeypatch.delenv("MVLAB_STORAGE", raising=False)
    assert find_storage("tiny", start=root / "notebooks") == storage
    with pytest.raises(AnalysisError, match="MVLAB_STORAGE"):
        find_storage("other", start=root / "notebooks")
    monkeypatch.setenv("MVLAB_STORAGE", "sqlite:///x.db")
    assert find_storage("other") == "sqlite:///x.db"


def test_missing_journal_is_a_user_error(tmp_path):
    with pytest.raises(AnalysisError, match="does not exist"):
        load_study("tiny", tmp_path / "nope.journal")


@pytest.mark.slow  # three reports with their plots
@pytest.mark.parametrize("form", ["{path}", "journal:{path}", "journal://{path}"])
def test_mvlab_report_reads_every_journal_form_the_sweep_writes(study, tmp_path, form, capsys):
    """One reading of a storage URL for writer and reader (mvlab.records.journal_path):
    ``journal:PATH`` used to be looked up as a file named "journal:PATH" and refused."""
    from mvlab.cli import main

    _, storage, _ = study
    out = tmp_path / "report"
    assert main(["report", "tiny", "--storage", form.format(path=storage), "--out",
                 str(out)]) == 0
    assert (out / "README.md").exists() and (out / "trials.csv").exists()
    assert main(["report", "tiny", "--storage", f"journal:{tmp_path}/none.journal"]) == 2
    assert "no such study storage" in capsys.readouterr().err
    assert not (tmp_path / "none.journal").exists()
