#!/usr/bin/env bash
# Install the headless browser the browser tests drive (tests/test_browser.py): Debian's
# chromium and chromium-driver. Idempotent: does nothing when /usr/bin/chromium already runs.
# Playwright's own browser download (`playwright install`) is not used: it needs a network
# that clusters and CI here do not have, while the distribution's package comes from the
# same mirror as every other system package.
#
# Never fails the caller: without root or apt-get it prints why and returns 0, and the
# browser tests then skip with a reason naming this script.
set -u

if command -v chromium >/dev/null 2>&1 && chromium --version >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install_browser] no apt-get: install Chromium yourself to run the browser tests" \
         "(pytest -m browser); they skip without it." >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "[install_browser] not root: run 'sudo apt-get install chromium chromium-driver'" \
             "to run the browser tests (pytest -m browser); they skip without it." >&2
        exit 0
    fi
else
    SUDO=""
fi
echo "[install_browser] installing Debian's chromium and chromium-driver ..." >&2
if $SUDO apt-get update -qq >/dev/null \
   && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        chromium chromium-driver >/dev/null; then
    echo "[install_browser] $(chromium --version 2>/dev/null)" >&2
else
    echo "[install_browser] apt-get could not install chromium; the browser tests will skip." >&2
fi
exit 0
