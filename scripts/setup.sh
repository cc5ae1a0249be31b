#!/usr/bin/env bash
# Installs everything hf_mrl, its tests and its demo need on a fresh Debian machine:
# the data packages (as root, through apt), the CPU torch wheel FIRST (a bare `torch`
# requirement would otherwise pull a multi-GB CUDA build), then the package with its dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES="dataset-fashion-mnist wordnet-base fonts-noto-color-emoji unicode-cldr-core"
missing=""
for package in $DEBIAN_PACKAGES; do
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
  else
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
  fi
fi

PIP="python3 -m pip"
python3 -c "import torch" 2>/dev/null || $PIP install -q torch==2.13.0
$PIP install -q -e ".[dev]"
