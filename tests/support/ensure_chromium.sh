#!/usr/bin/env bash
# The console's browser test drives Debian's chromium through Playwright (Playwright's own
# browser download does not work behind a closed network). Install the package where this
# may (root with apt-get: CI, containers); elsewhere say how, and the test skips.
# Exit status: 0 when chromium is present afterwards, 1 when it is not.
set -uo pipefail
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: $CHROMIUM is missing; the console's browser test will be skipped" \
        "(install it with: sudo apt-get install chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
install() { timeout 900 apt-get install -y -q --no-install-recommends chromium >/dev/null; }
echo "installing Debian's chromium for the console's browser test" >&2
# a fresh machine may have no package lists yet
install 2>/dev/null || { timeout 300 apt-get update -q >/dev/null && install; }
[ -x "$CHROMIUM" ] || { echo "error: installing chromium failed" >&2; exit 1; }
