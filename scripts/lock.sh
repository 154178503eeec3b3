#!/usr/bin/env bash
# Regenerates the hash-pinned locks from constraints.txt (the versions) and pyproject.toml (what is needed):
#   requirements.lock           every third-party package `make install` installs, each with its files' sha256
#   scripts/llama-cpp.lock      llama-cpp-python's source archive (built by scripts/install-llama-cpp.sh)
#   scripts/build-tools.lock    what that build needs, installed first so that it runs beside the main install
# Usage, after changing a pin in constraints.txt or a dependency in pyproject.toml:  scripts/lock.sh
# It fetches uv (pinned) into a throwaway virtualenv; the hashes come from PyPI's metadata of exactly the pinned
# versions. Review the diff: a changed hash for an unchanged version means the artifact on PyPI changed.
set -euo pipefail
cd "$(dirname "$0")/.."
uv_version=0.13.8
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/python" -m pip install --quiet "uv==$uv_version"
common=(--constraint constraints.txt --generate-hashes --python-version 3.11
    --python-platform x86_64-unknown-linux-gnu --no-progress --quiet)
"$tools/bin/uv" pip compile pyproject.toml scripts/build-tools.in --extra embedded --extra dev \
    --no-emit-package llama-cpp-python "${common[@]}" --output-file requirements.lock
echo llama-cpp-python | "$tools/bin/uv" pip compile - --no-deps "${common[@]}" --output-file scripts/llama-cpp.lock
"$tools/bin/uv" pip compile scripts/build-tools.in "${common[@]}" --output-file scripts/build-tools.lock
echo "requirements.lock, scripts/llama-cpp.lock and scripts/build-tools.lock written from constraints.txt"
