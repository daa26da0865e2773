"""The downloader against a local stand-in for the Hugging Face Hub serving a tiny model built in the test."""

from __future__ import annotations

import json

import pytest

from inferkube.api.contract import DOWNLOAD_MANIFEST_FILE
from inferkube.runtime.download import progress
from inferkube.runtime.tinymodel import build_tiny_model, default_tiny_model_dir
from tests.unit.runtime.test_download_fakes import FakeHub, Fault, HubRepo, read_tree, run_cli, serving

REPO = "acme/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PRIVATE_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
TOKEN = "hf_test_token"


@pytest.fixture(scope="module")
def tiny_files() -> dict[str, bytes]:
    """The files of the tiny random Llama (built locally once, then reused)."""
    return read_tree(build_tiny_model(default_tiny_model_dir()))


@pytest.fixture
def hub(tiny_files):
    """A fake Hub with a public repo, a private repo and nothing else."""
    srv = FakeHub({
        REPO: HubRepo(files=dict(tiny_files)),
        "acme/private": HubRepo(files={"config.json": b"{}"}, token=TOKEN, commit=PRIVATE_COMMIT,
                                refs={"main": PRIVATE_COMMIT}),
    })
    yield from serving(srv)


def hf_args(hub: FakeHub, dest, tmp_path, repo: str = REPO, revision: str = "main", *extra: str) -> list[str]:
    """Command line for a quick run against the fake Hub."""
    return ["--source", f"hf://{repo}", "--revision", revision, "--dest", str(dest),
            "--hf-endpoint", hub.url, "--timeout", "2", "--retries", "2", "--backoff", "0.05",
            "--progress-interval", "0.1", "--termination-log", str(tmp_path / "log"), *extra]


