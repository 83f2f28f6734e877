#!/usr/bin/env bash
# Install Debian's chromium when it is missing, for tests/test_report.py (the report is rendered
# in headless Chromium). Does nothing when a Chromium is already on PATH; installs only as root
# (CI runs as root); otherwise prints the command to run and exits 0, so the caller goes on.
set -euo pipefail
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" != "0" ]; then
  echo "ensure_chromium: chromium is missing; tests/test_report.py needs it. Fix: sudo bash scripts/ensure_chromium.sh" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: chromium is missing and apt-get is not available. Fix: install Chromium with this system's package manager." >&2
  exit 0
fi
echo "ensure_chromium: installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
