"""Hostile files and shared machines (issue 15, items 1-6; docs/security.md): no code runs from
a planted checkpoint or kernel library, no swapped cache entry is reused, no password is printed
or logged, a torn journal is repaired, a stale verdict does not crash the live worker, and an
output path that cannot be written is one line before any work.

Tests run as root here, so the ownership rule is checked by replacing ``current_uid`` and the
mode rule with chmod."""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvlab import safety
from mvlab.cli import main as cli_main
from mvlab.errors import StudyError, UserError
from mvlab.safety import UnsafePathError, mask_credentials, mask_url
from mvlab.training.checkpoint import ResumeError, load_checkpoint, save_checkpoint

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return os.environ.get("MVLAB_CACHE") or str(tmp_path_factory.mktemp("mvlab-cache"))


class _RunsCode:
    """A pickle that runs a shell command when loaded (what an attacker plants)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- 1. resume state: weights-only ---------------------------------------------------------------

@pytest.mark.slow  # builds the built-in data first (about 15 s the first time)
def test_a_planted_resume_pickle_runs_nothing_and_is_one_line(tmp_path, cache_dir, capsys):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    out.mkdir()
    torch.save({"format_version": 2, "model": _RunsCode(marker)}, out / "last.pt")
    code = cli_main(["train", "tiny", "--out", str(out), "--resume", "--quiet", "--device", "cpu",
                     "--set", "epochs=1", "warmup_epochs=0", "per_class=2", "val_per_class=1",
                     "resolution=16", "threads=1", f"cache_dir={cache_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not marker.exists()
    assert len(err.splitlines()) == 1 and "cannot resume from" in err and "posix.system" in err


@pytest.mark.parametrize("content, says", [
    (b"not a checkpoint", "not a readable PyTorch checkpoint"),
    (b"", "not a readable PyTorch checkpoint"),
    ("tensor", "not an mvlab training checkpoint"),
    ("format1", "checkpoint format 1"),
    ("partial", "lacks"),
])
def test_foreign_or_damaged_resume_files_are_refused(tmp_path, content, says):
    path = tmp_path / "last.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "format1":
        torch.save({"format_version": 1}, path)
    else:
        torch.save({"format_version": 2, "epoch": 1}, path)
    with pytest.raises(ResumeError, match=says):
        load_checkpoint(tmp_path)


def test_a_raw_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    (tmp_path / "last.pt").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(ResumeError):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_numpy_rng_state_survives_a_weights_only_round_trip(tmp_path):
    np.random.seed(7)
    np.random.rand(3)
    state = {"fingerprint": {}, "epoch": 1, "global_step": 2, "history": [{"loss": np.float32(1.5)}],
             "model": {}, "optimizer": {}, "scheduler": {}, "scaler": {},
             "rng": {"numpy": np.random.get_state(), "python": __import__("random").getstate()}}
    expected = np.random.rand(4)
    save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(tmp_path)  # weights_only=True inside
    np.random.seed(0)
    np.random.set_state(loaded["rng"]["numpy"])
    assert np.array_equal(np.random.rand(4), expected)
    assert loaded["history"] == [{"loss": 1.5}] and type(loaded["history"][0]["loss"]) is float


# --- 2. kernel cache and decoded-data cache ----------------------------------------------------------

def test_private_dir_is_created_0700_and_refuses_others(tmp_path, monkeypatch):
    made = safety.private_dir(tmp_path / "a" / "kernels", "the kernel cache")
    assert made.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafePathError, match=r"writable by its group and everyone.*chmod go-w"):
        safety.private_dir(shared, "the kernel cache")
    monkeypatch.setattr(safety, "current_uid", lambda: os.geteuid() + 4242)
    with pytest.raises(UnsafePathError, match="belongs to .*not to you"):
        safety.private_dir(made, "the kernel cache")


@pytest.fixture
def kernel_cache(monkeypatch, tmp_path):
    """A kernel cache of our own, a quick unoptimised build and a fresh ``_library``."""
    import mvlab.ops.scan as scan
    from mvlab.ops.scan import cpu_c

    if shutil.which(cpu_c.compiler()) is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("MVLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scan, "_announced", set())
    monkeypatch.setattr(cpu_c, "_FLAG_SETS", (("-O0", "-fopenmp-simd"),))
    cpu_c._library.cache_clear()
    yield cpu_c, tmp_path / "cache" / "kernels"
    cpu_c._library.cache_clear()


def test_an_unsafe_kernel_cache_is_refused_and_auto_falls_back(kernel_cache, monkeypatch):
    from mvlab.ops.scan import resolve_backend

    cpu_c, folder = kernel_cache
    folder.mkdir(parents=True)
    folder.chmod(0o775)
    assert not cpu_c.is_available()
    assert "writable by its group" in cpu_c.unavailable_reason()
    assert resolve_backend("auto", "cpu") == "chunked"
    assert list(folder.iterdir()) == []  # nothing was built into it either
    folder.chmod(0o700)
    cpu_c._library.cache_clear()
    monkeypatch.setattr(safety, "current_uid", lambda: os.geteuid() + 4242)
    assert "not to you" in cpu_c.unavailable_reason()


def test_a_planted_kernel_library_is_never_loaded(kernel_cache, tmp_path):
    cpu_c, folder = kernel_cache
    assert cpu_c.is_available(), cpu_c.unavailable_reason()
    (library,) = folder.glob("*.so")
    marker = tmp_path / "PWNED"
    source = tmp_path / "evil.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                      f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    subprocess.run([cpu_c.compiler(), "-shared", "-fPIC", str(source), "-o", str(library)],
                   check=True)
    library.chmod(0o700)
    cpu_c._library.cache_clear()
    assert cpu_c.is_available(), cpu_c.unavailable_reason()  # rebuilt, then loaded
    assert not marker.exists()
    recorded = (folder / (library.name + ".sha256")).read_text().strip()
    import hashlib
    assert hashlib.sha256(library.read_bytes()).hexdigest() == recorded
    # and a library someone else owns is refused outright
    cpu_c._library.cache_clear()
    library.chmod(0o770)
    assert "the kernel library" in cpu_c.unavailable_reason()
    assert "writable by its group" in cpu_c.unavailable_reason()


@pytest.fixture
def image_tree(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    items = []
    for label, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(30, 255, (12, 12, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")
            items.append((f"{name}/{i}.png", label))
    return root, items


def test_a_swapped_decoded_cache_entry_is_rebuilt_not_reused(image_tree, tmp_path, caplog):
    from mvlab.data.cache import build_or_open

    root, items = image_tree
    entry = build_or_open(tmp_path / "c", "t", root, items, side=8, progress=False)
    assert entry.built and set(entry.manifest["checksums"]) == {"images.npy", "labels.npy",
                                                                "sources.npy"}
    good = np.array(entry.images)
    # the reported attack: all-black images, every label 0, manifest untouched
    np.save(entry.path / "images.npy", np.zeros_like(good))
    np.save(entry.path / "labels.npy", np.zeros(len(items), dtype=np.int64))
    with caplog.at_level(logging.WARNING, logger="mvlab.data"):
        again = build_or_open(tmp_path / "c", "t", root, items, side=8, progress=False)
    assert again.built and np.array_equal(np.array(again.images), good)
    assert list(again.labels) == [label for _, label in items]
    assert "does not match its recorded checksums" in caplog.text


def test_a_decoded_cache_others_can_write_is_refused(image_tree, tmp_path, monkeypatch):
    from mvlab.data.cache import build_or_open

    root, items = image_tree
    entry = build_or_open(tmp_path / "c", "t", root, items, side=8, progress=False)
    assert (tmp_path / "c" / "decoded").stat().st_mode & 0o777 == 0o700
    (entry.path / "images.npy").chmod(0o666)
    with pytest.raises(UnsafePathError, match="images.npy is writable by its group and everyone"):
        build_or_open(tmp_path / "c", "t", root, items, side=8, progress=False)
    (entry.path / "images.npy").chmod(0o600)
    monkeypatch.setattr(safety, "current_uid", lambda: os.geteuid() + 4242)
    with pytest.raises(UnsafePathError, match="belongs to"):
        build_or_open(tmp_path / "c", "t", root, items, side=8, progress=False)


def test_the_builtin_tree_follows_the_cache_rule(tmp_path, monkeypatch):
    """The decoded cache is built from the built-in PNG tree, so a planted tree is refused too."""
    from mvlab.data.builtin import write_once

    def write(folder: Path) -> None:
        (folder / "a.txt").write_text("x")

    root = tmp_path / "cache" / "builtin" / "set-1"
    assert write_once(root, write, "1") == root
    assert root.parent.stat().st_mode & 0o777 == 0o700
    root.parent.chmod(0o777)
    with pytest.raises(UnsafePathError, match="built-in data cache .* writable by"):
        write_once(root, write, "1")
    root.parent.chmod(0o700)
    monkeypatch.setattr(safety, "current_uid", lambda: os.geteuid() + 4242)
    with pytest.raises(UnsafePathError, match="belongs to"):
        write_once(root, write, "1")


# --- 3. credentials ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("postgresql://mvlab:s3cret@db-host/mvlab", "postgresql://mvlab:***@db-host/mvlab"),
    ("postgresql+psycopg2://u:p%40ss:w@db:5432/x", "postgresql+psycopg2://u:***@db:5432/x"),
    ("postgresql://mvlab@db-host/mvlab", "postgresql://mvlab@db-host/mvlab"),
    ("http://user:tok@mlflow:5000", "http://user:***@mlflow:5000"),
    ("postgresql://db/x?password=hunter2&sslmode=require",
     "postgresql://db/x?password=***&sslmode=require"),
    ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
    ("studies/x/optuna.journal", "studies/x/optuna.journal"),
])
def test_mask_url(url, shown):
    assert mask_url(url) == shown


def test_mask_url_can_drop_the_password_for_environment_credentials():
    assert mask_url("postgresql://u:pw@h/db", placeholder=None) == "postgresql://u@h/db"


# what users put in a URL's password, escaped or not (no whitespace: it ends a shell word)
_PASSWORD_CHARS = "abcXYZ019-_.~!$&'()*+,;=%:@/?#\""


@settings(max_examples=200, deadline=None)
@given(password=st.text(alphabet=_PASSWORD_CHARS, min_size=1, max_size=40),
       scheme=st.sampled_from(["postgresql", "postgresql+psycopg2", "mysql", "http", "https"]))
def test_no_password_survives_masking(password, scheme):
    url = f"{scheme}://mvlab:{password}@db-host:5432/mvlab"
    line = f"mvlab sweep s.yaml --storage {url} --n-trials 2"
    assert mask_credentials(line) == (f"mvlab sweep s.yaml --storage {scheme}://mvlab:***@"
                                      f"db-host:5432/mvlab --n-trials 2")
    assert mask_url(url, placeholder=None) == f"{scheme}://mvlab@db-host:5432/mvlab"


def test_mask_credentials_in_a_command_line():
    text = ("mvlab sweep x.yaml --storage postgresql://mvlab:s3cret@db/mvlab "
            "--set tracking.uri=http://me:tok3n@mlf:5000 'host=db password=pw2'")
    masked = mask_credentials(text)
    assert not any(secret in masked for secret in ("s3cret", "tok3n", "pw2"))
    assert "postgresql://mvlab:***@db/mvlab" in masked and "http://me:***@mlf:5000" in masked


STUDY = """\
name: {name}
model: tiny
data: {{dataset: builtin, resolution: 16, per_class: 4, val_per_class: 2, heldout_fraction: 0.25,
        cache_dir: "{cache}"}}
