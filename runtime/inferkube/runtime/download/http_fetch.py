"""Stream an archive over HTTP(S) to disk with Range resume, stall detection and bounded retries."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from inferkube.runtime.download.errors import (
    ChecksumMismatch,
    DownloadError,
    LocalIOError,
    NetworkError,
    error_for_status,
    redact_url,
    redact_urls_in,
)
from inferkube.runtime.download.manifest import sha256_file
from inferkube.runtime.download.progress import ProgressState

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class RetryPolicy:
    """How often and how patiently to retry: `timeout` is the longest silence tolerated on a connection."""

    timeout: float = 30.0
    retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 30.0

    def delay(self, attempt: int) -> float:
        """Return the wait before retry number `attempt` (1-based): exponential, capped."""
        return min(self.backoff * (2 ** (attempt - 1)), self.backoff_max)


class _Retryable(Exception):
    """A transient failure of one attempt."""


@dataclass
class FetchResult:
    """What a fetch left on disk and how many bytes this run received."""

    path: Path
    size: int
    fetched: int


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".meta.json")


def _read_meta(part: Path, url: str) -> dict:
    try:
        meta = json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if meta.get("url") == url else {}


def _describe(exc: BaseException, url: str) -> str:
    host = httpx.URL(url).host
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out connecting to {host}"
    if isinstance(exc, httpx.ReadTimeout):
        return f"transfer from {host} stalled (no data within the read timeout)"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {host}: {exc}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection to {host} closed mid-transfer: {exc}"
    return redact_urls_in(f"{type(exc).__name__}: {exc}")


def _one_attempt(client: httpx.Client, url: str, part: Path, state: ProgressState) -> tuple[int, int]:
    """Fetch (the rest of) url into part; return (size on disk, bytes received this attempt)."""
    have = part.stat().st_size if part.exists() else 0
    meta = _read_meta(part, url)
    if have and meta.get("total") == have:
        return have, 0
    validator = meta.get("etag") or meta.get("lastModified")
    if have and not validator:
        # Without an ETag/Last-Modified the server cannot tell us the file changed since the part
        # was written; appending could splice two versions, so start over.
        part.unlink()
        have = 0
    headers = {"Accept-Encoding": "identity"}
    if have and validator:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = validator
    received = 0
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status == 416 and have:
            part.unlink()
            raise _Retryable("server rejected the resume range; starting over")
        if status in _RETRY_STATUS:
            raise _Retryable(f"HTTP {status} from {httpx.URL(url).host}")
        if status >= 400:
            raise error_for_status(status, redact_url(url))
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink()
                raise _Retryable("server answered an unexpected range; starting over")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have = 0
            mode = "wb"
        meta = {"url": url, "etag": response.headers.get("ETag"),
                "lastModified": response.headers.get("Last-Modified"), "total": total}
        _meta_path(part).write_text(json.dumps(meta), encoding="utf-8")
        state.set(bytes_total=total, bytes_done=have)
        with open(part, mode) as fh:
            for chunk in response.iter_raw():  # no chunk_size: a size would buffer (and lose) bytes
                fh.write(chunk)
                received += len(chunk)
                state.add_bytes(len(chunk))
        size = have + received
    if total is not None and size != total:
        raise _Retryable(f"connection closed after {size} of {total} bytes")
    if total is None:
        meta["total"] = size
        _meta_path(part).write_text(json.dumps(meta), encoding="utf-8")
    return size, received


def fetch_to_file(url: str, part: Path, *, policy: RetryPolicy, state: ProgressState,
                  expected_sha256: str | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> FetchResult:
    """Download url into `part`, resuming what is there; verify the sha256 if given."""
    fetched = 0
    failures = 0
    timeout = httpx.Timeout(policy.timeout)
    with httpx.Client(timeout=timeout, follow_redirects=True, trust_env=True) as client:
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                size, got = _one_attempt(client, url, part, state)
                fetched += got
                break
            except DownloadError:
                raise
            except OSError as exc:
                # Local I/O (disk full, permissions, read-only volume): retrying cannot help.
                raise LocalIOError(f"cannot write the download to {part.parent}: "
                                   f"{exc.strerror or type(exc).__name__}") from exc
            except (_Retryable, httpx.TransportError) as exc:
                after = part.stat().st_size if part.exists() else 0
                fetched += max(0, after - before)
                # Progress made: earlier failures are forgiven (still bounded: the file is finite).
                failures = 1 if after > before else failures + 1
                reason = str(exc) if isinstance(exc, _Retryable) else _describe(exc, url)
                if failures > policy.retries:
                    raise NetworkError(f"{reason}; gave up after {policy.retries} retries") from exc
                wait = policy.delay(max(failures, 1))
                print(f"inferkube-download: {reason}; retrying in {wait:.1f}s", flush=True, file=sys.stderr)
                sleep(wait)
    if expected_sha256:
        actual = sha256_file(part)
        if actual.lower() != expected_sha256.lower():
            part.unlink(missing_ok=True)
            _meta_path(part).unlink(missing_ok=True)
            raise ChecksumMismatch(f"sha256 mismatch for {redact_url(url)}: expected {expected_sha256.lower()}, "
                                   f"got {actual}")
    return FetchResult(path=part, size=size, fetched=fetched)
