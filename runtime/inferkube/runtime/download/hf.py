"""Fetch a Hugging Face Hub repo at one revision with `snapshot_download` into a staging directory."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferkube.runtime.download.errors import (
    ChecksumMismatch,
    DownloadError,
    InvalidSource,
    NetworkError,
    NotFound,
    Unauthorized,
    error_for_status,
)
from inferkube.runtime.download.http_fetch import RetryPolicy
from inferkube.runtime.download.manifest import Manifest
from inferkube.runtime.download.progress import ProgressState


@dataclass
class HubFile:
    """One file the Hub says the revision has (size, and sha256 for LFS files)."""

    path: str
    size: int | None
    sha256: str | None


@dataclass
class HubPlan:
    """The resolved commit and the files that will be fetched after the patterns are applied."""

    commit: str
    files: list[HubFile]


def _lfs_sha256(sibling: Any) -> str | None:
    """The sha256 the Hub lists for an LFS file (None for a plain git file)."""
    lfs = sibling.lfs
    return lfs.sha256 if lfs is not None else None


def _translate(exc: BaseException, repo_id: str, revision: str | None) -> DownloadError | None:
    """Map a hub error (or the HTTP error it wraps) to a typed download error; None means transient."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        typed = _translate_one(seen, repo_id, revision)
        if typed is not None:
            return typed
        seen = seen.__cause__ or seen.__context__
    return None


def _translate_one(exc: BaseException, repo_id: str, revision: str | None) -> DownloadError | None:
    from huggingface_hub import errors as hf_errors

    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    if isinstance(exc, hf_errors.GatedRepoError):
        return Unauthorized(f"{where}: gated repo; the token has not been granted access")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return NotFound(f"{where}: revision {revision!r} not found in the repo")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            return Unauthorized(f"401 Unauthorized for {where}: the repo is private/gated (set a valid HF "
                                "token) or does not exist")
        return NotFound(f"404 Not Found: repo {repo_id} does not exist (or is not visible to this token)")
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return NotFound(f"{where}: a listed file is missing on the Hub: {exc.response.url}")
    if isinstance(exc, hf_errors.HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403, 404, 410):
            return error_for_status(status, f"{where} ({exc.response.url})")
    return None


def resolve_plan(repo_id: str, revision: str | None, *, token: str | None, endpoint: str | None,
                 allow: list[str] | None, ignore: list[str] | None, timeout: float) -> HubPlan:
    """Ask the Hub for the commit and file list (with sizes and LFS sha256) of repo_id at revision."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi(endpoint=endpoint, token=token)
    info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    wanted = list(filter_repo_objects(siblings.keys(), allow_patterns=allow, ignore_patterns=ignore))
    files = [HubFile(path=name, size=siblings[name].size, sha256=_lfs_sha256(siblings[name])) for name in wanted]
    if not info.sha:
        raise InvalidSource(f"hf://{repo_id}: the Hub did not return a commit for revision {revision!r}")
    return HubPlan(commit=info.sha, files=files)


def _forget_tree_listing(tree: Path) -> None:
    """Drop huggingface_hub's in-process tree listing for this staging path (it is keyed by path + commit)."""
    try:
        from huggingface_hub import _tree_cache
    except ImportError:
        return
    prefix = str(tree)
    with _tree_cache._IN_MEMORY_TREE_CACHE_LOCK:
        for key in [k for k in _tree_cache._IN_MEMORY_TREE_CACHE if k.startswith(prefix)]:
            del _tree_cache._IN_MEMORY_TREE_CACHE[key]


def fetch_snapshot(repo_id: str, revision: str | None, tree: Path, *, token: str | None,
                   endpoint: str | None, allow: list[str] | None, ignore: list[str] | None,
                   policy: RetryPolicy, state: ProgressState,
                   sleep: Callable[[float], None] = time.sleep) -> HubPlan:
    """Download the repo into `tree` (resuming partial files), retrying transient failures with backoff."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    _forget_tree_listing(tree)
    # The hub reads these module values at call time: they bound how long a silent socket is waited on.
    constants.HF_HUB_DOWNLOAD_TIMEOUT = int(max(1, policy.timeout))
    attempt = 0
    plan: HubPlan | None = None
    while True:
        try:
            if plan is None:
                plan = resolve_plan(repo_id, revision, token=token, endpoint=endpoint, allow=allow,
                                    ignore=ignore, timeout=policy.timeout)
                if not plan.files:
                    raise InvalidSource(f"hf://{repo_id}: no files match allow={allow} ignore={ignore}")
                known = [f.size for f in plan.files]
                state.set(files_total=len(plan.files),
                          bytes_total=sum(known) if all(s is not None for s in known) else None)
            snapshot_download(repo_id, revision=plan.commit, local_dir=str(tree), token=token,
                              endpoint=endpoint, allow_patterns=allow, ignore_patterns=ignore,
                              etag_timeout=policy.timeout, max_workers=4)
            break
        except DownloadError:
            raise
        except Exception as exc:  # noqa: BLE001 - every hub failure is classified right here
            typed = _translate(exc, repo_id, revision)
            if typed is not None:
                raise typed from exc
            attempt += 1
            message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            if attempt > policy.retries:
                raise NetworkError(f"hf://{repo_id}: {message}; gave up after {policy.retries} retries"
                                   ) from exc
            wait = policy.delay(attempt)
            print(f"inferkube-download: {message}; retrying in {wait:.1f}s", file=sys.stderr, flush=True)
            sleep(wait)
    shutil.rmtree(tree / ".cache", ignore_errors=True)
    return plan


def check_against_plan(plan: HubPlan, manifest: Manifest) -> None:
    """Compare downloaded files with the Hub's sizes and LFS sha256; raise ChecksumMismatch if they differ."""
    by_path = {f.path: f for f in manifest.files}
    for expected in plan.files:
        got = by_path.get(expected.path)
        if got is None:
            raise NotFound(f"{expected.path} was listed by the Hub but not downloaded")
        if expected.size is not None and got.size != expected.size:
            raise ChecksumMismatch(f"{expected.path}: size {got.size} differs from the Hub's {expected.size}")
        if expected.sha256 and got.sha256 != expected.sha256:
            raise ChecksumMismatch(f"{expected.path}: sha256 {got.sha256} differs from the Hub's "
                                   f"{expected.sha256}")


def bytes_already_here(tree: Path) -> int:
    """Bytes a previous, interrupted run left in the staging tree (finished files and partial ones)."""
    total = 0
    if not tree.exists():
        return 0
    for path in tree.rglob("*"):
        rel = path.relative_to(tree).parts
        if not path.is_file() or path.is_symlink():
            continue
        if rel[0] == ".cache" and not path.name.endswith(".incomplete"):
            continue
        total += path.stat().st_size
    return total
