#!/usr/bin/env bash
# Installs (when missing) and exports the real peers the tests talk to. Sourced by
# scripts/test.sh; source it yourself to run one test by hand with the same peers:
#   source scripts/peers.sh && install_peers && cargo test -p waylay-layers --test NAME
#
# Everything here can be rebuilt from the package registries: Debian packages by apt-get, and
# mitmproxy 12.3.1 from PyPI in a venv under WAYLAY_PEERS_DIR (default ~/.cache/waylay-peers).

WAYLAY_PEERS_DIR="${WAYLAY_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/waylay-peers}"
MITMPROXY_VERSION=12.3.1

# Debian packages: command or file that proves it is installed, then the package name.
_debian_peers=(
  "curl curl"
  "openssl openssl"
  "tinyproxy tinyproxy"
  "danted dante-server"
  "haproxy haproxy"
  "nft nftables"
  "ip iproute2"
  "h2load nghttp2-client"
  "/usr/include/python3.11/Python.h libpython3.11-dev"
)

_have() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
  esac
}

install_debian_peers() {
  local missing=() entry probe pkg
  for entry in "${_debian_peers[@]}"; do
    probe=${entry%% *}
    pkg=${entry#* }
    _have "$probe" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "peers: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The daemons are started by the tests themselves, on ephemeral ports; never as services.
  export PATH="$PATH:/usr/sbin:/sbin"
}

# A Python >= 3.12 for mitmproxy 12 (pyenv's, or the system's when new enough).
_python312() {
  local candidate
  for candidate in python3.13 python3.12 "$HOME/.pyenv/versions/3.12.1/bin/python3" \
    "$HOME/.pyenv/versions/3.13.0/bin/python3"; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  for candidate in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

install_mitmproxy() {
  local venv="$WAYLAY_PEERS_DIR/mitmproxy" py
  if ! "$venv/bin/python" -c "import mitmproxy.io, mitmproxy.flowfilter, mitmproxy.version as v; assert v.VERSION == '$MITMPROXY_VERSION'" 2>/dev/null; then
    py=$(_python312) || { echo "peers: no Python >= 3.12 for mitmproxy" >&2; return 1; }
    echo "peers: installing mitmproxy $MITMPROXY_VERSION with $py"
    rm -rf "$venv"
    mkdir -p "$WAYLAY_PEERS_DIR"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "mitmproxy==$MITMPROXY_VERSION"
  fi
  export WAYLAY_MITMPROXY_PY="$venv/bin/python"
  export WAYLAY_MITMDUMP="$venv/bin/mitmdump"
}

install_peers() {
  install_debian_peers
  install_mitmproxy
  # The python feature embeds Debian's libpython3.11 (python3.11-dev), not pyenv's.
  export PYO3_PYTHON="${PYO3_PYTHON:-/usr/bin/python3.11}"
}