train: {{epochs: 1, batch_size: 8, warmup_epochs: 0, device: cpu, threads: 1}}
study: {{kind: grid, seeds: [0]}}
space:
  pattern: [last_half]
bench: {{batch_size: 2, warmup: 1, steps: 1, repeats: 1, threads: 1}}
workdir: "{workdir}"
{tracking}"""


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow database for the module: creating its schema costs 10-25 s on a busy CPU."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _study(tmp_path: Path, cache: str, name: str = "sec", tracking: str | None = None):
    from mvlab.study import load_study

    path = tmp_path / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, cache=cache, workdir=tmp_path / "studies" / name,
                                 tracking=f'tracking: {{uri: "{tracking}"}}\n' if tracking else ""))
    return path, load_study(str(path))


def test_check_prints_no_password(tmp_path, cache_dir, capsys, monkeypatch):
    path, _ = _study(tmp_path, cache_dir)
    argv = ["sweep", str(path), "--check", "--storage", "postgresql://u:s3cret@db/x",
            "--set", "tracking.uri=http://me:tok3n@mlf:5000"]
    # --check connects to the MLflow server like the sweep does; "mlf" resolves nowhere here,
    # and the line saying so carries no password either.
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "tok3n" not in err and "tracking.uri http://mlf:5000: cannot connect" in err
    import mvlab.study.tracking

    monkeypatch.setattr(mvlab.study.tracking, "check_reachable", lambda *a, **k: None)
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "tok3n" not in out
    assert "storage: postgresql://u:***@db/x" in out and "mlflow:  http://me:***@mlf:5000" in out


@pytest.mark.slow  # MLflow: about 10 s on a quiet CPU, 30 s on a busy one
def test_the_parent_runs_command_tag_carries_no_password(tmp_path, cache_dir, monkeypatch,
                                                        tracking_uri):
    from mlflow import MlflowClient

    from mvlab.study.preparation import prepare
    from mvlab.study.types import SweepOptions

    monkeypatch.chdir(tmp_path)
    _, config = _study(tmp_path, cache_dir, name="cmdtag", tracking=tracking_uri)
    argv = ["mvlab", "sweep", "sec.yaml", "--storage", "postgresql://mvlab:s3cret@db/mvlab",
            "--set", "tracking.uri=http://me:tok3n@mlf:5000"]
    prepared, _study_obj = prepare(config, SweepOptions(progress=False), argv)
    run = MlflowClient(prepared.target.uri).get_run(prepared.target.parent_run_id)
    logged = json.dumps({"tags": run.data.tags, "params": run.data.params})
    assert "s3cret" not in logged and "tok3n" not in logged
    assert "postgresql://mvlab:***@db/mvlab" in run.data.tags["command"]


POSTGRES_URL = os.environ.get("MVLAB_TEST_POSTGRES_URL", "")


@pytest.mark.slow  # needs scripts/test.sh's PostgreSQL server; make test-fast runs none
@pytest.mark.skipif(not (POSTGRES_URL and os.environ.get("MVLAB_PG_DIR")),
                    reason="no throwaway PostgreSQL (scripts/test.sh starts one)")
def test_a_url_without_password_uses_pgpassword_and_pgpass(tmp_path, monkeypatch):
    """The documented way: the URL names the user, libpq finds the password in PGPASSWORD or
    the file PGPASSFILE (~/.pgpass) names. The test role alone needs a password."""
    import sqlalchemy

    from mvlab.study.storage import engine_url, open_storage

    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        # a database of its own: the shared test database holds tables other roles own
        conn.execute(sqlalchemy.text("DROP DATABASE IF EXISTS mvlab_pw_db"))
        conn.execute(sqlalchemy.text("DROP ROLE IF EXISTS mvlab_pw"))
        conn.execute(sqlalchemy.text("CREATE ROLE mvlab_pw LOGIN PASSWORD 'pw-4-test'"))
        conn.execute(sqlalchemy.text("CREATE DATABASE mvlab_pw_db OWNER mvlab_pw"))
    hba = Path(os.environ["MVLAB_PG_DIR"]) / "data" / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("host all mvlab_pw 127.0.0.1/32 scram-sha-256\n" + original)
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_reload_conf()"))
        host = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0] + "/mvlab_pw_db"
        url = f"postgresql://mvlab_pw@{host}"
        monkeypatch.delenv("PGPASSWORD", raising=False)
        monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
        with pytest.raises(StudyError, match="password") as info:
            open_storage(url)
        assert "pw-4-test" not in str(info.value)
        monkeypatch.setenv("PGPASSWORD", "pw-4-test")
        open_storage(url)
        monkeypatch.delenv("PGPASSWORD")
        pgpass = tmp_path / "pgpass"
        hostport = host.split("/", 1)[0]
        # hostname:port:database:username:password
        pgpass.write_text(f"{hostport if ':' in hostport else hostport + ':*'}:*:mvlab_pw:"
                          f"pw-4-test\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
        open_storage(url)
        assert engine_url(url)  # same URL, no password in it anywhere
    finally:
        hba.write_text(original)
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_reload_conf()"))
            conn.execute(sqlalchemy.text("DROP DATABASE IF EXISTS mvlab_pw_db WITH (FORCE)"))
        admin.dispose()


# --- 4. torn journal ----------------------------------------------------------------------------------

def _tiny_journal(path: Path, trials: int = 3) -> None:
    from mvlab.study.storage import open_storage

    study = optuna.create_study(study_name="j", storage=open_storage(str(path)))
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=trials)


def test_a_torn_journal_tail_is_cut_with_a_backup(tmp_path, caplog):
    from mvlab.study.storage import open_storage

    path = tmp_path / "optuna.journal"
    _tiny_journal(path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])  # the last record cut mid-line
    with caplog.at_level(logging.WARNING, logger="mvlab.study.storage"):
        study = optuna.load_study(study_name="j", storage=open_storage(str(path)))
    assert "its last record was cut off" in caplog.text
    (backup,) = tmp_path.glob("optuna.journal.torn-*")
    assert backup.read_bytes() == whole[:-25]
    assert path.read_bytes() == whole[:whole.rstrip(b"\n").rfind(b"\n") + 1]
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=2)  # appends cleanly
    fresh = optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path))))
    assert len(fresh.trials) == 5


def test_a_journal_the_old_code_appended_onto_is_repaired(tmp_path):
    """A torn record with the next append glued on, then more records: Optuna's reader fails
    on it forever; the repair keeps every whole record."""
    from mvlab.study.storage import open_storage

    path = tmp_path / "optuna.journal"
    _tiny_journal(path, trials=2)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]) + lines[-2][:30] + lines[-2] + lines[-1])
    with pytest.raises(Exception):  # noqa: B017 - what optuna raises varies by version
        optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path))))
    study = optuna.load_study(study_name="j", storage=open_storage(str(path)))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.fixture(scope="module")
def journal_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("journal") / "optuna.journal"
    _tiny_journal(path, trials=3)
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_journal_cut_anywhere_keeps_exactly_its_whole_records(journal_bytes, tmp_path, data):
    from mvlab.study.storage import repair_journal

    newlines = [i for i, byte in enumerate(journal_bytes) if byte == 0x0A]
    cut = data.draw(st.one_of(st.integers(min_value=1, max_value=len(journal_bytes)),
                              st.sampled_from(newlines)), label="cut")  # and just before one
    path = tmp_path / f"cut-{cut}.journal"
    path.write_bytes(journal_bytes[:cut])
    repair_journal(path)
    if cut < len(journal_bytes) and journal_bytes[cut:cut + 1] == b"\n":
        expected = journal_bytes[:cut + 1]  # only the newline was cut: the record is whole
    else:
        expected = journal_bytes[:journal_bytes.rfind(b"\n", 0, cut) + 1]
    assert path.read_bytes() == expected
    if path.read_bytes():
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path)))
        assert optuna.get_all_study_names(storage) == ["j"]
    for leftover in tmp_path.glob(f"cut-{cut}.journal.torn-*"):
        leftover.unlink()


@pytest.mark.parametrize("content", [b"hello\nworld\n", os.urandom(64) + b"\n", b"{}\n[1,2]\n"])
def test_a_file_that_is_not_a_journal_is_one_clear_error(tmp_path, content):
    from mvlab.study.storage import open_storage

    path = tmp_path / "x.journal"
    path.write_bytes(content)
    with pytest.raises(StudyError, match="not an Optuna journal"):
        open_storage(str(path))
    assert path.read_bytes() == content  # left as it was


def test_report_on_a_file_that_is_not_a_journal_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies" / "x").mkdir(parents=True)
    (tmp_path / "studies" / "x" / "optuna.journal").write_text("hello\nworld\n")
    assert cli_main(["report", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an Optuna journal" in err


@pytest.mark.slow
def test_after_a_torn_journal_the_next_sweep_and_the_report_work(tmp_path, cache_dir):
    """Sweeps as separate processes, like a crash: the cut record is the first sweep's last
    write, its trial's COMPLETE; the repaired journal shows that trial RUNNING under a dead
    process, so the next sweep fails it as stale and trains its point again."""
    path, _ = _study(tmp_path, cache_dir, name="torn")
    two = ["--set", "space.pattern=[last_half, attn_only]"]

    def mvlab(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mvlab.cli", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    first = mvlab("sweep", str(path), "--no-progress", "--n-trials", "1", *two)
    assert first.returncode == 0, first.stderr
    journal = tmp_path / "studies" / "torn" / "optuna.journal"
    data = journal.read_bytes()
    journal.write_bytes(data[:-15])  # the last record cut mid-line
    second = mvlab("sweep", str(path), "--no-progress", *two)
    assert second.returncode == 0, second.stderr
    notes = [line for line in second.stderr.splitlines() if "last record was cut off" in line]
    assert len(notes) == 1 and "optuna.journal.torn-" in notes[0]
    assert (journal.parent / notes[0].rsplit(" ", 1)[1]).read_bytes() == data[:-15]
    report = mvlab("report", str(path), *two, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    from mvlab.analysis import load_study

    table = load_study("torn", str(journal), mlflow=False)
    assert sorted(table["state"]) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert table.loc[table["state"] == "FAIL", "reason"].str.startswith("stale").all()


# --- 5. stale verdicts ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-5", ".nan", ".inf", "0", "10"])
def test_stale_after_s_must_be_finite_and_at_least_a_minute(tmp_path, cache_dir, value):
    from mvlab.study import load_study

    path, _ = _study(tmp_path, cache_dir)
    with pytest.raises(StudyError, match="stale_after_s"):
        load_study(str(path), [f"study.stale_after_s={value}"])
    assert load_study(str(path), ["study.stale_after_s=60"]).stale_after_s == 60


@pytest.mark.slow  # MLflow and a (faked) trial: about 10 s
def test_the_live_worker_survives_a_stale_verdict(tmp_path, cache_dir, monkeypatch, caplog,
                                                  tracking_uri):
    """Another host marks the running trial failed (a negative stale_after_s did it before
    validation; clock skew still can): the worker's next per-epoch write finds the trial
    finished, stops training, closes its MLflow run with what it had, and returns normally."""
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    import mvlab.training.trainer as train_module
    from mvlab.study import storage
    from mvlab.study.preparation import prepare
    from mvlab.study.types import SweepOptions
    from mvlab.study.worker import work
    from mvlab.training.config import TrainResult

    monkeypatch.chdir(tmp_path)
    _, config = _study(tmp_path, cache_dir, name="stale", tracking=tracking_uri)
    prepared, study = prepare(config, SweepOptions(progress=False))
    epochs_run = []

    def train(spec, data, cfg, on_epoch=None):  # the other host's verdict arrives mid-training
        (running,) = study.get_trials(states=(TrialState.RUNNING,))
        backend = study._storage
        backend.set_trial_user_attr(running._trial_id, storage.REASON_ATTR, "stale: no heartbeat")
        backend.set_trial_state_values(running._trial_id, TrialState.FAIL)
        on_epoch(0, {"train_loss": 1.0, "heldout_top1": 12.5})
        epochs_run.append(0)  # never reached: the write above stops the run
        return TrainResult(status="ok")

    monkeypatch.setattr(train_module, "train", train)
    with caplog.at_level(logging.WARNING, logger="mvlab.study.trial"):
        assert work(prepared) == 1
    assert epochs_run == []
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs["reason"] == "stale: no heartbeat"
    assert "was ended by another worker" in caplog.text
    run = MlflowClient(prepared.target.uri).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and "another worker" in run.data.tags["fail_reason"]
    assert run.data.metrics["heldout_top1"] == 12.5  # what it had is kept


# --- 6. output paths ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--out", "{file}"], "is a file, not a folder"),
    (["--json", "{file}/result.json"], "is a file, not a folder"),
    (["--json", "{dir}"], "is a folder; give a file name"),
])
def test_train_output_paths_are_checked_before_training(tmp_path, capsys, monkeypatch, args,
                                                        says):
    import mvlab.training.trainer as train_module

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("trained"))
    argv = ["train", "tiny", "--quiet", *[a.format(file=afile, dir=tmp_path) for a in args]]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err


def test_bench_out_under_a_file_is_refused_before_measuring(tmp_path, capsys, monkeypatch):
    import mvlab.training.bench as bench_module

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(bench_module, "run_benchmarks", lambda *a, **k: pytest.fail("measured"))
    assert cli_main(["bench", "tiny", "--out", str(afile / "csv")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_output_checks_accept_paths_still_to_be_made(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        safety.check_output_file(tmp_path / "afile" / "deeper" / "x.json", "--json")
    assert safety.check_output_file(tmp_path / "new" / "x.json", "--json")
    assert safety.check_output_dir(tmp_path / "new" / "deeper", "--out")
    assert not (tmp_path / "new").exists()  # checking creates nothing


# --- hostile-input battery findings (results/hostile_inputs/README.md) -------------------------
def _one_error(err: str) -> str:
    """The one error line of a command's stderr (warnings about the study may come before it)."""
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("option, value, says", [
    ("--batch-size", "1000000000", "--batch-size 1000000000: must be in 1..65,536"),  # B28
    ("--img-size", "100000", "--img-size 100000: must be in 8..4096 pixels"),  # B29
    ("--steps", "1000000000", "--steps 1000000000: must be in 1..100,000"),  # B30
    ("--img-size", "7", "--img-size 7: must be in 8..4096 pixels"),  # S23: what show refuses
    ("--num-classes", "-5", "--num-classes -5: must be in 0..1,000,000"),  # S12
    ("--threads", "0", "--threads 0: must be in 1..4,096"),  # S22
])
def test_bench_sizes_have_the_study_limits_and_fail_before_measuring(capsys, monkeypatch,
                                                                     option, value, says):
    import mvlab.training.bench as bench_module

    monkeypatch.setattr(bench_module, "run_benchmarks", lambda *a, **k: pytest.fail("measured"))
    assert cli_main(["bench", "tiny", "--device", "cpu", "--no-save", option, value]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.splitlines()) == 1


