"""The calibration gate (`analysis.gate`): validated against the space, and on a study with known
effects it passes a control that is there, fails one that is not (undetermined is not a pass),
checks the accuracy band and reliability, and lands in the report."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from mvlab import records
from mvlab.analysis import seed_matrix, seed_means, split_half
from mvlab.analysis.synthetic import effects_table
from mvlab.errors import StudyError
from mvlab.study import load_study_text
from mvlab.study.gate import evaluate_gate

STUDY = """\
name: tiny_gate
model: tiny
data: {{dataset: builtin, resolution: 32, per_class: 20, val_per_class: 5}}
train: {{epochs: 1, warmup_epochs: 0, batch_size: 16, device: cpu}}
study: {{kind: grid, seeds: [0, 1]}}
space:
  pattern: [conv, last_half, attn_only]
  dim: [12, 24]
analysis:
  gate:
{gate}
"""
CONTROLS = """\
    controls:
      - {a: {pattern: conv}, b: {pattern: last_half}}
      - {a: {pattern: last_half, dim: 24}, b: {pattern: last_half, dim: 12}, expect: not_worse}
"""


def _gate(text: str):
    return load_study_text(STUDY.format(gate=text), "gate.yaml").analysis.gate


def test_gate_settings_are_read_and_checked_against_the_space():
    gate = _gate(CONTROLS + "    band: [60, 95]\n")
    assert gate.band == (60.0, 95.0)
    assert [c.expect for c in gate.controls] == ["differ", "not_worse"]
    assert gate.controls[1].a == {"pattern": "last_half", "dim": 24}
    for text, message in [
        ("    band: [95, 60]\n", "0 <= low < high <= 100"),
        ("    controls:\n      - {a: {pattern: conv}, b: {pattern: mamba}}\n",
         "not one of the choices of pattern"),
        ("    controls:\n      - {a: {width: 3}, b: {pattern: conv}}\n", "not a knob"),
        ("    controls:\n      - {a: {pattern: conv}, b: {pattern: attn_only}, expect: win}\n",
         "use one of differ, better, resolved, not_worse"),
        ("    controls:\n      - {a: {pattern: conv}}\n", "needs the knob values"),
        ("    {}\n", "needs controls, a band, or both"),
        (CONTROLS + "    band_exempt: [{pattern: conv}]\n", "set analysis.gate.band too"),
        ("    band: [60, 95]\n    band_exempt: [{pattern: cnn}]\n",
         "not one of the choices of pattern"),
        ("    band: [60, 95]\n    band_exempt: {pattern: conv}\n", "expected a list"),
        ("    band: [60, 95]\n    band_exempt: []\n", "is empty"),
        (CONTROLS + "    band: [60, 95]\n    band_exempt: [{pattern: attn_only}]\n",
         "not a side .* of any control"),
    ]:
        with pytest.raises(StudyError, match=message):
            _gate(text)


KNOBS = {"reference": {"pattern": "last_half"},
         **{name: {"pattern": name} for name in ("conv", "twin", "narrow", "slightly", "much",
                                                 "tied")}}


def _evaluate(table: pd.DataFrame, gate: dict, threshold: float = 0.8) -> pd.DataFrame:
    means = seed_means(table, [records.HELDOUT_TOP1], config="config", pooled=True)
    means["configuration"] = means["config"]
    reliability = split_half(seed_matrix(table, records.HELDOUT_TOP1), n_boot=200,
                             threshold=threshold)

    def configs_of(point):
        return [name for name, knobs in KNOBS.items()
                if knobs == dict(point) and name in set(table["config"])]

    return evaluate_gate(gate, table, means, reliability, configs_of,
                         accuracy=records.HELDOUT_TOP1, config="config", label="configuration",
                         margin=0.5, threshold=threshold, maximise=True)


def test_a_real_difference_passes_and_no_difference_does_not():
    # conv is 3 points above the reference, its twin is the reference's network again
    table = effects_table({"conv": 3.0, "twin": 0.0, "narrow": -2.0}, seeds=6, noise_sd=0.3)
    gate = {"controls": [{"a": KNOBS["conv"], "b": KNOBS["reference"], "expect": "differ"},
                         {"a": KNOBS["twin"], "b": KNOBS["reference"], "expect": "differ"},
                         {"a": KNOBS["reference"], "b": KNOBS["narrow"],
                          "expect": "not_worse"},
                         {"a": KNOBS["narrow"], "b": KNOBS["reference"], "expect": "better"}],
            "band": (60, 95)}
    result = _evaluate(table, gate).set_index("criterion")
    passed = result["passed"].to_dict()
    assert passed["pattern=conv vs pattern=last_half"]
    assert not passed["pattern=twin vs pattern=last_half"]
    assert passed["pattern=last_half vs pattern=narrow"]  # 2 points above: not worse
    assert not passed["pattern=narrow vs pattern=last_half"]  # worse, not better
    assert result.loc["pattern=conv vs pattern=last_half", "observed"].startswith("better: +")
    assert passed["accuracy band"]
    assert "split-half reliability" in passed


def test_the_gate_passes_only_when_every_criterion_does():
    table = effects_table({"conv": 4.0, "narrow": -4.0}, seeds=6, noise_sd=0.3)
    gate = {"controls": [{"a": KNOBS["conv"], "b": KNOBS["reference"], "expect": "differ"}],
            "band": (60, 95)}
    result = _evaluate(table, gate)
    assert result["passed"].all() and result.attrs["passed"]
    assert not _evaluate(table, {**gate, "band": (70, 95)}).attrs["passed"]  # narrow below 70
    band = _evaluate(table, {**gate, "band": (70, 95)}).set_index("criterion")
    assert "outside: narrow" in band.loc["accuracy band", "observed"]
    # a control whose configuration has no results yet fails, it is not skipped
    missing = {"controls": [{"a": KNOBS["twin"], "b": KNOBS["reference"], "expect": "differ"}]}
    result = _evaluate(table, missing)
    assert not result.attrs["passed"] and "no single configuration" in result["observed"][0]


def test_a_control_exempt_from_the_band_is_listed_not_judged():
    # conv sits at the ceiling (the job of a positive control is to differ); the rest inside
    table = effects_table({"conv": 28.0, "narrow": -4.0}, seeds=6, noise_sd=0.3)
    gate = {"controls": [{"a": KNOBS["conv"], "b": KNOBS["reference"], "expect": "differ"}],
            "band": (60, 95), "reliability": False}
    judged = _evaluate(table, gate).set_index("criterion").loc["accuracy band"]
    assert not judged["passed"] and "outside: conv 9" in judged["observed"]
    exempt = _evaluate(table, {**gate, "band_exempt": [KNOBS["conv"]]})
    row = exempt.set_index("criterion").loc["accuracy band"]
    assert row["passed"] and exempt.attrs["passed"]
    assert "exempt: conv 9" in row["observed"] and "outside" not in row["observed"]
    assert row["required"].endswith("except pattern=conv")
    # an exemption does not hide a configuration it does not name
    narrow = _evaluate(table, {**gate, "band": (70, 95), "band_exempt": [KNOBS["conv"]]})
    assert "outside: narrow" in narrow.set_index("criterion").loc["accuracy band", "observed"]
    assert not narrow.attrs["passed"]
    # one naming no configuration with results is said, and exempts nothing
    ghost = _evaluate(table, {**gate, "band_exempt": [KNOBS["twin"]]})
    row = ghost.set_index("criterion").loc["accuracy band"]
    assert not row["passed"] and "matching no configuration: pattern=twin" in row[
        "observed"]


def test_band_exempt_is_read_from_the_study_file():
    gate = _gate(CONTROLS + "    band: [60, 95]\n    band_exempt: [{pattern: conv}, "
                 "{pattern: last_half, dim: 24}]\n")
    assert gate.band_exempt == ({"pattern": "conv"}, {"pattern": "last_half", "dim": 24})


def test_band_exempt_names_every_configuration_it_matches_in_the_report():
    # {pattern: conv} with dim varying names two configurations: both are exempt
    import dataclasses

    from mvlab.study.report import PARAM, analyse

    spec = ("stem=8 | depth=1 width={d} | depth=1 width={w} | depth=2 width=64 pattern={p} "
            "| depth=2 width=128 pattern={p}")
    rows = [{"trial": 9 * i + 3 * j + s, PARAM + "pattern": p, PARAM + "dim": d, "seed": s,
             "state": "COMPLETE",
             "spec": spec.format(d=d, w=2 * d, p=p),
             records.HELDOUT_TOP1: (99.0 if p == "conv" else 80.0) + d / 12 + s / 4}
            for i, p in enumerate(("conv", "last_half", "attn_only"))
            for j, d in enumerate((12, 24)) for s in (0, 1, 2)]
    gate = _gate(CONTROLS + "    band: [60, 95]\n    band_exempt: [{pattern: conv}]\n")
    settings = {"gate": dataclasses.asdict(gate)}
    result = analyse(pd.DataFrame(rows), {records.HELDOUT_TOP1: "maximize"}, settings,
                     n_boot=20)
    (part,) = result.fidelities.values()
    row = part.gate.set_index("criterion").loc["accuracy band"]
    assert row["passed"], row["observed"]
    assert row["observed"].count("conv") == 2 and "outside" not in row["observed"]


def test_reliability_from_two_seeds_is_not_judged_however_high():
    # two seeds: each half is one seed, and four configurations that agree by chance give a
    # high r with an interval of -1 to 1; the row must not pass on that
    table = effects_table({"conv": 8.0, "mid": 4.0, "narrow": -4.0}, seeds=2, noise_sd=0.3)
    row = _evaluate(table, {"band": (0, 100)}).set_index("criterion").loc[
        "split-half reliability"]
    assert not row["passed"] and "not judged below 4 seeds" in row["observed"]
    four = _evaluate(effects_table({"conv": 8.0, "mid": 4.0, "narrow": -4.0}, seeds=4,
                                   noise_sd=0.3), {"band": (0, 100)})
    assert four.set_index("criterion").loc["split-half reliability", "passed"]


def test_a_noisy_proxy_fails_on_reliability():
    # ten networks of one accuracy, 3 points of run-to-run noise: the halves rank at random
    table = effects_table({f"c{i}": 0.0 for i in range(9)}, seeds=4, seed_sd=0.0, noise_sd=3.0)
    result = _evaluate(table, {"band": (60, 95)}).set_index("criterion")
    assert not result.loc["split-half reliability", "passed"]
    assert not result.attrs["passed"]
    # a gate that does not ask for reliability (two configurations) has no such row
    assert list(_evaluate(table, {"band": (60, 95), "reliability": False})["criterion"]) == [
        "accuracy band"]


def test_report_prints_the_gate_outcome_in_one_line(tmp_path):
    from mvlab.study.gate import outcome_line

    table = effects_table({"conv": 4.0, "narrow": -4.0}, seeds=6, noise_sd=0.3)
    gate = {"controls": [{"a": KNOBS["conv"], "b": KNOBS["reference"], "expect": "differ"}],
            "band": (70, 95)}
    _evaluate(table, gate).to_csv(tmp_path / "gate_epochs_2.csv", index=False)
    line = outcome_line(tmp_path / "gate_epochs_2.csv")
    assert line.startswith("calibration gate (epochs_2): NOT PASSED (1 of 3 criteria: "
                           "accuracy band)")
    _evaluate(table, {**gate, "band": (60, 95)}).to_csv(tmp_path / "gate.csv", index=False)
    assert outcome_line(tmp_path / "gate.csv") == "calibration gate: PASSED (3 criteria)"


def test_not_worse_is_a_one_sided_test_at_the_margin():
    # a shown 0.3 points below b is still not worse at a 0.5-point margin; 2 points below is
    table = effects_table({"slightly": -0.3, "much": -2.0, "tied": 0.0}, seeds=8, noise_sd=0.1)
    gate = {"controls": [{"a": {"pattern": p}, "b": KNOBS["reference"], "expect": "not_worse"}
                         for p in ("slightly", "much")]
            + [{"a": {"pattern": "tied"}, "b": KNOBS["reference"], "expect": "resolved"}]}
    result = _evaluate(table, gate).set_index("criterion")["passed"].to_dict()
    assert result["pattern=slightly vs pattern=last_half"]
    assert not result["pattern=much vs pattern=last_half"]
    assert result["pattern=tied vs pattern=last_half"]  # equivalent: resolved


def _with_losses(table: pd.DataFrame, losses: dict[tuple[str, int], float],
                 classes: int = 2) -> pd.DataFrame:
    """``table`` with the records the plateau check reads: a learned loss of 0.3 everywhere
    except the (config, seed) pairs in ``losses``."""
    from mvlab.analysis.plateau import LOSS_COLUMN

    loss = [losses.get((c, s), 0.3) for c, s in zip(table["config"], table[records.SEED],
                                                      strict=True)]
    return table.assign(**{LOSS_COLUMN: loss, records.NUM_CLASSES: classes,
                           "configuration": table["config"]})


def test_on_plateau_reads_the_loss_of_a_uniform_guess_and_never_guesses_when_unrecorded():
    from mvlab.analysis.plateau import LOSS_COLUMN, on_plateau

    table = pd.DataFrame({LOSS_COLUMN: [0.693, 0.689, 0.60, 2.30, 2.20, 0.693, None],
                          records.NUM_CLASSES: [2, 2, 2, 10, 10, None, 2]})
    # ln 2 = 0.693 (0.98 x: 0.679); ln 10 = 2.303 (0.98 x: 2.256); unrecorded stays <NA>
    assert on_plateau(table).tolist() == [True, True, False, True, False, pd.NA, pd.NA]
    assert on_plateau(pd.DataFrame({"x": [1]})).isna().all()  # a record without either column


def test_a_seed_on_the_plateau_fails_the_gate_even_when_the_means_sit_in_the_band():
    # narrow's four seeds: three learned (about 80 %), one at chance: mean about 72.5, inside
    # [60, 95], so only the per-seed check sees the seed that learned nothing
    table = effects_table({"conv": 10.0, "narrow": 10.0}, seeds=4, noise_sd=0.3)
    table.loc[(table["config"] == "narrow") & (table[records.SEED] == 2),
              records.HELDOUT_TOP1] = 50.0
    gate = {"controls": [{"a": KNOBS["conv"], "b": KNOBS["reference"], "expect": "resolved"}],
            "band": (60, 95), "reliability": False}
    result = _evaluate(_with_losses(table, {("narrow", 2): 0.693}), gate).set_index("criterion")
    assert result.loc["accuracy band", "passed"]
    assert not result.loc["every seed left the plateau", "passed"]
    assert result.loc["every seed left the plateau", "observed"] == (
        "1 of 12 judged trials: narrow seed 2")
    # seeds read back as floats (a running trial leaves the column with a gap) print as ints
    floats = _with_losses(table, {("narrow", 2): 0.693}).astype({records.SEED: float})
    assert _evaluate(floats, gate).set_index("criterion").loc[
        "every seed left the plateau", "observed"] == "1 of 12 judged trials: narrow seed 2"
    learned = _evaluate(_with_losses(table, {}), gate).set_index("criterion")
    assert learned.loc["every seed left the plateau", "passed"]
    # a gate without a band checks it too
    assert not _evaluate(_with_losses(table, {("narrow", 2): 0.693}),
                         {**gate, "band": None}).set_index("criterion").loc[
        "every seed left the plateau", "passed"]
    # a trial that cannot be judged (seeds added to a study recorded before the check, or a
    # stuck seed's record lost) fails the criterion, as an undetermined control does
    partly = _with_losses(table, {})
    partly.loc[partly["config"] == "narrow", records.NUM_CLASSES] = None
    row = _evaluate(partly, gate).set_index("criterion").loc["every seed left the plateau"]
    assert not row["passed"] and row["observed"] == (
        "none; 4 trial(s) not judged (no training loss or class count recorded)")
    # a study none of whose trials can be judged (recorded before the check) gets no row
    assert "every seed left the plateau" not in _evaluate(table, gate)["criterion"].tolist()


def test_the_report_counts_plateau_seeds_per_configuration_and_says_what_they_mean():
    from mvlab.study.report import FidelityAnalysis, _mark_plateau, plateau_lines, ranking_lines

    table = _with_losses(effects_table({"conv": 10.0}, seeds=3, noise_sd=0.3),
                         {("conv", 1): 0.69, ("conv", 2): 0.692})
    means = seed_means(table, [records.HELDOUT_TOP1], config="config")
    means["configuration"] = means["config"]
    notes: list[str] = []
    _mark_plateau(table, means, notes)
    assert means.set_index("config")["on_plateau"].to_dict() == {"reference": 0, "conv": 2}
    part = FidelityAnalysis("all", means, notes=notes)
    assert any(line.endswith("3 seed(s), 2 on the plateau")
               for line in ranking_lines(part, records.HELDOUT_TOP1))
    assert plateau_lines(part)[2].startswith(
        "conv: 2 of 3 judged seeds. A seed is on the plateau when the mean training loss of its "
        "last epoch stays within 2 % of a uniform guess's, ln K for K classes: at least 0.679 "
        "for two.")
    # one configuration recorded, one not: judged where recorded, and the report says so
    partly = table.assign(**{records.NUM_CLASSES: table["config"].map({"conv": 2})})
    _mark_plateau(partly, means, notes)
    assert pd.isna(means.set_index("config").loc["reference", "on_plateau"]) and notes


def test_exit_epochs_read_every_epoch_after_the_curriculum_and_never_guess():
    from mvlab.analysis.plateau import LOSS_COLUMN, describe_exits, exit_epochs, on_plateau

    table = pd.DataFrame({
        records.TRAIN_LOSSES: [[0.694, 0.60, 0.2], [0.694, 0.693, 0.69], "[0.2, 0.01, 0.70, 0.5]",
                               [0.694, 0.5, 0.3, 0.70], [2.3, 2.0], [0.69, 0.5, 0.70, 0.4],
                               None, [0.5], "not json"],
        records.NUM_CLASSES: [2, 2, 2, 2, 10, 2, 2, None, 2],
        records.STAGE_EPOCHS: [0, 0, 2, 0, 0, None, 0, 0, 0],
        records.SEED: [3, 1, 0, 2, 4, 5, 6, 7, 8]})
    table[LOSS_COLUMN] = [v[-1] if isinstance(v, list) else None
                          for v in table[records.TRAIN_LOSSES]]
    # 0.98 ln 2 = 0.679: epoch 2; never (inf); after two stage epochs (low on contour 2, then
    # above ln 2 on the task) epoch 4, from a trials.csv's JSON text; left in epoch 2 but back on
    # the plateau at the end: never, as on_plateau says; 0.98 ln 10 = 2.256; left, fell back,
    # left again: the epoch it stayed below from; losses, class count or readable losses
    # missing: not judged (nan)
    epochs = exit_epochs(table)
    assert epochs.iloc[:6].tolist() == [2.0, math.inf, 4.0, math.inf, 2.0, 4.0]
    assert epochs.iloc[6:].isna().all()
    stuck = on_plateau(table)
    assert stuck.iloc[[0, 1, 3, 4, 5]].tolist() == [False, True, True, False, False]
    assert describe_exits(epochs.iloc[:7], table[records.SEED].iloc[:7]) == (
        "seed 0: 4, seed 1: never, seed 2: never, seed 3: 2, seed 4: 2, seed 5: 4, "
        "seed 6: not recorded")
    # a seed column read back as floats (one trial had none) still prints whole seeds
    assert describe_exits(pd.Series([2.0]), pd.Series([3.0])) == "seed 3: 2"
    assert describe_exits(pd.Series([math.nan]), pd.Series([0])) == ""
    assert exit_epochs(pd.DataFrame()).empty


def test_the_report_lists_when_each_seed_left_the_plateau():
    from mvlab.study.report import FidelityAnalysis, _mark_plateau, plateau_lines

    table = _with_losses(effects_table({"conv": 10.0}, seeds=2, noise_sd=0.3), {})
    losses = {("conv", 0): [0.69, 0.3], ("conv", 1): [0.69, 0.69], ("reference", 0): [0.2, 0.1]}
    table[records.TRAIN_LOSSES] = [losses.get((c, s)) for c, s in zip(
        table["config"], table[records.SEED], strict=True)]
    means = seed_means(table, [records.HELDOUT_TOP1], config="config")
    means["configuration"] = means["config"]
    _mark_plateau(table, means, [])
    assert means.set_index("config")["plateau_exits"].to_dict() == {
        "conv": "seed 0: 2, seed 1: never", "reference": "seed 0: 1, seed 1: not recorded"}
    assert records.TRAIN_LOSSES not in means  # one seed's list would pass for the configuration
    lines = plateau_lines(FidelityAnalysis("all", means))
    start = lines.index("### When each seed left the plateau")
    assert sorted(lines[start + 4:start + 6]) == ["- conv: seed 0: 2, seed 1: never",
                                                  "- reference: seed 0: 1, seed 1: not recorded"]
    # rows under a repeated index (two tables concatenated) are still grouped by trial
    doubled = pd.concat([table.iloc[:2], table.iloc[2:]])
    doubled.index = [0, 1] * (len(doubled) // 2)
    _mark_plateau(doubled, means, [])
    assert means.set_index("config").loc["conv", "plateau_exits"] == "seed 0: 2, seed 1: never"
    # nothing recorded: no section
    del table[records.TRAIN_LOSSES]
    _mark_plateau(table, means, [])
    assert plateau_lines(FidelityAnalysis("all", means)) == []


def test_mvlab_report_prints_the_plateau_seeds_in_one_line(tmp_path):
    from mvlab.study.report import plateau_line

    means = pd.DataFrame({"configuration": ["conv", "attn_only", "last_half"],
                          "on_plateau": [0, 2, None], "plateau_judged": [4, 4, 0]})
    means.to_csv(tmp_path / "configurations_epochs_2.csv", index=False)
    assert plateau_line(tmp_path / "configurations_epochs_2.csv") == (
        "plateau (epochs_2): 2 of 8 judged seeds never left it (attn_only: 2): they learned "
        "next to nothing in this budget; see the report's README.md")
    means.assign(on_plateau=[0, 0, None]).to_csv(tmp_path / "configurations.csv", index=False)
    assert plateau_line(tmp_path / "configurations.csv") is None
