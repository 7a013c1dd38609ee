#!/usr/bin/env bash
# Rebuilds the web UI's bundle (crates/web/ui/dist, committed and embedded in the binary so
# that `cargo build` needs no node): npm ci, type check, esbuild. With `--check`, fails when the
# rebuilt bundle differs from the committed one (the build is deterministic).
set -euo pipefail
cd "$(dirname "$0")/../crates/web/ui"
npm ci --no-audit --no-fund --loglevel=error
npx tsc --noEmit -p .
npm run --silent build >/dev/null
if [ "${1:-}" = "--check" ]; then
  git diff --quiet -- dist || {
    git diff --stat -- dist >&2
    echo "web UI: the committed bundle (crates/web/ui/dist) is stale: run scripts/build-web-ui.sh and commit it" >&2
    exit 1
  }
fi
