"""The downloader against a local archive server: verified copies, resume, stalls, errors, unsafe archives."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import time
from pathlib import Path

import pytest

from inferkube.api.contract import DOWNLOAD_MANIFEST_FILE
from inferkube.runtime.download import progress
from tests.unit.runtime.test_download_fakes import (
    ArchiveServer,
    Fault,
    make_tar_gz,
    make_zip,
    read_tree,
    run_cli,
    serving,
)

MODEL = {
    "config.json": b'{"model_type": "llama"}',
    "tokenizer.json": b'{"version": "1.0"}' * 50,
    "weights/model.safetensors": random.Random(7).randbytes(300_000),  # incompressible
}


@pytest.fixture
def server():
    """An archive server holding a tar.gz, a zip and a tar of MODEL."""
    srv = ArchiveServer({
        "/model.tar.gz": make_tar_gz(MODEL, prefix="model/"),
        "/model.zip": make_zip(MODEL),
        "/model.tar": make_tar_gz(MODEL),
    })
    yield from serving(srv)


def args(server: ArchiveServer, dest: Path, tmp_path: Path, path: str = "/model.tar.gz",
         *extra: str) -> list[str]:
    """Command line for a quick, test-sized run."""
    return ["--source", server.url + path, "--dest", str(dest), "--timeout", "1", "--retries", "2",
            "--backoff", "0.05", "--progress-interval", "0.1",
            "--termination-log", str(tmp_path / "termination-log"), *extra]


def test_archive_download_gives_complete_copy_manifest_and_done_event(server, tmp_path):
    dest = tmp_path / "cache" / "llama"
    code, events, _ = run_cli(args(server, dest, tmp_path))
    assert code == 0
    assert read_tree(dest) == MODEL  # single top-level folder "model/" was flattened
    manifest = json.loads((dest / DOWNLOAD_MANIFEST_FILE).read_text())
    assert manifest["source"] == server.url + "/model.tar.gz"
    assert {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in MODEL.items()}
    assert manifest["finishedAt"].endswith("Z")
    final = events[-1]
    assert final["event"] == progress.EVENT_DONE
    assert final["files"] == 3 and final["bytes"] == sum(map(len, MODEL.values()))
    assert json.loads((tmp_path / "termination-log").read_text()) == final
    last_progress = [e for e in events if e["event"] == progress.EVENT_PROGRESS][-1]
    assert last_progress["bytesDone"] == last_progress["bytesTotal"] > 0
    assert last_progress["filesDone"] == last_progress["filesTotal"] == 3
    # no staging leftovers next to the copy
    assert sorted(p.name for p in dest.parent.iterdir()) == ["llama"]


def test_zip_archive_with_sha256(server, tmp_path):
    body = server.files["/model.zip"]
    dest = tmp_path / "m"
    code, events, _ = run_cli(args(server, dest, tmp_path, "/model.zip", "--sha256",
                                   hashlib.sha256(body).hexdigest().upper()))
    assert code == 0, events
    assert read_tree(dest) == MODEL


def test_rerun_with_same_source_fetches_nothing(server, tmp_path):
    dest = tmp_path / "m"
    assert run_cli(args(server, dest, tmp_path, "/model.tar.gz", "--revision", "v1"))[0] == 0
    before = len(server.requests)
    code, events, _ = run_cli(args(server, dest, tmp_path, "/model.tar.gz", "--revision", "v1"))
    assert code == 0
    assert len(server.requests) == before  # not even a HEAD: manifest + sizes matched
    assert events[-1]["bytesDownloaded"] == 0 and events[-1]["reused"] is True


def test_damaged_copy_is_downloaded_again(server, tmp_path):
    dest = tmp_path / "m"
    assert run_cli(args(server, dest, tmp_path))[0] == 0
    (dest / "weights" / "model.safetensors").write_bytes(b"truncated")
    code, _, _ = run_cli(args(server, dest, tmp_path))
    assert code == 0
    assert read_tree(dest) == MODEL
    assert len(server.gets("/model.tar.gz")) == 2


def test_new_revision_replaces_previous_copy(server, tmp_path):
    dest = tmp_path / "m"
    assert run_cli(args(server, dest, tmp_path, "/model.tar.gz", "--revision", "v1"))[0] == 0
    server.files["/v2.tar.gz"] = make_tar_gz({"config.json": b"{}"})
    code, events, _ = run_cli(args(server, dest, tmp_path, "/v2.tar.gz", "--revision", "v2"))
    assert code == 0
    assert read_tree(dest) == {"config.json": b"{}"}
    assert events[-1]["revision"] == "v2"


def test_checksum_mismatch_fails_and_keeps_previous_copy(server, tmp_path):
    dest = tmp_path / "m"
    assert run_cli(args(server, dest, tmp_path, "/model.tar.gz", "--revision", "v1"))[0] == 0
    code, events, err = run_cli(args(server, dest, tmp_path, "/model.zip", "--revision", "v2",
                                     "--sha256", "0" * 64))
    assert code == 1
    assert events[-1]["event"] == progress.EVENT_FAILED
    assert events[-1]["reason"] == progress.REASON_CHECKSUM_MISMATCH
    assert "expected " + "0" * 64 in events[-1]["message"]
    assert read_tree(dest) == MODEL
    assert json.loads((dest / DOWNLOAD_MANIFEST_FILE).read_text())["revision"] == "v1"
    assert json.loads((tmp_path / "termination-log").read_text())["reason"] == "ChecksumMismatch"


@pytest.mark.parametrize(("status", "reason", "text"), [
    (401, progress.REASON_UNAUTHORIZED, "401 Unauthorized"),
    (403, progress.REASON_UNAUTHORIZED, "403 Forbidden"),
    (404, progress.REASON_NOT_FOUND, "404 Not Found"),
])
def test_http_errors_fail_fast_with_specific_reason_and_keep_previous_copy(server, tmp_path, status, reason,
                                                                            text):
    dest = tmp_path / "m"
    assert run_cli(args(server, dest, tmp_path))[0] == 0
    server.status["/model.zip"] = status
    code, events, _ = run_cli(args(server, dest, tmp_path, "/model.zip"))
    assert code == 1
    assert events[-1]["reason"] == reason and text in events[-1]["message"]
    assert len(server.gets("/model.zip")) == 1  # not retried: a retry cannot fix it
    assert read_tree(dest) == MODEL


def test_connection_refused_is_a_network_failure_after_bounded_retries(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    code, events, _ = run_cli(["--source", f"http://127.0.0.1:{port}/m.tar.gz", "--dest", str(tmp_path / "m"),
                               "--retries", "2", "--backoff", "0.05", "--termination-log",
                               str(tmp_path / "log")])
    assert code == 1
    assert events[-1]["reason"] == progress.REASON_NETWORK
    assert "cannot connect to 127.0.0.1" in events[-1]["message"]
    assert "gave up after 2" in events[-1]["message"]
    assert time.monotonic() - start < 10
    assert not (tmp_path / "m").exists()


def test_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    body = server.files["/model.tar.gz"]
    server.faults["/model.tar.gz"] = Fault(after=50_000, mode="cut")
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path))
    assert code == 0, events
    gets = server.gets("/model.tar.gz")
    assert [g.range for g in gets] == [None, "bytes=50000-"]
    assert server.body_bytes() == len(body)  # nothing fetched twice
    assert read_tree(tmp_path / "m") == MODEL


def test_interrupted_run_is_resumed_by_the_next_run(server, tmp_path):
    body = server.files["/model.tar.gz"]
    server.faults["/model.tar.gz"] = Fault(after=60_000, mode="cut", times=1)
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path) + ["--retries", "0"])
    assert code == 1 and events[-1]["reason"] == progress.REASON_NETWORK
    assert not (tmp_path / "m").exists()
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path))
    assert code == 0
    assert server.gets("/model.tar.gz")[-1].range == "bytes=60000-"
    assert server.body_bytes() == len(body)
    assert events[-1]["bytesDownloaded"] == len(body) - 60_000


def test_stalled_transfer_is_detected_and_resumed(server, tmp_path):
    server.faults["/model.tar.gz"] = Fault(after=40_000, mode="stall", stall=30)
    start = time.monotonic()
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path))
    elapsed = time.monotonic() - start
    assert code == 0, events
    assert elapsed < 10  # the 30 s stall was cut short by the 1 s read timeout
    assert [g.range for g in server.gets("/model.tar.gz")] == [None, "bytes=40000-"]


def test_transfer_that_keeps_stalling_fails_after_bounded_retries(server, tmp_path):
    server.faults["/model.tar.gz"] = Fault(after=0, mode="stall", stall=30, times=10)
    # after=0 stalls before the first byte: no progress, so every attempt counts against --retries
    start = time.monotonic()
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path))
    assert code == 1
    assert events[-1]["reason"] == progress.REASON_NETWORK and "stalled" in events[-1]["message"]
    assert time.monotonic() - start < 15
    assert len(server.gets("/model.tar.gz")) == 3  # first try + 2 retries


def test_progress_lines_report_bytes_while_downloading(server, tmp_path):
    server.throttle = 0.02
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path))
    assert code == 0
    lines = [e for e in events if e["event"] == progress.EVENT_PROGRESS]
    total = len(server.files["/model.tar.gz"])
    assert any(0 < e["bytesDone"] < total and e["bytesTotal"] == total for e in lines)
    assert [e["bytesDone"] for e in lines] == sorted(e["bytesDone"] for e in lines)
    assert set(lines[0]) == {"event", "bytesDone", "bytesTotal", "filesDone", "filesTotal"}


def _tar_with(member: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("ok.txt"), io.BytesIO(b""))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return buf.getvalue()


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(("archive", "words"), [
    (_tar_with(tarfile.TarInfo("../evil.txt")), "escapes the destination"),
    (_tar_with(tarfile.TarInfo("/tmp/evil.txt")), "absolute path"),
    (_tar_with(_symlink("link", "../../outside")), "escapes the destination"),
    (_tar_with(_symlink("link", "/etc/passwd")), "absolute path"),
    (make_zip({"../evil.txt": b"x"}), "escapes the destination"),
])
def test_unsafe_archives_are_rejected_without_writing_outside(server, tmp_path, archive, words):
    server.files["/bad.tar.gz"] = archive
    dest = tmp_path / "cache" / "m"
    code, events, _ = run_cli(args(server, dest, tmp_path, "/bad.tar.gz"))
    assert code == 1
    assert events[-1]["reason"] == progress.REASON_INVALID and words in events[-1]["message"]
    assert not dest.exists()
    assert not (tmp_path / "cache" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_not_an_archive_is_invalid(server, tmp_path):
    server.files["/x.tar.gz"] = b"<html>login page</html>"
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path, "/x.tar.gz"))
    assert code == 1 and events[-1]["reason"] == progress.REASON_INVALID
    assert "not a tar, tar.gz or zip" in events[-1]["message"]
    server.files["/x.tar.gz"] = make_tar_gz(MODEL)  # the source is fixed: the next run starts clean
    code, _, _ = run_cli(args(server, tmp_path / "m", tmp_path, "/x.tar.gz"))
    assert code == 0 and read_tree(tmp_path / "m") == MODEL


def test_bad_arguments_exit_2_with_invalid_event(tmp_path):
    log = tmp_path / "log"
    code, events, _ = run_cli(["--source", "ftp://x/y", "--dest", str(tmp_path / "m"), "--termination-log",
                               str(log)])
    assert code == 1 and events[-1]["reason"] == progress.REASON_INVALID
    assert "unsupported source" in events[-1]["message"]
    code, events, _ = run_cli(["--dest", str(tmp_path / "m"), "--termination-log", str(log)])
    assert code == 2 and events[-1]["reason"] == progress.REASON_INVALID
    assert "--source" in json.loads(log.read_text())["message"]


def test_pvc_source_is_verified_not_downloaded(tmp_path):
    claim = tmp_path / "mnt"
    (claim / "llama").mkdir(parents=True)
    (claim / "llama" / "config.json").write_text("{}")
    base = ["--pvc-root", str(claim), "--termination-log", str(tmp_path / "log")]
    code, events, _ = run_cli(["--source", "pvc://models/llama", "--dest", str(claim / "llama"), *base])
    assert code == 0 and events[-1]["files"] == 1 and events[-1]["bytes"] == 2
    (claim / "empty").mkdir()
    code, events, _ = run_cli(["--source", "pvc://models/empty", "--dest", str(claim / "empty"), *base])
    assert code == 1 and events[-1]["reason"] == progress.REASON_INVALID
    assert "is empty" in events[-1]["message"]
    code, events, _ = run_cli(["--source", "pvc://models/none", "--dest", str(claim / "none"), *base])
    assert code == 1 and events[-1]["reason"] == progress.REASON_NOT_FOUND


def test_termination_message_stays_under_4_kib(tmp_path):
    log = tmp_path / "log"
    progress.write_termination_message(log, progress.failed_event("Network", "x" * 10_000))
    assert len(log.read_bytes()) < progress.TERMINATION_MESSAGE_LIMIT


def _zip_with_links(links: list[tuple[str, str]], files: dict[str, bytes] | None = None) -> bytes:
    import stat
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in (files or {"ok.txt": b"ok"}).items():
            zf.writestr(name, data)
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.mark.parametrize("links", [
    [("x/y", ".."), ("x/y/z", "..")],              # the second link sits in dest itself, its ".." leaves
    [("x/y", ".."), ("x/y/w/z", "../..")],
    [("a/t", "../q/.."), ("q", ".")],              # a later link re-points an earlier, checked one
])
def test_chained_zip_symlinks_cannot_leave_the_destination(server, tmp_path, links):
    server.files["/chain.zip"] = _zip_with_links(links)
    dest = tmp_path / "cache" / "m"
    code, events, _ = run_cli(args(server, dest, tmp_path, "/chain.zip"))
    assert code == 1, events
    assert events[-1]["reason"] == progress.REASON_INVALID
    assert "escapes the destination" in events[-1]["message"]
    assert not dest.exists()


def test_zip_symlinks_inside_the_tree_still_work(server, tmp_path):
    server.files["/links.zip"] = _zip_with_links([("sub/link", "../ok.txt"), ("alias", "sub")],
                                                 {"ok.txt": b"ok", "sub/a.txt": b"a"})
    dest = tmp_path / "m"
    code, events, _ = run_cli(args(server, dest, tmp_path, "/links.zip"))
    assert code == 0, events
    assert (dest / "sub" / "link").read_bytes() == b"ok"
    assert (dest / "alias" / "a.txt").read_bytes() == b"a"


class _NoValidatorServer(ArchiveServer):
    """Serves files without ETag or Last-Modified: a partial copy cannot be proven current."""

    def route(self, handler, path):  # type: ignore[no-untyped-def]
        status, headers, body = super().route(handler, path)
        return status, {k: v for k, v in headers.items() if k != "ETag"}, body


def test_cut_transfer_without_validator_restarts_from_zero(tmp_path):
    srv = _NoValidatorServer({"/model.tar.gz": make_tar_gz(MODEL)})
    for running in serving(srv):
        running.faults["/model.tar.gz"] = Fault(after=50_000, mode="cut")
        code, events, _ = run_cli(args(running, tmp_path / "m", tmp_path))
        assert code == 0, events
        # no Range: appending to the 50 kB part could splice two versions of the file
        assert [g.range for g in running.gets("/model.tar.gz")] == [None, None]
        assert read_tree(tmp_path / "m") == MODEL


def test_messages_never_carry_query_strings_or_credentials(server, tmp_path):
    server.status["/model.zip"] = 404
    url = server.url.replace("http://", "http://robot:PASSWORD-1@") + "/model.zip?X-Amz-Signature=SIG-2&t=3"
    argv = ["--source", url, "--dest", str(tmp_path / "m"), "--timeout", "1", "--retries", "0",
            "--termination-log", str(tmp_path / "termination-log")]
    code, events, other = run_cli(argv)
    assert code == 1 and events[-1]["reason"] == progress.REASON_NOT_FOUND
    termination = (tmp_path / "termination-log").read_text()
    assert "/model.zip" in events[-1]["message"]
    for text in (events[-1]["message"], termination, other):
        assert "SIG-2" not in text and "PASSWORD-1" not in text and "robot" not in text


def test_checksum_message_never_carries_the_query_string(server, tmp_path):
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path, "/model.zip?token=SECRET-3",
                                   "--sha256", "0" * 64))
    assert code == 1 and events[-1]["reason"] == progress.REASON_CHECKSUM_MISMATCH
    assert "SECRET-3" not in events[-1]["message"] and "/model.zip" in events[-1]["message"]


def test_disk_full_fails_at_once_as_storage_not_network(server, tmp_path, monkeypatch):
    import errno

    from inferkube.runtime.download import http_fetch

    class _FullDisk(io.BytesIO):
        def write(self, data):  # type: ignore[no-untyped-def]
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open

    def fake_open(path, mode="r", *a, **kw):  # type: ignore[no-untyped-def]
        return _FullDisk() if mode in ("ab", "wb") else real_open(path, mode, *a, **kw)

    monkeypatch.setattr(http_fetch, "open", fake_open, raising=False)
    start = time.monotonic()
    code, events, _ = run_cli(args(server, tmp_path / "m", tmp_path))
    assert code == 1
    assert events[-1]["reason"] == progress.REASON_STORAGE
    assert "No space left on device" in events[-1]["message"]
    assert len(server.gets("/model.tar.gz")) == 1  # not retried: the disk will not empty itself
    assert time.monotonic() - start < 5
