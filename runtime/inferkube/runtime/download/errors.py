"""Typed downloader failures: each carries one of the documented `reason` names."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from inferkube.runtime.download.progress import (
    REASON_CHECKSUM_MISMATCH,
    REASON_INVALID,
    REASON_NETWORK,
    REASON_NOT_FOUND,
    REASON_STORAGE,
    REASON_UNAUTHORIZED,
)

# A URL inside free text: scheme://, then anything up to whitespace or a closing quote/bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]]+")


def redact_url(url: str) -> str:
    """The URL without userinfo, query and fragment: pre-signed tokens and passwords never reach a message."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme:
        return url.split("?", 1)[0].split("#", 1)[0]
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_urls_in(text: str) -> str:
    """`text` with every URL in it passed through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


class DownloadError(Exception):
    """A download that failed for a reason the operator can show (`reason` is a progress.REASON_* name)."""

    reason: str = REASON_INVALID

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(redact_urls_in(message))
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        """The one-line human message."""
        return " ".join(str(self).split())


class ChecksumMismatch(DownloadError):
    """A downloaded file's sha256 differs from the expected one."""

    reason = REASON_CHECKSUM_MISMATCH


class NotFound(DownloadError):
    """The source (repo, revision, file, URL or path) does not exist."""

    reason = REASON_NOT_FOUND


class Unauthorized(DownloadError):
    """The source refused access (401/403)."""

    reason = REASON_UNAUTHORIZED


class NetworkError(DownloadError):
    """The source could not be reached or the transfer kept stalling; retries are exhausted."""

    reason = REASON_NETWORK


class InvalidSource(DownloadError):
    """Bad arguments, an unsafe or broken archive, or an empty pvc path."""

    reason = REASON_INVALID


class LocalIOError(DownloadError):
    """Writing the copy failed on this machine (disk full, read-only, permissions); retrying cannot help."""

    reason = REASON_STORAGE


def error_for_status(status: int, what: str) -> DownloadError:
    """Map an HTTP status code to the matching typed error with a specific message."""
    if status == 401:
        return Unauthorized(f"401 Unauthorized from {what}: a token is required or the token is invalid")
    if status == 403:
        return Unauthorized(f"403 Forbidden from {what}: the token has no access to this resource")
    if status == 404:
        return NotFound(f"404 Not Found: {what}")
    if status == 410:
        return NotFound(f"410 Gone: {what}")
    return NetworkError(f"HTTP {status} from {what}", reason=REASON_NETWORK)
