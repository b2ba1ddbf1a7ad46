#!/usr/bin/env bash
# The dashboard's browser tests (tests/browser) drive Debian's chromium with Playwright; `make test` runs them always
# (a skipped test proves nothing). This installs the Debian package when it is missing and apt-get is available.
# Playwright's own browser download (`playwright install`) is never used: it fetches from a CDN.
set -euo pipefail
CHROMIUM="${TESTBUY_CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no chromium at $CHROMIUM and no apt-get: install Chromium and set TESTBUY_CHROMIUM to its path" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
  else
    echo "chromium is not installed and this user is not root and has no sudo: install it (apt-get install -y chromium)" >&2
    exit 1
  fi
fi
echo "installing chromium (Debian package) for the browser tests" >&2
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
