#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the sample apps' browser test
# (apps/test/browser.test.ts drives /usr/bin/chromium with playwright-core), when it is missing.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: /usr/bin/chromium is missing and apt-get is not available" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
/usr/bin/chromium --version
