"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving dataset repositories from a local directory, so that
`data: hub` runs the real hub code path of `datasets` and `huggingface_hub` (revision resolution, file listing,
downloads into the HF cache) with `HF_ENDPOINT` pointed at it.

Each repository `<root>/<owner>/<name>/` exists at exactly one commit, the one its task pins (what the test
passes as `revisions`); any other revision is a 404 with `X-Error-Code: RevisionNotFound`, as the hub answers
(huggingface_hub `hf_raise_for_status` reads that header), and an unknown repository a 404 with
`RepositoryNotFound`. Routes, as `huggingface_hub` 2.x calls them:
- `GET /api/datasets/{repo}/revision/{rev}`: the repository's info (`sha`, `siblings`);
- `GET /api/datasets/{repo}/tree/{rev}[/{path}]`: the file listing (`recursive=true` for the whole tree);
- `POST /api/datasets/{repo}/paths-info/{rev}`: entries for the given paths;
- `HEAD|GET /datasets/{repo}/resolve/{rev}/{path}`: a file, with `X-Repo-Commit` and `ETag`, and byte ranges.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


class HubStub:
    """Context manager: the stub hub on a free port; `url` is what HF_ENDPOINT should be."""

    def __init__(self, root: Path, revisions: dict[str, str]) -> None:
        self.root, self.revisions = root, revisions
        self.requests: list[str] = []
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def files(self, repo: str) -> list[str]:
        base = self.root / repo
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def _entry(base: Path, path: str) -> dict[str, Any]:
    full = base / path
    if full.is_dir():
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
    data = full.read_bytes()
    return {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path}


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _route(self) -> tuple[str, str, str, str] | None:
        """(kind, repo, revision, path) of a request, or None after answering a 404 for it."""
        url = urlparse(self.path)
        with self.hub_lock:
            self.hub.requests.append(f"{self.command} {url.path}")
        for kind, pattern in (
            ("info", r"^/api/datasets/([^/]+/[^/]+)/revision/([^/]+)$"),
            ("tree", r"^/api/datasets/([^/]+/[^/]+)/tree/([^/]+)/?(.*)$"),
            ("paths", r"^/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)$"),
            ("file", r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$"),
        ):
            m = re.match(pattern, url.path)
            if m:
                repo, rev, path = m.group(1), unquote(m.group(2)), unquote(m.group(3) if m.lastindex == 3 else "")
                if not (self.hub.root / repo).is_dir():
                    self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepositoryNotFound"})
                    return None
                if rev not in (self.hub.revisions.get(repo), "main"):
                    self._json(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
                    return None
                return kind, repo, rev, path
        self._json(404, {"error": f"no route {url.path}"})
        return None

    hub_lock = threading.Lock()

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        route = self._route()
        if route is None:
            return
        kind, repo, _rev, path = route
        base, sha = self.hub.root / repo, self.hub.revisions.get(repo, "0" * 40)
        if kind == "info":
            siblings = [{"rfilename": f} for f in self.hub.files(repo)]
            self._json(200, {"id": repo, "sha": sha, "siblings": siblings, "private": False, "disabled": False,
                             "gated": False, "tags": [], "downloads": 0, "likes": 0})  # fmt: skip
        elif kind == "tree":
            recursive = parse_qs(urlparse(self.path).query).get("recursive", ["false"])[0] == "true"
            start = base / path
            if not start.exists():
                self._json(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})
                return
            items = start.rglob("*") if recursive else start.iterdir()
            self._json(200, [_entry(base, str(p.relative_to(base))) for p in sorted(items)])
        elif kind == "paths":
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            paths = form.get("paths", [])
            if not paths and self.headers.get("Content-Type", "").startswith("application/json"):
                paths = json.loads(form or "{}").get("paths", [])
            self._json(200, [_entry(base, p) for p in paths if (base / p).exists()])
        else:
            self._file(base / path, sha)

    def _file(self, full: Path, sha: str) -> None:
        if not full.is_file():
            self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        data = full.read_bytes()
        status, body = 200, data
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match:
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) else len(data) - 1
            status, body = 206, data[first : last + 1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", sha)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{first + len(body) - 1}/{len(data)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
