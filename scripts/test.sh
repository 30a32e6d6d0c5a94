#!/usr/bin/env bash
# Every test of the project, as a new user runs it and as CI runs it:
# the Rust tests (unit, integration, property), then the TypeScript client's
# type-check, unit tests, tests against the real binary from Node, and tests
# in a real Chromium (Debian's package, installed here when missing), then
# the Python client's mypy --strict and pytest against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test
# The binary the TypeScript tests start is the one `cargo test` built for the
# integration tests (target/debug/syncgate). No `cargo build` here: without the
# dev-dependencies' features it would compile the server a second time.
test -x target/debug/syncgate || { echo "cargo test did not leave target/debug/syncgate" >&2; exit 1; }

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the browser tests"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

cd clients/ts
npm ci --no-audit --no-fund
npm run typecheck
npm run test:unit
npm run test:server
npm run test:browser
npm run test:pack

# The Python client (its own virtual environment, packages from PyPI).
cd ../python
scripts/test.sh
