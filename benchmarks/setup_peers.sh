#!/usr/bin/env bash
# Install the peer tools benchmarks/tls_bench.py compares hcscan with. Idempotent: re-running
# changes nothing when everything is already in place.
#
#   sslyze 6.3.1  PyPI, in its own venv at .bench/sslyze-venv (it pins cryptography<47, which the
#                 project venv must not be forced to)
#   testssl       Debian package testssl.sh (installs /usr/bin/testssl)
#   nmap          Debian package nmap (hcscan itself needs it too)
#
# Usage: bash benchmarks/setup_peers.sh   (from anywhere; paths are relative to the repo root)
set -euo pipefail

SSLYZE_VERSION="6.3.1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.bench/sslyze-venv"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup_peers] %s\n' "$*"; }

apt_install() {
    # apt_install PACKAGE...: install Debian packages (needs root or sudo).
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            log "ERROR: need root (or sudo) to apt-get install $*"; return 1
        fi
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# --- sslyze -----------------------------------------------------------------------------------
have_sslyze() {
    [ -x "${VENV}/bin/python" ] &&
        [ "$("${VENV}/bin/python" -c 'import importlib.metadata as m; print(m.version("sslyze"))' 2>/dev/null)" = "${SSLYZE_VERSION}" ]
}

if have_sslyze; then
    log "sslyze ${SSLYZE_VERSION} already in ${VENV}"
else
    log "installing sslyze ${SSLYZE_VERSION} into ${VENV}"
    mkdir -p "${ROOT}/.bench"
    if [ ! -x "${VENV}/bin/python" ]; then
        "${PYTHON}" -m venv "${VENV}"
    fi
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check "sslyze==${SSLYZE_VERSION}"
    have_sslyze || { log "ERROR: sslyze ${SSLYZE_VERSION} not importable after install"; exit 1; }
fi
"${VENV}/bin/python" -m sslyze --help >/dev/null

# --- testssl ----------------------------------------------------------------------------------
if command -v testssl >/dev/null 2>&1 || [ -x /usr/bin/testssl ]; then
    log "testssl present: $(command -v testssl || echo /usr/bin/testssl)"
else
    log "installing Debian package testssl.sh"
    apt_install testssl.sh
    command -v testssl >/dev/null 2>&1 || { log "ERROR: testssl still missing after apt-get"; exit 1; }
fi

# --- nmap (hcscan's own dependency, also the bare-nmap baseline) ------------------------------
if command -v nmap >/dev/null 2>&1; then
    log "nmap present: $(nmap --version | head -n 1)"
else
    log "installing Debian package nmap"
    apt_install nmap
fi

log "done"
