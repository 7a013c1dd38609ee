#!/usr/bin/env bash
# The README's test command: installs the real peers the tests use when they are missing
# (curl, openssl, tinyproxy, dante-server, haproxy, nftables, libpython, chromium, mitmproxy and
# Playwright from PyPI in venvs), then runs the whole suite, the `python` feature included.
#
# Tests that need a peer find it through the environment set here (WAYLAY_MITMPROXY_PY, PATH);
# under CI=true a missing peer fails the test instead of skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/peers.sh
source scripts/peers.sh
install_peers

# The web UI's committed bundle must be what its sources build (the build is deterministic);
# skipped where node is not installed (cargo builds from the committed bundle anyway).
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  bash scripts/build-web-ui.sh --check
fi

cargo test --workspace --all-features "$@"
