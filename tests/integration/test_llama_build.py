"""The installed llama.cpp is the portable build: no AMX or AVX-512 code, and it answers a completion here.

A build with native CPU flags on a CPU that advertises AMX inside a VM that does not enable it dies with a general
protection fault in `ggml_backend_amx_mul_mat` at the first decode; `scripts/install-llama-cpp.sh` builds for
AVX2. These tests check the library that is installed, on the machine it was installed on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_model

# AMX tile instructions and any use of the 512-bit zmm registers (AVX-512)
_NON_PORTABLE = re.compile(r"\b(ldtilecfg|sttilecfg|tilerelease|tileloadd|tdpb\w*)\b|%zmm\d+")


def _libraries() -> list[Path]:
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs the `embedded` extra")
    libs = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml*.so*"))
    assert libs, "llama_cpp ships no libggml libraries"
    return libs


def test_installed_llama_cpp_has_no_amx_or_avx512_code() -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    found = {}
    for lib in _libraries():
        text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True).stdout
        hits = sorted({m.group(0) for m in _NON_PORTABLE.finditer(text)})
        if hits:
            found[lib.name] = hits[:5]
    assert not found, f"non-portable instructions in the installed llama.cpp (rebuild: make install): {found}"


def test_installed_llama_cpp_answers_a_completion() -> None:
    """Load SmolLM2 in a child process (a fault there must fail this test, not kill pytest) and generate."""
    _libraries()
    from grid.model_files import gguf_path
    from trainables.registry import load_registry

    model = gguf_path(load_registry().get("smollm2"))
    code = (
        "import sys, llama_cpp\n"
        "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False, seed=0)\n"
        "out = llm.create_completion('The capital of France is', max_tokens=8, temperature=0)\n"
        "print(out['usage']['completion_tokens'], repr(out['choices'][0]['text']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"llama.cpp died with {proc.returncode}: {proc.stderr[-2000:]}"
    tokens, text = proc.stdout.strip().split(" ", 1)
    assert int(tokens) > 0 and text.strip("'\" ")


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
