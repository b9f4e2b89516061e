#!/usr/bin/env bash
# Installs Debian's chromium + chromedriver for the browser test (tests/test_browser.py) when missing,
# and an emoji font so that the app's emotion emojis show in screenshots.
# Needs root (or sudo). Idempotent: does nothing when all three are already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
EMOJI_FONT=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" && -f "$EMOJI_FONT" ]]; then
    echo "install_browser: $("$CHROMIUM" --version 2>/dev/null) and chromedriver already installed"
    exit 0
fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "install_browser: error: needs root or sudo to run apt-get" >&2; exit 1; }
    SUDO=sudo
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-noto-color-emoji
echo "install_browser: installed $("$CHROMIUM" --version 2>/dev/null)"
