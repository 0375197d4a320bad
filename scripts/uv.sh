#!/usr/bin/env bash
# Run the project's pinned uv (scripts/uv-requirements.txt), installing it first into
# .tools/ with pip, hash-checked, when it is missing or another version. Arguments go to uv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$here/.tools"
want="$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' "$here/scripts/uv-requirements.txt")"
if [[ "$("$tools/bin/uv" --version 2>/dev/null)" != "uv $want"* ]]; then
    printf '[setup] installing uv %s (pinned, hash-checked) into %s\n' "$want" "$tools" >&2
    rm -rf "$tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check --require-hashes \
        -r "$here/scripts/uv-requirements.txt"
fi
# Never fetch a Python: the machine's python3 is the one the venv is built on.
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
exec "$tools/bin/uv" "$@"
