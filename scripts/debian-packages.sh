#!/usr/bin/env bash
# Installs the Debian packages a target needs, only those missing. Usage: scripts/debian-packages.sh smoke|test
#   smoke: compilers, CMake and Ninja for llama.cpp, venv, bubblewrap + prlimit (the code task's sandbox)
#   test:  the above, plus PostgreSQL (MLflow server tests), Chromium (dashboard tests), procps (pgrep),
#          shellcheck, Slurm and munge (deploy/slurm runs under a real slurmctld/slurmd), acl (setfacl)
set -euo pipefail
packages=(python3-venv build-essential cmake ninja-build git bubblewrap util-linux)
if [[ "${1:-smoke}" == "test" ]]; then
  packages+=(procps postgresql chromium chromium-driver shellcheck slurm-wlm munge acl)
fi
need=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
((${#need[@]})) || exit 0
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "missing Debian packages: ${need[*]}; install them with: apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${need[@]}"
