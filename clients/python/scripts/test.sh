#!/usr/bin/env bash
# The Python client's checks, from a clean clone: a virtual environment in
# clients/python/.venv (created when missing), the package and its test
# extras from PyPI, mypy --strict, then pytest against the real server
# binary ($SYNCGATE_BIN, default <repo>/target/debug/syncgate). The
# cross-client test runs the TypeScript client in Node (it builds clients/ts
# when its build is missing). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
.venv/bin/mypy --strict
SYNCGATE_BIN="${SYNCGATE_BIN:-$(cd ../.. && pwd)/target/debug/syncgate}"
export SYNCGATE_BIN
if [ ! -x "$SYNCGATE_BIN" ]; then
  echo "no syncgate binary at $SYNCGATE_BIN (run cargo build, or set SYNCGATE_BIN)" >&2
  exit 1
fi
.venv/bin/python -m pytest -q "$@"
