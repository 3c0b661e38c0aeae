#!/usr/bin/env bash
# Run CI exactly as the CI machine does: a fresh clone of the committed HEAD, then .ci/run.
# A green run in a working tree can hide a missing install step or an uncommitted file.
set -euo pipefail
repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
work="$(mktemp -d)"
git clone -q "$repo" "$work/fresh"
cd "$work/fresh"
CI=true bash .ci/run
