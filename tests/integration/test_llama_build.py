"""The installed llama-server is the portable build: no AMX or AVX-512 code, and it answers a completion here.

A build with native CPU flags on a CPU that advertises AMX inside a VM that does not enable it dies with a general
protection fault in `ggml_backend_amx_mul_mat` at the first decode; `scripts/install-llama-cpp.sh` builds for
AVX2. These tests check the binary that is installed, on the machine it was installed on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_model

# AMX tile instructions and any use of the 512-bit zmm registers (AVX-512)
_NON_PORTABLE = re.compile(r"\b(ldtilecfg|sttilecfg|tilerelease|tileloadd|tdpb\w*)\b|%zmm\d+")


def test_installed_llama_server_has_no_amx_or_avx512_code() -> None:
    from grid.embedded import llama_server

    objdump = shutil.which("objdump")
    assert objdump is not None, "objdump (binutils, part of build-essential) is not installed"
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(llama_server())], capture_output=True, text=True)
    assert text.returncode == 0 and len(text.stdout) > 1_000_000, text.stderr[-500:]
    hits = sorted({m.group(0) for m in _NON_PORTABLE.finditer(text.stdout)})
    assert not hits, f"non-portable instructions in the installed llama-server (rebuild: make install): {hits[:5]}"


def test_installed_llama_server_is_static_in_llama_cpp() -> None:
    """The binary needs no library of its build tree (a moved or cleaned build would break it)."""
    from grid.embedded import llama_server

    linked = subprocess.run(["ldd", str(llama_server())], capture_output=True, text=True).stdout
    assert "libllama" not in linked and "libggml" not in linked and "not found" not in linked, linked


def test_installed_llama_server_answers_a_completion(tmp_path: Path) -> None:
    """Serve SmolLM2 as `arb` does (a fault must fail this test, not kill pytest) and generate 8 tokens, greedy."""
    import httpx
    from servers import free_port

    from grid.embedded import _Server, _stop, _wait_ready, llama_server
    from grid.model_files import gguf_path
    from trainables.registry import load_registry

    port = free_port()
    model = gguf_path(load_registry().get("smollm2"))
    cmd = [str(llama_server()), "-m", str(model), "--port", str(port), "-c", "512", "-t", "2", "--no-webui"]
    server = _Server("smollm2", port, cmd, tmp_path / "server.log")
    server.start()
    try:
        _wait_ready(server, 60)  # raises with the log's tail if the server dies or stays silent
        answer = httpx.post(
            f"{server.url}/completions",
            json={"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
            timeout=120,
        ).json()
    finally:
        _stop(server)
    assert answer["usage"]["completion_tokens"] > 0 and answer["choices"][0]["text"].strip(), answer


@pytest.mark.parametrize("model", ["qwen-coder-0.5b", "qwen-coder-1.5b"])
def test_pinned_split_packages_join_into_the_registrys_sha256(model: str, tmp_path: Path) -> None:
    """The installed parts of each Qwen model join into exactly the file `grid/models.yaml` pins (size and full
    sha256), the check `arb` makes before serving it."""
    from grid.model_files import assemble_split, file_sha256
    from trainables.registry import load_registry

    split = load_registry().get(model).split_gguf
    assert split is not None
    path = assemble_split(model, split, tmp_path)
    assert path.stat().st_size == split.bytes and file_sha256(path) == split.sha256
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
