#!/usr/bin/env bash
# The README's test command: installs the real peers the tests use when they are missing
# (curl, openssl, tinyproxy, dante-server, haproxy, nftables, libpython, mitmproxy from PyPI
# in a venv), then runs the whole suite, the `python` feature included.
#
# Tests that need a peer find it through the environment set here (WAYLAY_MITMPROXY_PY, PATH);
# under CI=true a missing peer fails the test instead of skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/peers.sh
source scripts/peers.sh
install_peers

cargo test --workspace --all-features "$@"
