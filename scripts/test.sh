#!/usr/bin/env bash
# The project's tests, in one command (the README's, and what CI runs): installs what is
# missing, then runs lint, types and the whole suite against a real Asterisk, Redis and
# SIPp (started by the tests themselves, stopped at the end). Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
scripts/setup.sh
.venv/bin/ruff check worker tests bench scripts
.venv/bin/ruff format --check worker tests bench scripts
.venv/bin/mypy
# pytest runs as a child that gets our SIGTERM/SIGINT (bash would otherwise die and leave
# it running); it turns them into a clean stop, and a guardian stops what it started.
set +e
.venv/bin/pytest "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM
trap 'kill -TERM "$pid" 2>/dev/null' INT  # a background job ignores SIGINT
wait "$pid"
code=$?
while kill -0 "$pid" 2>/dev/null; do  # a signal interrupted wait: wait for pytest itself
    wait "$pid"
    code=$?
done
set -e
if [[ $code == 5 ]]; then
    echo "pytest collected no tests" >&2
fi
exit $code