def test_bench_and_show_share_one_table_of_limits():
    from mvlab.commands.show import check_sizes
    from mvlab.study import schema
    from mvlab.training import config

    assert schema.BENCH_LIMITS is config.BENCH_LIMITS  # one table, imported, not restated
    for img, classes in ((7, 10), (4097, 10), (224, -1), (224, 1_000_001)):
        with pytest.raises(UserError):
            check_sizes(img, classes)
    check_sizes(8, 0)


def test_a_batch_whose_input_cannot_fit_is_one_line_before_allocating(monkeypatch):
    import mvlab.training.bench as bench_module

    monkeypatch.setattr(bench_module, "_available_bytes", lambda device: 2**30)
    # 64 x 3 x 1024 x 1024 x 4 bytes = 768 MiB fits in 1 GiB; 128 of them do not.
    with pytest.raises(UserError, match=r"input batch alone is 1\.5 GiB, above the 1\.0 GiB free "
                                        r"on cpu; lower --batch-size or --img-size"):
        bench_module.measure_throughput("tiny", batch_size=128, img_size=1024, device="cpu",
                                        warmup=0, steps=1, repeats=1, complexity=False)


def test_the_cpu_allocators_failure_counts_as_out_of_memory():
    from mvlab.training.bench import _out_of_memory

    assert _out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. "
                                       "DefaultCPUAllocator: can't allocate memory: you tried to "
                                       "allocate 3072000000000 bytes. Error code 12"))
    assert not _out_of_memory(RuntimeError("shape mismatch"))


