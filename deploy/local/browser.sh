#!/usr/bin/env bash
# Debian's chromium for the end-to-end browser test (driven by Playwright with executable_path).
# Installs it with apt-get when it is missing and we are root; otherwise says what to install.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "[browser] installing Debian's chromium with apt-get (once)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/tmp/metricfold-apt-chromium.log 2>&1 \
    || { tail -n 20 /tmp/metricfold-apt-chromium.log >&2; echo "[browser] error: apt-get could not install chromium" >&2; exit 1; }
else
  echo "[browser] error: chromium is not installed: run 'sudo apt-get install -y chromium'" >&2
  exit 1
fi
