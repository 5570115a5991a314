#!/usr/bin/env bash
# The README's test command, and exactly what CI runs: set up .venv with the test,
# docs and notebook extras, lint, then, side by side on two cores, build the documentation
# strictly (executing every notebook) and run the whole test suite, which checks the
# executed notebooks and opens the built site in headless Chromium, and the core tests once
# more on the plain path. Extra arguments go to every pytest run (e.g. -x).
#
# Run as root (as CI does), it first installs what the tests need from Debian when it is
# missing: chromium (the site test), graphviz (drawn graphs) and npm (the docs take
# MathJax and Mermaid from the npm registry); apt works while pip fills .venv. Otherwise a
# missing chromium makes the site test skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
docs_lane=
finish() {
    if [[ -n "$docs_lane" ]] && kill -0 "$docs_lane" 2>/dev/null; then
        kill -- "-$docs_lane" 2>/dev/null || true  # the lane's whole process group
        wait "$docs_lane" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap finish EXIT

apt_job=
if [[ $(id -u) -eq 0 ]]; then
    missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v dot >/dev/null || missing+=(graphviz)
    command -v npm >/dev/null || missing+=(npm)
    if (( ${#missing[@]} )); then
        echo "installing from Debian: ${missing[*]}"
        (
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        ) >"$tmp/apt.log" 2>&1 &
        apt_job=$!
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,docs,notebooks]"
.venv/bin/ruff check .
if [[ -n "$apt_job" ]]; then
    # The notebooks draw with graphviz's dot when it is there: it must be, before they run.
    wait "$apt_job" || { cat "$tmp/apt.log"; echo "apt-get failed" >&2; exit 1; }
    cat "$tmp/apt.log"
fi
echo "set up and linted in $SECONDS s"

# The rest runs in two lanes. Notebook 6 trains nine networks and takes longer than the
# rest of the docs build together, so it starts at once on a core of its own; the docs
# build follows it (reusing every executed copy: scripts/run_notebooks.py), then the tests
# of the built site and the executed notebooks. The other lane runs the other notebooks,
# then every other test on two pytest-xdist workers, then the core tests once more on the
# plain path, MINIBAM_FAST=0 (minibam/ops without minibam/backends' fast kernels:
# docs/architecture.md, "Two paths"). Those tests run at a lower priority (nice 5) and take
# the time that notebook 6 and the site checks leave. --dist loadscope gives each test
# module to one worker, so a module fixture runs once (the class test_grader_class grades).
site_tests=(tests/test_docs_site.py tests/test_notebooks.py tests/test_prose_numbers.py)
long=notebooks/06_cluttered_digits.ipynb
others=()
for notebook in notebooks/*.ipynb; do
    [[ $notebook == "$long" ]] || others+=("$notebook")
done
core=(tensor elementwise activation attention conv norm pool pool_cbam reduce shape linalg loss
      gradcheck layers module bam cbam manual optim backends backends_conv)

set -m  # the lane gets a process group of its own, which finish() can end as a whole
(
    .venv/bin/python scripts/run_notebooks.py --jobs 1 "$long"
    DOCS_PYTHON=.venv/bin/python bash scripts/build_docs.sh --site-dir "$tmp/site"
    MINIBAM_SITE_DIR="$tmp/site" .venv/bin/python -m pytest "${site_tests[@]}" "$@"
    echo "notebook 6, the docs and the site tests done at $SECONDS s"
) >"$tmp/docs-lane.log" 2>&1 &
docs_lane=$!
set +m

.venv/bin/python scripts/run_notebooks.py --jobs 1 "${others[@]}"
xdist=(-n 2 --dist loadscope)
nice -n 5 .venv/bin/python -m pytest "${xdist[@]}" "${site_tests[@]/#/--ignore=}" "$@"
MINIBAM_FAST=0 nice -n 5 .venv/bin/python -m pytest "${xdist[@]}" -q \
    $(printf "tests/test_%s.py " "${core[@]}") "$@"

echo "--- notebook 6, the docs build and the tests of the site:"
status=0
wait "$docs_lane" || status=$?
docs_lane=
cat "$tmp/docs-lane.log"
echo "all done in $SECONDS s"
exit "$status"
