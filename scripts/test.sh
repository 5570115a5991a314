#!/usr/bin/env bash
# The README's test command, and exactly what CI runs: set up .venv with the test,
# docs and notebook extras, lint, run the whole test suite (which also executes every
# notebook), and build the documentation strictly.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,docs,notebooks]"
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
DOCS_PYTHON=.venv/bin/python bash scripts/build_docs.sh --site-dir "$(mktemp -d)"
