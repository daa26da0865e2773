"""`inferkube-runtime download`: parse arguments, run the download, report progress and the final event."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inferkube.api.contract import CACHE_MOUNT_PATH
from inferkube.runtime.download.core import DownloadRequest, download
from inferkube.runtime.download.errors import DownloadError, InvalidSource, redact_urls_in
from inferkube.runtime.download.http_fetch import RetryPolicy
from inferkube.runtime.download.progress import (
    DEFAULT_TERMINATION_LOG,
    REASON_INVALID,
    REASON_STORAGE,
    ProgressReporter,
    ProgressState,
    done_event,
    encode_event,
    failed_event,
    write_termination_message,
)


class _UsageError(Exception):
    """argparse rejected the command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse types error() as NoReturn; raising is what it wants
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `inferkube-runtime download`."""
    p = _Parser(prog="inferkube-runtime download",
                description="Fetch a model into DIR; exit 0 only when DIR holds a complete, verified copy.")
    p.add_argument("--source", required=True, help="hf://org/name, https://.../model.tar.gz or pvc://claim/path")
    p.add_argument("--revision", help="hf: branch, tag or commit (pin a commit); archives: any label")
    p.add_argument("--sha256", help="expected sha256 of the archive (https sources)")
    p.add_argument("--dest", required=True, type=Path, help="directory that will hold the complete copy")
    p.add_argument("--allow-pattern", action="append", default=[], dest="allow", metavar="P",
                   help="hf: only fetch files matching this glob (repeatable)")
    p.add_argument("--ignore-pattern", action="append", default=[], dest="ignore", metavar="P",
                   help="hf: skip files matching this glob (repeatable)")
    p.add_argument("--hf-token-file", type=Path, help="file holding the Hub token (else env HF_TOKEN)")
    p.add_argument("--hf-endpoint", default=None, help="Hub URL (default: env HF_ENDPOINT or huggingface.co)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds of silence on a connection before it counts as stalled (default 30)")
    p.add_argument("--retries", type=int, default=5, help="retries of a failing transfer (default 5)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in s, doubled each time")
    p.add_argument("--progress-interval", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--termination-log", default=DEFAULT_TERMINATION_LOG,
                   help=f"where the final JSON event is written (default {DEFAULT_TERMINATION_LOG})")
    p.add_argument("--pvc-root", type=Path, default=Path(CACHE_MOUNT_PATH),
                   help=f"where a pvc:// source's claim is mounted (default {CACHE_MOUNT_PATH})")
    return p


def _read_token(path: Path | None) -> str | None:
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidSource(f"cannot read --hf-token-file {path}: {exc.strerror}") from exc
        return token or None
    return os.environ.get("HF_TOKEN") or None


def _request_from_args(args: argparse.Namespace) -> DownloadRequest:
    if args.timeout <= 0 or args.retries < 0 or args.progress_interval <= 0 or args.backoff < 0:
        raise InvalidSource("--timeout and --progress-interval must be > 0, --retries and --backoff >= 0")
    return DownloadRequest(
        source=args.source, dest=args.dest, revision=args.revision, sha256=args.sha256,
        allow_patterns=list(args.allow), ignore_patterns=list(args.ignore),
        hf_token=_read_token(args.hf_token_file),
        hf_endpoint=args.hf_endpoint or os.environ.get("HF_ENDPOINT") or None,
        policy=RetryPolicy(timeout=args.timeout, retries=args.retries, backoff=args.backoff),
        pvc_root=args.pvc_root,
    )


def main(argv: list[str] | None = None) -> int:
    """Run `inferkube-runtime download ARGS`; print JSON progress lines; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["download"]:
        argv = argv[1:]
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--termination-log", default=DEFAULT_TERMINATION_LOG)
    termination_log: str = early.parse_known_args(argv)[0].termination_log
    try:
        args = build_parser().parse_args(argv)
        termination_log = args.termination_log
        request = _request_from_args(args)
    except (_UsageError, InvalidSource) as exc:
        event = failed_event(REASON_INVALID, redact_urls_in(f"invalid arguments: {exc}"))
        print(encode_event(event), flush=True)
        write_termination_message(termination_log, event)
        return 2
    state = ProgressState()
    reporter = ProgressReporter(state, args.progress_interval)
    try:
        with reporter:
            result = download(request, state)
    except DownloadError as exc:
        event = failed_event(exc.reason, exc.message)
        exit_code = 1
    except OSError as exc:
        event = failed_event(REASON_STORAGE, redact_urls_in(f"local filesystem error: {exc}"))
        exit_code = 1
    else:
        event = done_event(result.revision, result.total_bytes, result.files)
        event["bytesDownloaded"] = result.bytes_downloaded
        event["reused"] = result.reused
        exit_code = 0
    reporter.emit(event)
    write_termination_message(termination_log, event)
    if exit_code:
        print(f"inferkube-download: {event['reason']}: {event['message']}", file=sys.stderr, flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
