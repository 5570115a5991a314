#!/usr/bin/env bash
# The README's test command, and exactly what CI runs: set up .venv with the test,
# docs and notebook extras, lint, build the documentation strictly (executing every
# notebook), then run the whole test suite, which checks the executed notebooks and
# opens the built site in headless Chromium.
#
# Run as root (as CI does), it first installs what the tests need from Debian when it is
# missing: chromium (the site test), graphviz (drawn graphs) and npm (the docs take
# MathJax and Mermaid from the npm registry). Otherwise a missing chromium makes the site
# test skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -eq 0 ]]; then
    missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v dot >/dev/null || missing+=(graphviz)
    command -v npm >/dev/null || missing+=(npm)
    if (( ${#missing[@]} )); then
        echo "installing from Debian: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,docs,notebooks]"
.venv/bin/ruff check .

# The built site goes to a temporary folder, removed however this script ends. The docs
# build executes the notebooks; tests/test_notebooks.py then checks those executed copies
# instead of running every notebook a second time (scripts/run_notebooks.py).
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
DOCS_PYTHON=.venv/bin/python bash scripts/build_docs.sh --site-dir "$site"
MINIBAM_SITE_DIR="$site" .venv/bin/python -m pytest "$@"

# The plain path (minibam/ops without minibam/backends' fast kernels) must pass too: the
# core tests once more with MINIBAM_FAST=0 (docs/architecture.md, "Two paths").
core=(tensor elementwise activation attention conv norm pool pool_cbam reduce shape linalg loss
      gradcheck layers module bam cbam manual optim backends backends_conv)
MINIBAM_FAST=0 .venv/bin/python -m pytest -q $(printf "tests/test_%s.py " "${core[@]}") "$@"
