#!/usr/bin/env bash
# The headless browser the console's tests drive (SPEC §13): Debian's
# chromium and its WebDriver, chromium-driver, installed when missing.
# Under CI=true the browser tests fail rather than skip without them.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "CI: chromium and chromium-driver are missing and apt-get is not available" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver
