"""Local stand-ins for the downloader's sources (127.0.0.1 only): an archive server and a tiny Hub.

Imported by the downloader tests and benchmark; it holds no tests itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Fault:
    """What to do to the next `times` matching GETs: cut the body after `after` bytes, or stall there."""

    after: int
    mode: str = "cut"          # "cut": close the connection; "stall": stop sending for `stall` seconds
    stall: float = 30.0
    times: int = 1


@dataclass
class Recorded:
    """One request the server saw."""

    method: str
    path: str
    range: str | None
    auth: str | None
    body_bytes: int = 0


class _Base(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 with request log, Range support and injectable faults."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: dict[str, Fault] = {}
        self.status: dict[str, int] = {}
        self.throttle: float = 0.0      # seconds to sleep per 16 KiB chunk (makes progress observable)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                owner._handle(self, head=True)

            def do_GET(self) -> None:
                owner._handle(self, head=False)

        self._server = _Base(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LocalServer:
        """Start serving on a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (stalled handlers wake up and exit)."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def gets(self, path_part: str = "") -> list[Recorded]:
        """GET requests whose path contains path_part."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and path_part in r.path]

    def body_bytes(self) -> int:
        """Total body bytes sent for all requests."""
        with self._lock:
            return sum(r.body_bytes for r in self.requests)

    # --- subclass hooks -------------------------------------------------------------------
    def route(self, handler: BaseHTTPRequestHandler, path: str) -> _Reply:
        """Return (status, headers, full body) for a path; subclasses implement it."""
        raise NotImplementedError

    # --- plumbing -------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        record = Recorded("HEAD" if head else "GET", handler.path, handler.headers.get("Range"),
                          handler.headers.get("Authorization"))
        with self._lock:
            self.requests.append(record)
        forced = self.status.get(path)
        if forced:
            status, headers, body = forced, {"X-Error-Message": "forced"}, b"error"
        else:
            status, headers, body = self.route(handler, path)
        start, end = 0, len(body)
        rng = handler.headers.get("Range")
        if_range = handler.headers.get("If-Range")
        if if_range and if_range != headers.get("ETag"):
            rng = None  # the file changed since the client's partial copy: send it whole
        if status == 200 and rng and (m := _RANGE.fullmatch(rng.strip())):
            start = int(m.group(1))
            end = int(m.group(2)) + 1 if m.group(2) else len(body)
            if start >= len(body):
                status, headers, body = 416, {"Content-Range": f"bytes */{len(body)}"}, b""
                start, end = 0, 0
            else:
                status = 206
                headers = dict(headers, **{"Content-Range": f"bytes {start}-{end - 1}/{len(body)}"})
        payload = body[start:end]
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if head:
            return
        fault = None
        with self._lock:
            candidate = self.faults.get(path)
            if candidate and candidate.times > 0 and status in (200, 206) and candidate.after < len(payload):
                candidate.times -= 1
                fault = candidate
        limit = fault.after if fault else len(payload)
        sent = 0
        try:
            while sent < limit:
                chunk = payload[sent:min(limit, sent + 16384)]
                handler.wfile.write(chunk)
                handler.wfile.flush()
                sent += len(chunk)
                record.body_bytes = sent
                if self.throttle:
                    time.sleep(self.throttle)
            if fault and fault.mode == "stall":
                self._closing.wait(fault.stall)
        except OSError:
            pass
        if fault:
            handler.close_connection = True


class ArchiveServer(LocalServer):
    """Serves in-memory files by path (archives), with ETag for If-Range."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        super().__init__()
        self.files: dict[str, bytes] = dict(files or {})

    def route(self, handler: BaseHTTPRequestHandler, path: str) -> _Reply:
        """Serve self.files[path] or 404."""
        body = self.files.get(path)
        if body is None:
            return 404, {}, b"not found"
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        return 200, {"ETag": etag, "Content-Type": "application/octet-stream"}, body