def test_an_unknown_optimizer_fails_check_without_torch():  # V57, V63
    from mvlab.training.config import OPTIMIZERS, TrainConfig, TrainConfigError

    with pytest.raises(TrainConfigError, match=r"train.optimizer='bogus' is not a timm optimizer.*"
                                               r"adamw.*lamb.*sgd"):
        TrainConfig(optimizer="bogus")
    TrainConfig(optimizer="LAMB")
    import timm.optim

    # The torch-free list is timm's registry; when timm changes, update OPTIMIZERS.
    assert OPTIMIZERS == set(timm.optim.list_optimizers())


@pytest.mark.parametrize("url", ["ftp://host/x", "http://host/x", "mongodb://h/db"])
def test_a_storage_url_of_no_database_is_refused_by_check_and_by_the_sweep(tmp_path, cache_dir,
                                                                          capsys, url):  # V42, V62
    from mvlab.study.storage import check_storage_folder, open_storage

    path, _ = _study(tmp_path, cache_dir)
    assert cli_main(["sweep", str(path), "--check", "--storage", url]) == 2
    err = _one_error(capsys.readouterr().err)
    assert "use journal:PATH" in err and "sqlite:///PATH" in err
    for check in (check_storage_folder, open_storage):  # the sweep's preparation, its opening
        with pytest.raises(StudyError, match="use journal:PATH, a file ending in .journal"):
            check(url)


