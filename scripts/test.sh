#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine (venv, package with its test extra, Debian's
# chromium + chromedriver for the browser test), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
bash scripts/install_browser.sh
exec .venv/bin/python -m pytest -q "$@"
