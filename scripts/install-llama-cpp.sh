#!/usr/bin/env bash
# Builds llama.cpp's own server, `llama-server`, for any x86-64 CPU with AVX2, whatever the build machine
# advertises, and installs it as VENV/bin/llama-server. Usage: scripts/install-llama-cpp.sh VENV
#
# Why llama.cpp's server and not llama-cpp-python's: the Python server holds one lock around every request
# (llama_cpp/server/app.py, llama_outer_lock), so it answers one call at a time; llama-server decodes several
# requests in one batch (`--parallel N` slots, continuous batching), which is what a trial's requests in flight need.
# The source is the llama.cpp that llama-cpp-python vendors, from its source archive pinned by sha256 in
# scripts/llama-cpp.lock: one hash-checked download, no git, no network at build time.
#
# Why not llama.cpp's default build: it compiles with -march=native, and on a CPU that advertises AMX inside a VM
# that does not enable it, llama.cpp's AMX kernel dies with a general protection fault at the first decode.
# The binary is static in llama.cpp's own libraries (only libc, libstdc++ and libgomp from the system), so it does
# not depend on where the build tree was. The venv records the version and flags it was built with; the build runs
# again only when either changes.
set -euo pipefail
venv=${1:?usage: $0 VENV}
here=$(cd "$(dirname "$0")/.." && pwd)
lock=$here/scripts/llama-cpp.lock  # the source archive's version and sha256 (scripts/lock.sh)
version=$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' "$lock")
[[ -n "$version" ]] || { echo "llama-cpp-python is not pinned in $lock" >&2; exit 1; }

flags=(
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF
  -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
  -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF
  # no web UI: arb only calls the API; the prebuilt UI would be fetched from Hugging Face at build time
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
)
binary="$venv/bin/llama-server"
marker="$venv/.llama-server-build"
want="llama.cpp of llama_cpp_python==$version ${flags[*]}"
if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$binary" ]] && "$binary" --version >/dev/null 2>&1; then
  exit 0
fi
for tool in cmake ninja c++; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run \`make debian-smoke\` (or apt-get install build-essential cmake ninja-build)" >&2; exit 1; }
done
echo "building llama.cpp's llama-server (from llama-cpp-python $version's source) for x86-64 with AVX2 (portable; about 4-5 minutes on 2 cores)"
start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# pip checks the archive against the lock's sha256 (hash-checking mode) and never builds it
"$venv/bin/python" -m pip download --progress-bar off --no-cache-dir --no-deps --no-binary :all: \
  --require-hashes -r "$lock" -d "$work" >/dev/null
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work" "llama_cpp_python-$version/vendor/llama.cpp"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
cmake -S "$src" -B "$work/build" -G Ninja "${flags[@]}" >"$work/configure.log" 2>&1 \
  || { tail -30 "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log" >&2; exit 1; }
install -m 755 "$work/build/bin/llama-server" "$binary"
echo "$want" > "$marker"
echo "built llama-server in $((SECONDS - start)) s"