def test_hub_download_is_complete_and_pinned_to_the_commit(hub, tmp_path, tiny_files, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    dest = tmp_path / "cache" / "tiny"
    code, events, _ = run_cli(hf_args(hub, dest, tmp_path))
    assert code == 0, events
    assert read_tree(dest) == tiny_files
    assert "model.safetensors" in tiny_files and "config.json" in tiny_files
    assert not (dest / ".cache").exists()  # huggingface_hub's local_dir bookkeeping is not shipped
    manifest = json.loads((dest / DOWNLOAD_MANIFEST_FILE).read_text())
    assert manifest["revision"] == "main" and manifest["resolvedRevision"] == COMMIT
    assert events[-1] == {"event": "done", "revision": COMMIT, "bytes": sum(map(len, tiny_files.values())),
                          "files": len(tiny_files), "bytesDownloaded": sum(map(len, tiny_files.values())),
                          "reused": False}
    assert json.loads((tmp_path / "log").read_text())["revision"] == COMMIT
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny"]


def test_allow_and_ignore_patterns_limit_what_comes_down(hub, tmp_path, tiny_files):
    dest = tmp_path / "tiny"
    code, events, _ = run_cli(hf_args(hub, dest, tmp_path, REPO, "main", "--allow-pattern", "*.json",
                                      "--ignore-pattern", "tokenizer*"))
    assert code == 0, events
    wanted = {n for n in tiny_files if n.endswith(".json") and not n.startswith("tokenizer")}
    assert set(read_tree(dest)) == wanted
    assert not [r for r in hub.gets("/resolve/") if r.path.endswith(".safetensors")]


def test_rerun_makes_no_request_at_all(hub, tmp_path):
    dest = tmp_path / "tiny"
    assert run_cli(hf_args(hub, dest, tmp_path, REPO, COMMIT))[0] == 0
    seen = len(hub.requests)
    code, events, _ = run_cli(hf_args(hub, dest, tmp_path, REPO, COMMIT))
    assert code == 0
    assert len(hub.requests) == seen
    assert events[-1]["bytesDownloaded"] == 0 and events[-1]["revision"] == COMMIT


def test_private_repo_needs_the_token(hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    dest = tmp_path / "p"
    code, events, _ = run_cli(hf_args(hub, dest, tmp_path, "acme/private"))
    assert code == 1
    assert events[-1]["reason"] == progress.REASON_UNAUTHORIZED and "401" in events[-1]["message"]
    assert not dest.exists()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, events, _ = run_cli(hf_args(hub, dest, tmp_path, "acme/private", "main", "--hf-token-file",
                                      str(token_file)))
    assert code == 0, events
    assert read_tree(dest) == {"config.json": b"{}"}


def test_token_is_also_read_from_hf_token_env(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    code, events, _ = run_cli(hf_args(hub, tmp_path / "p", tmp_path, "acme/private"))
    assert code == 1 and events[-1]["reason"] == progress.REASON_UNAUTHORIZED
    assert all(r.auth == "Bearer hf_wrong" for r in hub.requests)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert run_cli(hf_args(hub, tmp_path / "p", tmp_path, "acme/private"))[0] == 0


def test_missing_repo_and_revision_are_not_found(hub, tmp_path):
    code, events, _ = run_cli(hf_args(hub, tmp_path / "x", tmp_path, "acme/nope"))
    assert code == 1 and events[-1]["reason"] == progress.REASON_NOT_FOUND
    assert "acme/nope" in events[-1]["message"]
    code, events, _ = run_cli(hf_args(hub, tmp_path / "x", tmp_path, REPO, "v9"))
    assert code == 1 and events[-1]["reason"] == progress.REASON_NOT_FOUND
    assert "revision 'v9'" in events[-1]["message"]


def test_corrupt_weights_fail_checksum_and_keep_previous_copy(hub, tmp_path, tiny_files):
    dest = tmp_path / "tiny"
    assert run_cli(hf_args(hub, dest, tmp_path, "acme/private", "main", "--hf-token-file",
                           str(_token(tmp_path))))[0] == 0
    hub.repos[REPO].corrupt.add("model.safetensors")
    code, events, _ = run_cli(hf_args(hub, dest, tmp_path))
    assert code == 1
    assert events[-1]["reason"] == progress.REASON_CHECKSUM_MISMATCH
    assert "model.safetensors" in events[-1]["message"]
    assert read_tree(dest) == {"config.json": b"{}"}  # the previous complete copy is untouched
    hub.repos[REPO].corrupt.clear()
    code, _, _ = run_cli(hf_args(hub, dest, tmp_path))
    assert code == 0 and read_tree(dest) == tiny_files


def test_cut_transfer_is_retried_to_a_complete_copy(hub, tmp_path, tiny_files):
    # huggingface_hub resumes from what it flushed to disk (it writes in 10 MB chunks, so a tiny file
    # restarts from 0); the user-visible promise is: a cut connection still ends in a complete copy.
    path = f"/{REPO}/resolve/{COMMIT}/model.safetensors"
    size = len(tiny_files["model.safetensors"])
    hub.faults[path] = Fault(after=size // 2, mode="cut")
    code, events, _ = run_cli(hf_args(hub, tmp_path / "tiny", tmp_path))
    assert code == 0, events
    assert len(hub.gets(path)) == 2
    assert read_tree(tmp_path / "tiny") == tiny_files


def test_stalled_transfer_is_retried_not_waited_on(hub, tmp_path, tiny_files):
    import time

    path = f"/{REPO}/resolve/{COMMIT}/model.safetensors"
    hub.faults[path] = Fault(after=1000, mode="stall", stall=60)
    start = time.monotonic()
    code, events, _ = run_cli(hf_args(hub, tmp_path / "tiny", tmp_path))
    assert code == 0, events
    assert time.monotonic() - start < 30
    assert len(hub.gets(path)) >= 2
    assert read_tree(tmp_path / "tiny") == tiny_files


def test_unreachable_hub_is_a_network_failure(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, events, _ = run_cli(["--source", f"hf://{REPO}", "--revision", "main", "--dest",
                               str(tmp_path / "x"), "--hf-endpoint", f"http://127.0.0.1:{port}",
                               "--retries", "1", "--backoff", "0", "--timeout", "2",
                               "--termination-log", str(tmp_path / "log")])
    assert code == 1 and events[-1]["reason"] == progress.REASON_NETWORK


def _token(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    return path


def test_failed_run_is_resumed_without_fetching_finished_files_again(hub, tmp_path, tiny_files):
    missing = f"/{REPO}/resolve/{COMMIT}/tokenizer.json"
    hub.status[missing] = 404
    dest = tmp_path / "tiny"
    code, events, _ = run_cli(hf_args(hub, dest, tmp_path))
    assert code == 1 and events[-1]["reason"] == progress.REASON_NOT_FOUND
    assert not dest.exists()
    weights = f"/{REPO}/resolve/{COMMIT}/model.safetensors"
    assert len(hub.gets(weights)) == 1
    del hub.status[missing]
    code, events, _ = run_cli(hf_args(hub, dest, tmp_path))
    assert code == 0, events
    assert len(hub.gets(weights)) == 1  # finished in the failed run, not fetched again
    assert events[-1]["bytesDownloaded"] == len(tiny_files["tokenizer.json"])
    assert read_tree(dest) == tiny_files
