"""Every epoch's metrics of a study's trials, from its MLflow database, as CSV on stdout:
    python results/calibration/mlflow_epochs.py studies/<name>/mlflow.db > epochs.csv"""
import csv
import sqlite3
import sys

rows = sqlite3.connect(sys.argv[1]).execute(
    "select r.name, m.key, m.step, m.value from metrics m join runs r on r.run_uuid = m.run_uuid "
    "where r.name like 'trial %' order by r.name, m.step, m.key").fetchall()
table: dict[tuple[str, int], dict[str, float]] = {}
for run, key, step, value in rows:
    table.setdefault((run, step), {})[key] = value
keys = sorted({k for metrics in table.values() for k in metrics})
out = csv.writer(sys.stdout)
out.writerow(["trial", "mlflow_step", *keys])
for (run, step), metrics in sorted(table.items()):
    out.writerow([run, step, *(metrics.get(k, "") for k in keys)])
