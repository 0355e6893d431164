#!/usr/bin/env bash
# The wheels a sweep needs on the device machine that its image lacks (optuna, mlflow and what
# they pull in), for Python 3.12 on x86-64, into .whl/ (gitignored; carry it:
# /work/.library/device/README.md). The image has torch, triton, timm, numpy, pandas, scipy,
# matplotlib, pyyaml, sklearn, pyarrow, tqdm, ...; NEEDED lists what it lacked on 2026-12-04.
#   bash scripts/gpu_wheels.sh          # about 36 MB
set -euo pipefail
VERSIONS="mlflow==3.17.2 optuna==5.1.0"
NEEDED="alembic annotated_types blinker cachetools colorlog cryptography cffi pycparser
databricks_sdk docker fastapi flask flask_cors gitdb gitpython google_auth graphene graphql_core
graphql_relay gunicorn huey itsdangerous importlib_metadata mako mlflow mlflow_skinny
mlflow_tracing opentelemetry_api opentelemetry_proto opentelemetry_sdk
opentelemetry_semantic_conventions optuna prettytable pyasn1 pyasn1_modules pydantic
pydantic_core python_dotenv skops smmap sqlalchemy sqlparse starlette typing_inspection uvicorn
wcwidth protobuf"
all=$(mktemp -d)
trap 'rm -rf "$all"' EXIT
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 -d "$all" $VERSIONS
mkdir -p .whl
rm -f .whl/*.whl
for name in $NEEDED; do
  found=$(ls "$all" | grep -i "^${name}-[0-9]" || true)
  [ -n "$found" ] || { echo "gpu_wheels: no wheel for $name" >&2; exit 1; }
  cp "$all/$found" .whl/
done
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
