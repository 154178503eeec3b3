#!/usr/bin/env bash
# Builds llama-cpp-python from source for any x86-64 CPU with AVX2, whatever the build machine advertises,
# and installs it into the venv. Usage: scripts/install-llama-cpp.sh VENV
#
# Why not pip's default build: it compiles with -march=native, and on a CPU that advertises AMX inside a VM that
# does not enable it, llama.cpp's AMX kernel dies with a general protection fault at the first decode. pip's wheel
# cache would then hand that wheel to every later install, so the build never reads or writes the cache.
# The venv records the version and flags it was built with; the build runs again only when either changes.
set -euo pipefail
venv=${1:?usage: $0 VENV}
here=$(cd "$(dirname "$0")/.." && pwd)
lock=$here/scripts/llama-cpp.lock  # the source archive's version and sha256 (scripts/lock.sh)
version=$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' "$lock")
[[ -n "$version" ]] || { echo "llama-cpp-python is not pinned in $lock" >&2; exit 1; }

flags=(
  -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF
  -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
  -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
  -DLLAMA_CURL=OFF
  # no multimodal library (mtmd: CLIP and its vision encoders, 54 of the ~350 source files): llama_cpp imports it only
  # for image chat handlers (llama_chat_format.py, lazily), and every model here is text only
  -DLLAVA_BUILD=OFF
)
marker="$venv/.llama-cpp-build"
want="llama_cpp_python==$version ${flags[*]}"
if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]] && "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  exit 0
fi
echo "building llama-cpp-python $version for x86-64 with AVX2 (portable; about 4-5 minutes on 2 cores)"
start=$SECONDS
# --no-build-isolation: scikit-build-core comes hash-checked from requirements.lock (installed first), and CMake and
# Ninja from Debian; an isolated build would fetch its build dependencies from PyPI unchecked.
CMAKE_ARGS="${flags[*]}" "$venv/bin/python" -m pip install --progress-bar off --no-cache-dir \
  --no-binary llama-cpp-python --force-reinstall --no-deps --no-build-isolation --require-hashes -r "$lock"
echo "$want" > "$marker"
echo "built llama-cpp-python in $((SECONDS - start)) s"
