#!/usr/bin/env bash
# Refresh uv.lock, the one list of every version the product and its tests install.
#   scripts/lock.sh                              after editing pyproject.toml: lock the change
#   scripts/lock.sh --upgrade                    every package to the newest its bounds allow
#   scripts/lock.sh --upgrade-package aiohttp    one package
# Then run scripts/test.sh and commit uv.lock together with whatever the new versions needed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$here/scripts/uv.sh" lock --project "$here" "$@"