@dataclass
class HubRepo:
    """One repo the fake Hub serves: a commit and its files."""

    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    refs: dict[str, str] = field(default_factory=lambda: {"main": "0123456789abcdef0123456789abcdef01234567"})
    token: str | None = None
    corrupt: set[str] = field(default_factory=set)   # files served with flipped bytes


def _is_lfs(name: str) -> bool:
    return name.endswith((".safetensors", ".bin"))


class FakeHub(LocalServer):
    """The Hub endpoints snapshot_download uses: model info, tree listing, resolve (HEAD/GET with Range)."""

    def __init__(self, repos: dict[str, HubRepo]) -> None:
        super().__init__()
        self.repos = repos

    def _auth(self, handler: BaseHTTPRequestHandler, repo: HubRepo) -> _Reply | None:
        if repo.token is None:
            return None
        got = handler.headers.get("Authorization")
        if got == f"Bearer {repo.token}":
            return None
        if got:
            return 401, {"X-Error-Message": "Invalid credentials in Authorization header"}, b"{}"
        return 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"{}"

    def _commit(self, repo: HubRepo, rev: str) -> str | None:
        if rev == repo.commit:
            return rev
        return repo.refs.get(rev)

    def route(self, handler: BaseHTTPRequestHandler, path: str) -> _Reply:
        """Dispatch /api/models/... and /{repo}/resolve/... requests."""
        parts = path.strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        repo_id = "/".join(parts[2:4]) if api else "/".join(parts[0:2])
        repo = self.repos.get(repo_id)
        if repo is None:
            return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"{}"
        denied = self._auth(handler, repo)
        if denied:
            return denied
        kind, rev = (parts[4], parts[5]) if api else (parts[2], parts[3])
        commit = self._commit(repo, rev)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b"{}"
        json_headers = {"Content-Type": "application/json"}
        if api and kind == "revision":
            siblings = [{"rfilename": n, "size": len(b), "blobId": hashlib.sha1(b).hexdigest(),
                         **({"lfs": {"size": len(b), "sha256": hashlib.sha256(b).hexdigest(),
                                     "pointerSize": 134}} if _is_lfs(n) else {})}
                        for n, b in sorted(repo.files.items())]
            body = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": repo.token is not None,
                    "siblings": siblings}
            return 200, json_headers, json.dumps(body).encode()
        if api and kind == "tree":
            entries = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest(),
                        **({"lfs": {"oid": hashlib.sha256(b).hexdigest(), "size": len(b), "pointerSize": 134}}
                           if _is_lfs(n) else {})} for n, b in sorted(repo.files.items())]
            return 200, json_headers, json.dumps(entries).encode()
        if not api and kind == "resolve":
            name = "/".join(parts[4:])
            body = repo.files.get(name)
            if body is None:
                return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}, b"{}"
            etag = hashlib.sha256(body).hexdigest() if _is_lfs(name) else hashlib.sha1(body).hexdigest()
            if name in repo.corrupt:
                body = bytes(b ^ 0xFF for b in body)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"',
                       "Content-Type": "application/octet-stream"}
            return 200, headers, body
        return 404, {}, b"{}"


def read_tree(root: Path) -> dict[str, bytes]:
    """Return {relative posix path: bytes} of every regular file under root (hidden files skipped)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def make_tar_gz(files: dict[str, bytes], prefix: str = "") -> bytes:
    """Build a tar.gz in memory from {path: bytes} (paths optionally under `prefix`/)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_zip(files: dict[str, bytes], prefix: str = "") -> bytes:
    """Build a zip in memory from {path: bytes}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return buf.getvalue()


def run_cli(argv: list[str]) -> tuple[int, list[dict], str]:
    """Run `inferkube-runtime download ARGV` in-process; return (exit code, JSON lines, other output)."""
    import contextlib

    from inferkube.runtime.download.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    events, other = [], []
    for line in out.getvalue().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            other.append(line)
    return code, events, "\n".join(other)


def serving(server: LocalServer) -> Iterator[LocalServer]:
    """Generator for fixtures: start the server, yield it, stop it."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