def test_storage_urls_of_sqlalchemy_databases_pass_the_scheme_check():
    from mvlab.study.locations import check_storage_url

    for url in ("postgresql://u@h/db", "postgresql+psycopg2://u@h/db", "mysql://u@h/db",
                "sqlite:///x.db", "journal:x", "x.journal"):
        check_storage_url(url)


def test_check_finds_an_mlflow_server_that_does_not_answer(tmp_path, cache_dir, capsys):  # M25
    path, _ = _study(tmp_path, cache_dir)
    assert cli_main(["sweep", str(path), "--check", "--set", "tracking.uri=http://127.0.0.1:1"]) == 2
    err = _one_error(capsys.readouterr().err)
    assert "tracking.uri http://127.0.0.1:1: cannot connect" in err


def test_check_creates_nothing_and_finds_a_store_under_a_file(tmp_path, cache_dir, capsys):
    path, config = _study(tmp_path, cache_dir)
    assert cli_main(["sweep", str(path), "--check"]) == 0
    assert not config.workdir.exists()
    (tmp_path / "afile").write_text("x")
    assert cli_main(["sweep", str(path), "--check", "--storage",
                     f"sqlite:///{tmp_path}/afile/x.db"]) == 2
    assert "cannot create the folder" in _one_error(capsys.readouterr().err)


