"""The downloader's progress contract: JSON lines on stdout plus one final object in the termination log.

The operator reads these from the download Job's pod (log lines while it runs, the container's
`terminationMessage` when it ends), so the names are a wire contract: they live in ``inferkube.api.contract`` (``DOWNLOAD_*``).

Lines, one per `--progress-interval` seconds and one at the end::

    {"event":"progress","bytesDone":N,"bytesTotal":N|null,"filesDone":N,"filesTotal":N|null}

Final line (also written to the termination-log path, kept under 4 KiB)::

    {"event":"done","revision":"...","bytes":N,"files":N}
    {"event":"failed","reason":"ChecksumMismatch|NotFound|Unauthorized|Network|Invalid","message":"..."}
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from inferkube.api import contract

# --- Event names (the "event" field) --------------------------------------------------------
EVENT_PROGRESS = contract.DOWNLOAD_EVENT_PROGRESS
EVENT_DONE = contract.DOWNLOAD_EVENT_DONE
EVENT_FAILED = contract.DOWNLOAD_EVENT_FAILED

# --- Failure reasons (the "reason" field of a failed event) -----------------------------------
REASON_CHECKSUM_MISMATCH = "ChecksumMismatch"  # a sha256 (archive or Hub LFS file) did not match
REASON_NOT_FOUND = "NotFound"                  # 404: repo, revision, file or URL does not exist
REASON_UNAUTHORIZED = "Unauthorized"           # 401/403: missing, wrong or insufficient token
REASON_NETWORK = "Network"                     # DNS, refused, reset, stalled: retries exhausted
REASON_INVALID = "Invalid"                     # bad arguments, unsafe or broken archive, empty pvc
REASON_STORAGE = "Storage"                     # local disk: full, read-only, no permission (not retried)
REASONS = (REASON_CHECKSUM_MISMATCH, REASON_NOT_FOUND, REASON_UNAUTHORIZED, REASON_NETWORK, REASON_INVALID,
           REASON_STORAGE)

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096  # Kubernetes truncates terminationMessage at 4 KiB


@dataclass
class ProgressState:
    """Counters shared between the download code (writer) and the reporter thread (reader)."""

    bytes_done: int = 0
    bytes_total: int | None = None
    files_done: int = 0
    files_total: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Optional callable that measures bytes done (e.g. by looking at the staging directory).
    measure: Callable[[], int] | None = field(default=None, repr=False)

    def add_bytes(self, n: int) -> None:
        """Count `n` more bytes received."""
        with self._lock:
            self.bytes_done += n

    def set(self, **values: Any) -> None:
        """Set one or more counters atomically (bytes_done, bytes_total, files_done, files_total)."""
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)

    def snapshot(self) -> dict[str, Any]:
        """Return the progress event for the current counters."""
        measured = None
        if self.measure is not None:
            try:
                measured = self.measure()
            except OSError:
                measured = None
        with self._lock:
            done = self.bytes_done if measured is None else max(self.bytes_done, measured)
            if self.bytes_total is not None:
                done = min(done, self.bytes_total)
            return progress_event(done, self.bytes_total, self.files_done, self.files_total)


def progress_event(bytes_done: int, bytes_total: int | None, files_done: int,
                   files_total: int | None) -> dict[str, Any]:
    """Build a `progress` event object."""
    return {contract.DOWNLOAD_KEY_EVENT: EVENT_PROGRESS, contract.DOWNLOAD_KEY_BYTES_DONE: bytes_done,
            contract.DOWNLOAD_KEY_BYTES_TOTAL: bytes_total, contract.DOWNLOAD_KEY_FILES_DONE: files_done,
            contract.DOWNLOAD_KEY_FILES_TOTAL: files_total}


def done_event(revision: str | None, total_bytes: int, files: int) -> dict[str, Any]:
    """Build the final `done` event object."""
    return {contract.DOWNLOAD_KEY_EVENT: EVENT_DONE, contract.DOWNLOAD_KEY_REVISION: revision,
            contract.DOWNLOAD_KEY_BYTES: total_bytes, contract.DOWNLOAD_KEY_FILES: files}


def failed_event(reason: str, message: str) -> dict[str, Any]:
    """Build the final `failed` event object (message kept short enough for the termination log)."""
    return {contract.DOWNLOAD_KEY_EVENT: EVENT_FAILED, contract.DOWNLOAD_KEY_REASON: reason,
            contract.DOWNLOAD_KEY_MESSAGE: message[:1500]}


def encode_event(event: dict[str, Any]) -> str:
    """Serialise one event as a single compact JSON line (no trailing newline)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True)


def write_termination_message(path: str | Path | None, event: dict[str, Any]) -> None:
    """Write the final event to the termination-log file (best effort, < 4 KiB)."""
    if not path:
        return
    text = encode_event(event)
    if len(text.encode()) >= TERMINATION_MESSAGE_LIMIT:
        event = {**event, contract.DOWNLOAD_KEY_MESSAGE: str(event.get(contract.DOWNLOAD_KEY_MESSAGE, ""))[:512]}
        text = encode_event(event)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        print(f"inferkube-download: cannot write termination log {path}: {exc}", file=sys.stderr)


class ProgressReporter:
    """Print a progress line every `interval` seconds on a daemon thread until stopped."""

    def __init__(self, state: ProgressState, interval: float, out: TextIO | None = None) -> None:
        self.state = state
        self.interval = max(0.05, float(interval))
        self.out = out or sys.stdout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="download-progress", daemon=True)
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        """Print one event line and flush (serialised with the periodic lines)."""
        with self._lock:
            self.out.write(encode_event(event) + "\n")
            self.out.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit(self.state.snapshot())

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.emit(self.state.snapshot())
