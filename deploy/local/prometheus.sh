#!/usr/bin/env bash
# Debian's prometheus server for the metrics test (tests/test_metrics.py starts it on loopback with a scrape
# config of its own). Installs it with apt-get when it is missing and we are root; otherwise says what to install.
# apt-get does not start the service here (no init system); the test runs its own server and stops it.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then exit 0; fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "[prometheus] installing Debian's prometheus with apt-get (once)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
    >/tmp/metricfold-apt-prometheus.log 2>&1 \
    || { tail -n 20 /tmp/metricfold-apt-prometheus.log >&2; echo "[prometheus] error: apt-get could not install prometheus" >&2; exit 1; }
else
  echo "[prometheus] error: prometheus is not installed: run 'sudo apt-get install -y prometheus'" >&2
  exit 1
fi