@pytest.fixture()
def not_mlflow_server():
    """A web server that answers every request 404 with an HTML page (any other service)."""
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_web_server_that_is_not_mlflow_is_one_line(not_mlflow_server, tmp_path, cache_dir,
                                                     capsys):  # M27
    from mvlab.study.tracking import check_reachable, prepare_tracking

    host = not_mlflow_server.removeprefix("http://")
    uri = f"http://me:tok3n@{host}"
    says = (f"tracking.uri http://me:***@{host}: the server there is not an MLflow tracking "
            f"server (HTTP 404 on /api/2.0/mlflow/experiments/get-by-name)")
    with pytest.raises(StudyError) as info:
        check_reachable(uri)
    assert str(info.value).startswith(says)
    with pytest.raises(StudyError) as info:  # MLflow's client itself, past the probe
        prepare_tracking(uri, "exp", None)
    assert str(info.value).startswith(says) and "\n" not in str(info.value)
    path, _ = _study(tmp_path, cache_dir)
    assert cli_main(["sweep", str(path), "--check", "--set", f"tracking.uri={uri}"]) == 2
    err = capsys.readouterr().err
    assert "not an MLflow tracking server" in _one_error(err) and "tok3n" not in err


def test_dashboard_checks_the_storage_like_the_sweep(tmp_path, cache_dir, capsys, monkeypatch):
    import mvlab.commands.dashboard as dashboard  # M49

    monkeypatch.setattr(dashboard.os, "execv", lambda *a: pytest.fail("optuna-dashboard ran"))
    path, _ = _study(tmp_path, cache_dir)
    (tmp_path / "afile").write_text("x")
    for storage, says in ((f"sqlite:///{tmp_path}/afile/x.db", "cannot create the folder"),
                          ("ftp://host/x", "use journal:PATH"),
                          (f"sqlite:///{tmp_path}/none.db", "no Optuna storage at")):
        assert cli_main(["dashboard", str(path), "--storage", storage]) == 2
        assert says in _one_error(capsys.readouterr().err)
    assert not (tmp_path / "none.db").exists()
