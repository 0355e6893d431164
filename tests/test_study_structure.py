"""The study package's structure: imports that run one way, light modules that stay light, one
list of option keys, one set of record names and a typed message between torchrun ranks."""
from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mvlab import records
from mvlab.errors import SpecError, StudyError
from mvlab.grammar import is_option_key, option_keys, set_option
from mvlab.study import load_study_text
from mvlab.study.types import TrainOrder

STUDY = Path(__file__).resolve().parents[1] / "mvlab" / "study"
PACKAGE = "mvlab.study"


def import_graph(folder: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, function-level imports included: a lazy
    import is still a dependency, and a cycle through one is still a cycle."""
    modules = {f"{package}.{p.stem}" if p.stem != "__init__" else package: p
               for p in folder.glob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Assign) and name == package and any(
                    getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
                # the package's lazy exports (importlib, on first use): still its imports
                targets = [f"{package}.{v.value}" for v in node.value.values]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from mvlab.study import storage`` imports the submodule, not the package
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}"
                           in modules else node.module for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_study_package_imports_one_way():
    graph = import_graph(STUDY)
    assert f"{PACKAGE}.runner" in graph and f"{PACKAGE}.types" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_check_sees_a_lazy_import_cycle(tmp_path):
    """What the check above would have said before the split: plan imported the runner, the
    schema and the space imported each other inside functions."""
    (tmp_path / "schema.py").write_text("def load():\n    from mvlab.study.space import v\n")
    (tmp_path / "space.py").write_text("from mvlab.study.schema import load\n")
    (tmp_path / "types.py").write_text("")
    cycle = find_cycle(import_graph(tmp_path))
    assert cycle is not None and set(cycle) == {f"{PACKAGE}.schema", f"{PACKAGE}.space"}


def test_types_sit_at_the_bottom():
    """Every module may import the types; the types import no other module of the package."""
    graph = import_graph(STUDY)
    assert f"{PACKAGE}.runner" in graph[PACKAGE]  # the lazy exports are seen
    assert graph[f"{PACKAGE}.types"] == set()
    for name in ("schema", "space", "measure", "plan"):
        assert f"{PACKAGE}.types" in graph[f"{PACKAGE}.{name}"], name


# Modules ``mvlab sweep --check`` and the analysis import: none may pull in torch or MLflow.
LIGHT = ("mvlab.records", "mvlab.study.types", "mvlab.study.schema", "mvlab.study.space",
         "mvlab.study.plan", "mvlab.study.locations", "mvlab.study.sections")


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_no_torch_or_mlflow(module):
    heavy = ["torch", "mlflow"] + (["optuna"] if module in ("mvlab.records",
                                                             "mvlab.study.types") else [])
    code = (f"import sys, {module}; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", (module, out.stdout, out.stderr)


# ------------------------------------------------------------------------------ option keys
def _candidate_keys() -> list[str]:
    # Blocks 0 and 1 are mixer blocks on T's stages 3 and 4 (last_half): a per-block key there
    # fits the spec, so set_option's answer is about the key alone.
    blocks = [f"s{i}.b{j}.{k}" for i in (3, 4) for j in (0, 1) for k in
              ("conv1d", "d_state", "branch", "out", "depth", "pattern", "heads")]
    wrong = ["s0.depth", "s5.width", "s3.b0", "s3.b0.conv1d.x", "s3.bx.conv1d", "S3.depth",
             "s3.foo", "foo", "mlp_ratios", "stem.stride", "depth", "width", "b0.conv1d",
             "s3.b-1.conv1d", "s3..depth", "dims"]
    return [*option_keys(), *blocks, *wrong]


# A value each option takes on the T preset (its current one where that is easiest).
_VALUES = {"stem": 32, "stem_stride": 2, "mlp_ratio": 4, "mlp": 4, "drop_path": 0.1,
           "layer_scale": "none", "dim": 80, "depths": "1,3,8,4", "depth": 4, "width": 320,
           "pattern": "last_half", "heads": 8, "window": 7, "d_state": 8, "d_conv": 3,
           "expand": 1, "branch": "off", "conv1d": "causal", "out": "gate"}


def _grammar_takes(key: str) -> bool:
    """set_option takes ``key``: some value of the key's kind changes the T preset with it."""
    last = key.rsplit(".", 1)[-1]
    values = [_VALUES[last]] if last in _VALUES else list(_VALUES.values())
    for value in values:
        try:
            set_option("T", key, value)
            return True
        except SpecError:
            continue
    return False


def _schema_takes(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    value = _VALUES.get(last, 1)
    try:
        load_study_text(f"name: keys\nmodel: T\nspace: {{'{key}': ['{value}']}}\n")
    except StudyError as exc:
        return "unknown search-space key" not in str(exc)
    return True


def test_the_grammar_lists_what_set_option_takes():
    for key in _candidate_keys():
        assert is_option_key(key) == _grammar_takes(key), key


def test_the_study_schema_takes_exactly_the_grammars_keys():
    """The bug this fixed: ``space: {s3.b0.conv1d: [...]}`` (and stem_stride, mlp) were refused
    by the schema's own copy of the key list while set_option took them."""
    # A per-block key of a conv-only stage is a key (the value is what cannot fit).
    for key in [*_candidate_keys(), "s1.b0.conv1d", "s2.b5.d_state"]:
        assert _schema_takes(key) == is_option_key(key), key
    config = load_study_text("name: keys\nmodel: T\nspace: {s3.b0.conv1d: [regular, causal]}\n")
    assert [d.key for d in config.space] == ["s3.b0.conv1d"]


def test_a_mistyped_key_gets_the_grammars_suggestion():
    with pytest.raises(StudyError, match=r"did you mean 'stem_stride'"):
        load_study_text("name: keys\nmodel: T\nspace: {stem_strid: [2, 4]}\n")


# ------------------------------------------------------------------------------ record names
def test_sweep_and_analysis_read_one_storage_url_alike(tmp_path):
    """Writer and reader once disagreed: the analysis opened ``*.jsonl`` journals the sweep
    refused, and read ``journal://x`` as ``x`` where the sweep read ``//x``."""
    from optuna.storages import JournalStorage

    from mvlab.analysis.load import open_storage as reader
    from mvlab.study.storage import open_storage as writer

    for name in ("a.journal", "b.log", "c.jsonl"):
        path = tmp_path / name
        assert isinstance(writer(str(path)), JournalStorage), name
        assert isinstance(reader(str(path)), JournalStorage), name
    assert records.journal_path("journal://x/y.journal") == Path("x/y.journal")
    assert records.journal_path("journal:///x/y") == Path("/x/y")
    assert records.journal_path("sqlite:///x.journal") is None
    assert records.DEFAULT_STORAGE.format(study="s") == "studies/s/optuna.journal"


def test_one_fidelity_label_for_the_sweep_and_the_synthetic_studies():
    from mvlab.analysis.synthetic import RESOLUTION, fidelity_label

    assert fidelity_label(3) == records.fidelity_label(3, RESOLUTION)
    assert records.fidelity_label(3, 32, 200) == "epochs=3 res=32 per_class=200"


# ------------------------------------------------------------------------------ torchrun ranks
def test_the_ranks_message_is_a_typed_frozen_object():
    order = TrainOrder("proxy", {"resolution": 32}, {"epochs": 1})
    assert pickle.loads(pickle.dumps(order)) == order
    with pytest.raises(AttributeError):
        order.spec = "T"  # type: ignore[misc]


def test_a_following_rank_trains_what_rank_zero_orders(monkeypatch):
    from mvlab.study import trial as trial_module
    from mvlab.study import worker
    from mvlab.training import ddp, trainer

    sent = [TrainOrder("proxy", "data-config", "train-config"), None]
    trained = []
    monkeypatch.setattr(ddp, "broadcast_object", lambda obj, ranks: sent.pop(0))
    monkeypatch.setattr(trial_module.DataCache, "get", lambda self, d, t: f"bundle of {d}")
    monkeypatch.setattr(trainer, "train", lambda spec, data, cfg: trained.append((spec, data,
                                                                                   cfg)))
    assert worker.follow_trials(object()) == 1
    assert trained == [("proxy", "bundle of data-config", "train-config")]

    sent[:] = [("train", "proxy", "data-config", "train-config")]  # the old untyped tuple
    with pytest.raises(TypeError, match="TrainOrder"):
        worker.follow_trials(object())


def test_a_resume_with_other_settings_names_what_changed():
    """The refusal's diff is config_fields.changed_settings, the one the trainer's resume uses."""
    import optuna

    from mvlab.study.preparation import _check_same_study

    text = "name: same\nmodel: proxy\ntrain: {epochs: 2}\nspace: {pattern: [last_half]}\n"
    study = optuna.create_study()
    _check_same_study(study, load_study_text(text), "x.journal")
    _check_same_study(study, load_study_text(text), "x.journal")  # the same settings resume
    changed = load_study_text(text, overrides=["train.epochs=3"])
    with pytest.raises(StudyError, match=r"train\.epochs: 2 -> 3"):
        _check_same_study(study, changed, "x.journal")
