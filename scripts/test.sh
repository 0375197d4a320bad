#!/usr/bin/env bash
# The project's tests, in one command (the README's, and what CI runs): installs what is
# missing, then runs lint, types and the whole suite against a real Asterisk, Redis and
# SIPp (started by the tests themselves, stopped at the end). Extra arguments go to pytest.
# The suite runs in SPEAKING_TEST_LANES pytest-xdist lanes at once (tests/lane.py); pass
# `-n 0` to run it in this one process instead.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
scripts/setup.sh
# Lint and types run beside the suite (which mostly waits on real-time audio); their
# report is printed when both are done, and either failing fails the command.
checks_log="$(mktemp)"
(
    .venv/bin/ruff check worker tests bench scripts \
        && .venv/bin/ruff format --check worker tests bench scripts \
        && .venv/bin/mypy
) >"$checks_log" 2>&1 &
checks=$!
# pytest runs as a child that gets our SIGTERM/SIGINT (bash would otherwise die and leave
# it running); it turns them into a clean stop, and a guardian stops what it started.
set +e
.venv/bin/pytest -n "${SPEAKING_TEST_LANES:-3}" "$@" &
pid=$!
trap 'kill -TERM "$pid" "$checks" 2>/dev/null' TERM
trap 'kill -TERM "$pid" "$checks" 2>/dev/null' INT  # a background job ignores SIGINT
wait "$pid"
code=$?
while kill -0 "$pid" 2>/dev/null; do  # a signal interrupted wait: wait for pytest itself
    wait "$pid"
    code=$?
done
wait "$checks"
checks_code=$?
set -e
if [[ $code == 5 ]]; then
    echo "pytest collected no tests" >&2
fi
if [[ $checks_code != 0 ]]; then
    echo "lint or type check failed (ruff, ruff format, mypy):" >&2
    cat "$checks_log" >&2
fi
rm -f "$checks_log"
if [[ $code == 0 ]]; then
    exit $checks_code
fi
exit $code
