"""The study side of the statistics: one configuration per network, the seed as a replicate
(init + data order, split fixed), and `mvlab report` writing verdicts where the user asked."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch

from mvlab.analysis.synthetic import write_synthetic_study
from mvlab.grammar import network_spec, parse_spec, set_option
from mvlab.study import load_study_text
from mvlab.study.space import collapse_points, grid_points, planned_points, resolve_point

GRID = """\
name: tiny_identity
model: tiny
data: {{dataset: builtin, resolution: 32, per_class: 20, val_per_class: 5}}
train: {{epochs: 1, warmup_epochs: 0, batch_size: 16, device: cpu}}
study: {{kind: grid, seeds: [0, 1]}}
space:
  pattern: [last_half, attn_only]
  branch: ["on", "off"]
{extra}
"""


def _config(extra: str = ""):
    return load_study_text(GRID.format(extra=extra), "tiny.yaml")


def test_points_of_one_network_collapse_and_check_says_why():
    config = _config()
    kept, dropped = collapse_points(config, grid_points(config))
    assert len(grid_points(config)) == 8 and len(kept) == 6 and len(planned_points(config)) == 6
    assert {(c.point["pattern"], c.point["branch"], c.same_as["branch"]) for c in dropped} == {
        ("attn_only", "off", "on")}
    assert {c.point["seed"] for c in dropped} == {0, 1}  # once per seed, never across seeds
    assert "branch=off vs on builds nothing here" in dropped[0].reason
    from mvlab.study.plan import collapsed_lines

    lines = collapsed_lines(config)
    assert "2 point(s)" in lines[0] and "pattern=attn_only branch=off seed=0" in lines[1]


def test_network_spec_names_the_same_network_and_only_it():
    base = parse_spec("tiny")
    on = set_option(set_option(base, "pattern", "attn_only"), "branch", "on")
    off = set_option(on, "branch", "off")
    assert network_spec(on) == network_spec(off)
    mixer_on = set_option(base, "pattern", "last_half")
    assert network_spec(mixer_on) != network_spec(set_option(mixer_on, "branch", "off"))
    from mvlab.models import build_model

    torch.manual_seed(0)
    first = build_model(on, num_classes=10).state_dict()
    torch.manual_seed(0)
    second = build_model(off, num_classes=10).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # one network, bit for bit


def test_a_trials_seed_sets_init_and_data_order_but_not_the_split():
    config = _config()
    plans = {s: resolve_point(config, {"pattern": "last_half", "branch": "on", "seed": s})
             for s in (0, 1)}
    assert plans[1].train.seed == 1 and plans[1].data.order_seed == 1
    assert plans[0].data.seed == plans[1].data.seed == 0  # the study's split
    from mvlab.data import build_data
    from mvlab.study.trial import seed_roles

    assert seed_roles(plans[1]) == {"init_seed": 1, "order_seed": 1, "split_seed": 0}
    fixed = load_study_text(GRID.format(extra=""), "tiny.yaml", ("train.early_init_seed=7",))
    point = resolve_point(fixed, {"pattern": "last_half", "branch": "on", "seed": 1})
    assert seed_roles(point) == {"init_seed": 1, "order_seed": 1, "split_seed": 0,
                                 "early_init_seed": 7}  # a study's fixed early part
    from mvlab.study.plan import describe_plan
    from mvlab.study.report import early_init_lines

    assert "early_init=seed 7 (stem + stages 1-2)" in describe_plan(fixed)
    assert "early_init" not in describe_plan(config)
    import pandas as pd

    (scope, _) = early_init_lines(pd.DataFrame({"early_init_seed": [7.0, 7.0, None]}))
    assert "seed 7 (`train.early_init_seed`)" in scope and "holds for that one start" in scope
    assert early_init_lines(pd.DataFrame({"init_seed": [0, 1]})) == []
    (several, _) = early_init_lines(pd.DataFrame({"early_init_seed": [7.0, 8.0]}))
    assert "seeds 7, 8" in several and "that one start" not in several
    bundles = {s: build_data(plans[s].data, batch_size=16, progress=False) for s in (0, 1)}
    again = build_data(plans[1].data, batch_size=16, progress=False)

    def first_labels(bundle):
        bundle.train.set_epoch(0)
        return next(iter(bundle.train))[1]

    assert not torch.equal(first_labels(bundles[0]), first_labels(bundles[1]))
    assert torch.equal(first_labels(bundles[1]), first_labels(again))
    held = {s: torch.cat([y for _, y in bundles[s].heldout]) for s in (0, 1)}
    assert torch.equal(held[0], held[1])  # the held-out split is the same images
    assert bundles[0].manifest["subset_id"] == bundles[1].manifest["subset_id"]
    fixed = _config().data
    pinned = resolve_point(dataclasses.replace(config, data=dataclasses.replace(
        fixed, order_seed=7)), {"pattern": "last_half", "branch": "on", "seed": 1})
    assert pinned.data.order_seed == 7  # a study that pins the order keeps it


def test_analysis_settings_are_validated_against_the_space():
    from mvlab.errors import StudyError

    config = _config("analysis:\n  reference: {pattern: last_half, branch: \"on\"}\n"
                     "  equivalence_margin: 0.25")
    assert config.analysis.reference == {"pattern": "last_half", "branch": "on"}
    assert config.analysis.equivalence_margin == 0.25
    with pytest.raises(StudyError, match="not one of the choices of pattern"):
        _config("analysis:\n  reference: {pattern: first_half}")
    with pytest.raises(StudyError, match="not a knob"):
        _config("analysis:\n  reference: {width: 3}")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    storage = root / "studies" / "tiny_report" / "optuna.journal"
    storage.parent.mkdir(parents=True)
    write_synthetic_study("tiny_report", str(storage), patterns=("last_half", "interleave",
                          "mamba_only", "attn_only"), d_states=(4,), epochs=(1, 3),
                          repeated_seeds=3)
    return root, storage


@pytest.mark.slow  # a report with its plots
def test_report_writes_verdicts_per_fidelity_into_the_study_folder(synthetic, monkeypatch):
    from mvlab.commands.report import handle

    root, storage = synthetic
    monkeypatch.chdir(root)
    args = _report_args("tiny_report")
    assert handle(args) == 0
    out = root / "studies" / "tiny_report" / "report"  # beside the journal, not results/
    names = {p.name for p in out.iterdir()}
    assert not (root / "results").exists()
    assert {"README.md", "failed.csv", "fidelity.csv", "pareto_epochs_1_res_32.csv",
            "pareto_epochs_3_res_32.csv", "configurations_epochs_3_res_32.csv"} <= names
    readme = (out / "README.md").read_text()
    assert "tie" not in readme.lower()
    # the 1- and 3-epoch runs are never averaged together
    for level in ("epochs_1_res_32", "epochs_3_res_32"):
        table = pd.read_csv(out / f"configurations_{level}.csv")
        assert table["fidelity"].nunique() == 1 and table["config"].is_unique
        # every made-up seed leaves the plateau in epoch 1 or 2 (the budget's last at most)
        assert (table["on_plateau"] == 0).all()
        assert table["plateau_exits"].str.fullmatch(r"seed 0: [12](, seed \d: [12])*").all()
    fidelity = pd.read_csv(out / "fidelity.csv", index_col=0)
    assert "epochs=1 res=32" in fidelity.index and {"params", "macs"} <= set(fidelity.index)


@pytest.mark.slow  # a report with its plots
def test_report_judges_against_the_reference_it_is_given(synthetic, tmp_path):
    from mvlab.study.report import build_report

    _, storage = synthetic
    settings = {"reference": {"pattern": "last_half", "branch": "on", "d_state": 4},
                "equivalence_margin": 0.5, "trend": {"pattern": ["mamba_only", "interleave",
                                                                 "last_half"]},
                "gate": {"controls": [{"a": {"pattern": "mamba_only", "branch": "on"},
                                       "b": {"pattern": "last_half", "branch": "on"},
                                       "expect": "differ", "name": "mamba vs last_half"}],
                         "band": [0, 100]}}
    written = {p.name for p in build_report("tiny_report", str(storage), tmp_path,
                                            settings=settings)}
    assert {"verdicts_epochs_3_res_32.csv", "verdicts_epochs_3_res_32.png",
            "reliability_epochs_3_res_32.csv"} <= written
    verdicts = pd.read_csv(tmp_path / "verdicts_epochs_3_res_32.csv")
    assert set(verdicts["verdict"]) <= {"better", "worse", "equivalent", "undetermined"}
    assert len(verdicts) == 6  # 8 points, 7 networks (attn_only once), less the reference
    readme = (tmp_path / "README.md").read_text()
    assert "Against the reference: last_half on" in readme and "Page's L" in readme
    gate = pd.read_csv(tmp_path / "gate_epochs_3_res_32.csv")
    assert gate["criterion"].tolist() == ["mamba vs last_half", "accuracy band",
                                          "every seed left the plateau", "split-half reliability"]
    assert gate.set_index("criterion").loc["every seed left the plateau", "observed"] == "none"
    assert "### Calibration gate" in readme and ("**PASSED" in readme or "NOT PASSED" in readme)


def _report_args(study, **given):
    defaults = dict(overrides=[], storage=None, out=None, trials=None, throughput=None,
                    throughput_column="throughput")
    return argparse.Namespace(study=study, **{**defaults, **given})


def test_report_rebuilds_a_committed_study_from_its_trials_csv(tmp_path):
    # results/hybrid_patterns/fashion_mnist_48px holds a real sweep's trials.csv (its storage is
    # not kept): the report rebuilds from it, with a separately measured throughput joined.
    from mvlab.commands.report import handle

    root = Path(__file__).resolve().parents[1]
    folder = root / "results" / "hybrid_patterns" / "fashion_mnist_48px"
    args = _report_args(str(root / "experiments" / "hybrid_patterns.yaml"), out=str(tmp_path),
                        trials=str(folder / "trials.csv"),
                        throughput=str(folder / "throughput_remeasured.csv"),
                        throughput_column="throughput_remeasured")
    assert handle(args) == 0
    configs = pd.read_csv(tmp_path / "configurations.csv")
    assert len(configs) == 13  # 14 points, attn_only with branch on and off one network
    assert (configs["runs"] == 2).all()
    remeasured = pd.read_csv(folder / "throughput_remeasured.csv")
    first_half_off = remeasured.set_index("label").loc["first_half off", "throughput_remeasured"]
    row = configs.set_index("configuration").loc["first_half off"]
    assert row["throughput"] == pytest.approx(first_half_off)
    verdicts = pd.read_csv(tmp_path / "verdicts.csv")
    assert len(verdicts) == 12 and "trials.csv" not in {p.name for p in tmp_path.iterdir()}


def test_report_throughput_csv_without_the_column_is_one_clear_error(tmp_path):
    from mvlab.commands.report import handle
    from mvlab.errors import StudyError

    root = Path(__file__).resolve().parents[1]
    folder = root / "results" / "hybrid_patterns" / "fashion_mnist_48px"
    args = _report_args(str(root / "experiments" / "hybrid_patterns.yaml"), out=str(tmp_path),
                        trials=str(folder / "trials.csv"),
                        throughput=str(folder / "throughput_remeasured.csv"))
    with pytest.raises(StudyError, match="--throughput-column"):
        handle(args)


def test_the_committed_decisive_run_report_comes_from_its_committed_journal(tmp_path):
    # results/hybrid_patterns keeps the study's Optuna journal: the report rebuilt from it now
    # gives the committed verdicts, so those numbers are the code's, not edited.
    from mvlab.commands.report import handle

    root = Path(__file__).resolve().parents[1]
    folder = root / "results" / "hybrid_patterns"
    args = _report_args(str(root / "experiments" / "hybrid_patterns.yaml"), out=str(tmp_path),
                        storage=str(folder / "optuna.journal"),
                        throughput=str(folder / "throughput_gpu.csv"),
                        overrides=[f"workdir={tmp_path}/{{name}}"])  # no MLflow store: none read
    assert handle(args) == 0
    rebuilt = pd.read_csv(tmp_path / "verdicts.csv").set_index("configuration")
    committed = pd.read_csv(folder / "verdicts.csv").set_index("configuration")
    assert list(rebuilt.index) == list(committed.index)
    assert (rebuilt["verdict"] == committed["verdict"]).all()
    for column in ("diff", "ci_low", "ci_high"):
        assert rebuilt[column].to_numpy() == pytest.approx(committed[column].to_numpy())
    assert set(committed["verdict"]) == {"worse", "undetermined"}


def test_the_committed_gate_is_judged_per_comparison_and_a_pooled_rebuild_is_flagged(tmp_path):
    # results/calibration/gate keeps its journal. Its four configurations are not equally noisy
    # across seeds (attn_only 51-78 %, mamba_only 84-88 %): judged by its own differences the
    # steady conv vs mamba_only gap (about -1.3 points on every seed) is shown; one pooled
    # noise level hides it and lets the attention controls pass instead, and the report says
    # in bold that pooling is wrong here.
    from mvlab.commands.report import handle

    root = Path(__file__).resolve().parents[1]
    folder = root / "results" / "calibration" / "gate"
    committed = pd.read_csv(folder / "gate.csv").set_index("criterion")
    passed = {}
    for noise in ("paired", "pooled"):
        out = tmp_path / noise
        args = _report_args(str(root / "experiments" / "calibration.yaml"), out=str(out),
                            storage=str(folder / "optuna.journal"),
                            overrides=[f"workdir={tmp_path}/{{name}}", f"analysis.noise={noise}"])
        assert handle(args) == 0
        gate = pd.read_csv(out / "gate.csv").set_index("criterion")
        passed[noise] = gate["passed"].to_dict()
        readme = (out / "README.md").read_text()
        assert "configurations with 4 or more seeds gives p = 0.0151 (unequal)" in readme
        assert ("Set `analysis.noise: paired`" in readme) == (noise == "pooled")
        if noise == "paired":
            assert gate["observed"].to_dict() == committed["observed"].to_dict()
    assert passed["paired"]["conv vs mamba_only"] and not passed["pooled"]["conv vs mamba_only"]
    assert not passed["paired"]["conv vs attn_only"] and passed["pooled"]["conv vs attn_only"]


def test_a_study_file_edited_after_the_run_does_not_change_the_level_of_its_verdicts(
        tmp_path, capsys):
    # The gate ran with one look. Its study file made sequential afterwards (5 planned looks)
    # would test the committed verdicts at alpha / 5; the report keeps the record's level and
    # says why in one line.
    from mvlab.commands.report import handle

    root = Path(__file__).resolve().parents[1]
    folder = root / "results" / "calibration" / "gate"
    args = _report_args(str(root / "experiments" / "calibration.yaml"), out=str(tmp_path),
                        storage=str(folder / "optuna.journal"),
                        overrides=[f"workdir={tmp_path}/{{name}}",
                                   "study.sequential={step: 2, max_seeds: 12}"])
    assert handle(args) == 0
    assert "ran with 1 planned look(s) (its record); the study file now gives 5" in (
        capsys.readouterr().err)
    assert (tmp_path / "gate.csv").read_text() == (folder / "gate.csv").read_text()


def test_a_table_without_seeds_or_accuracy_still_reports_with_notes():
    # The seed-noise section reads the configurations x seeds table too; without a seed column
    # or any finite accuracy the report goes on and says why in its notes.
    import dataclasses

    from mvlab.study.report import analyse, table_from_csv
    from mvlab.study.schema import load_study

    root = Path(__file__).resolve().parents[1]
    config = load_study(str(root / "experiments" / "calibration.yaml"), ())
    table = table_from_csv(root / "results" / "calibration" / "gate" / "trials.csv",
                           dict(config.objectives))
    settings = dataclasses.asdict(config.analysis)
    for broken in (table.drop(columns=["seed"]), table.assign(heldout_top1=float("nan"))):
        result = analyse(broken, dict(config.objectives), settings, n_boot=20)
        (part,) = result.fidelities.values()
        assert part.noise is None and any(n.startswith("reliability:") for n in part.notes)


def test_configuration_labels_survive_a_knob_missing_in_some_trials():
    # pandas' string dtype keeps a missing value missing through astype(str), so joining a
    # row's knobs met a float (a study whose running trials have no params yet).
    import pandas as pd

    from mvlab import records
    from mvlab.study.report import CONFIG_LABEL, with_configurations

    table = pd.DataFrame({records.NETWORK: ["n1", "n2", "n3"],
                          records.FIDELITY: ["epochs=2"] * 3,
                          f"{records.PARAM_PREFIX}pattern": ["conv", "last_half", None],
                          f"{records.PARAM_PREFIX}dim": [24.0, 48.0, 24.0],
                          records.LABEL: ["a", "b", "c"], records.SPEC: ["tiny", "T", "S"]})
    labels = with_configurations(table)[CONFIG_LABEL].tolist()
    assert labels[:2] == ["conv 24.0", "last_half 48.0"] and "24.0" in labels[2]


def test_a_study_of_one_configuration_names_it():
    import pandas as pd

    from mvlab import records
    from mvlab.study.report import CONFIG_LABEL, with_configurations

    table = pd.DataFrame({records.NETWORK: ["n1", "n1"], records.FIDELITY: ["epochs=4"] * 2,
                          f"{records.PARAM_PREFIX}pattern": ["attn_only"] * 2,
                          records.LABEL: ["", ""], records.SPEC: ["tiny", "tiny"]})
    assert with_configurations(table)[CONFIG_LABEL].tolist() == ["the study's model"] * 2
