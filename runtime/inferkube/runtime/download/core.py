"""The download flow: reuse a complete copy, else stage, fetch, verify, write a manifest, swap in."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from inferkube.api.contract import CACHE_MOUNT_PATH
from inferkube.runtime.download import hf
from inferkube.runtime.download.archive import extract_archive
from inferkube.runtime.download.errors import ChecksumMismatch, InvalidSource, NotFound
from inferkube.runtime.download.http_fetch import RetryPolicy, fetch_to_file
from inferkube.runtime.download.manifest import (
    CacheKey,
    build_manifest,
    complete_copy,
    list_files,
    write_manifest,
)
from inferkube.runtime.download.progress import ProgressState
from inferkube.runtime.download.staging import (
    StagingLayout,
    bytes_on_disk,
    prepare_work_dir,
    promote,
    recover_interrupted_swap,
)

SCHEME_HF = "hf"
SCHEME_PVC = "pvc"
ARCHIVE_SCHEMES = ("https", "http")


@dataclass
class DownloadRequest:
    """Everything one `inferkube-runtime download` run needs."""

    source: str
    dest: Path
    revision: str | None = None
    sha256: str | None = None
    allow_patterns: list[str] = field(default_factory=list)
    ignore_patterns: list[str] = field(default_factory=list)
    hf_token: str | None = None
    hf_endpoint: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    pvc_root: Path = Path(CACHE_MOUNT_PATH)

    def cache_key(self) -> CacheKey:
        """The identity of the copy this request asks for."""
        return CacheKey(source=self.source, revision=self.revision,
                        sha256=self.sha256.lower() if self.sha256 else None,
                        allow_patterns=tuple(self.allow_patterns),
                        ignore_patterns=tuple(self.ignore_patterns))


@dataclass
class DownloadResult:
    """What the run left in dest and what it cost."""

    path: Path
    revision: str | None
    total_bytes: int
    files: int
    bytes_downloaded: int
    reused: bool


def _validate(request: DownloadRequest) -> tuple[str, str]:
    """Return (scheme, rest) of the source or raise InvalidSource with the reason."""
    parts = urlsplit(request.source)
    scheme = parts.scheme.lower()
    if scheme == SCHEME_HF:
        repo = (parts.netloc + parts.path).strip("/")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise InvalidSource(f"hf source must look like hf://org/name, got {request.source!r}")
        return scheme, repo
    if scheme in ARCHIVE_SCHEMES:
        if not parts.netloc:
            raise InvalidSource(f"archive URL has no host: {request.source!r}")
        if request.sha256 and (len(request.sha256) != 64
                               or any(c not in "0123456789abcdefABCDEF" for c in request.sha256)):
            raise InvalidSource("--sha256 must be 64 hex characters")
        return scheme, request.source
    if scheme == SCHEME_PVC:
        if not parts.netloc:
            raise InvalidSource(f"pvc source must look like pvc://claim/path, got {request.source!r}")
        return scheme, parts.path.strip("/")
    raise InvalidSource(f"unsupported source {request.source!r}: use hf://, https:// or pvc://")


def _verify_pvc(request: DownloadRequest, subpath: str, state: ProgressState) -> DownloadResult:
    """A pvc:// source is already on a mounted claim: check it is a non-empty directory, download nothing."""
    path = (request.pvc_root / subpath) if subpath else request.pvc_root
    if request.dest.resolve() != path.resolve():
        raise InvalidSource(f"pvc source resolves to {path} (claim mounted at {request.pvc_root}); "
                            f"--dest must be that path, got {request.dest}")
    if not path.is_dir():
        raise NotFound(f"{request.source}: {path} does not exist or is not a directory")
    files = list_files(path)
    if not files:
        raise InvalidSource(f"{request.source}: {path} is empty")
    total = sum(p.stat().st_size for p in files)
    state.set(bytes_total=total, bytes_done=total, files_total=len(files), files_done=len(files))
    return DownloadResult(path=path, revision=request.revision, total_bytes=total, files=len(files),
                          bytes_downloaded=0, reused=True)


def download(request: DownloadRequest, state: ProgressState | None = None) -> DownloadResult:
    """Make request.dest hold a complete, verified copy of request.source; raise DownloadError otherwise."""
    state = state or ProgressState()
    scheme, rest = _validate(request)
    if scheme == SCHEME_PVC:
        return _verify_pvc(request, rest, state)
    dest = request.dest.absolute()
    key = request.cache_key()
    layout = StagingLayout(dest)
    recover_interrupted_swap(layout)
    existing = complete_copy(dest, key)
    if existing is not None:
        total = existing.total_bytes
        state.set(bytes_total=total, bytes_done=total, files_total=len(existing.files),
                  files_done=len(existing.files))
        return DownloadResult(path=dest, revision=existing.resolved_revision, total_bytes=total,
                              files=len(existing.files), bytes_downloaded=0, reused=True)
    prepare_work_dir(layout, key)
    try:
        if scheme == SCHEME_HF:
            start_bytes = hf.bytes_already_here(layout.tree)
            state.measure = lambda: bytes_on_disk(layout.work)
            plan = hf.fetch_snapshot(rest, request.revision, layout.tree, token=request.hf_token,
                                     endpoint=request.hf_endpoint, allow=request.allow_patterns or None,
                                     ignore=request.ignore_patterns or None, policy=request.policy,
                                     state=state)
            state.measure = None
            resolved: str | None = plan.commit
            manifest = build_manifest(layout.tree, key, resolved)
            hf.check_against_plan(plan, manifest)
            fetched = max(0, manifest.total_bytes - start_bytes)
        else:
            result = fetch_to_file(rest, layout.archive, policy=request.policy, state=state,
                                   expected_sha256=request.sha256)
            extract_archive(layout.archive, layout.tree, state)
            resolved = request.revision or (request.sha256.lower() if request.sha256 else None)
            manifest = build_manifest(layout.tree, key, resolved)
            fetched = result.fetched
    except (ChecksumMismatch, InvalidSource):
        shutil.rmtree(layout.work, ignore_errors=True)  # never resume from bytes known to be wrong
        raise
    write_manifest(layout.tree, manifest)
    promote(layout)
    transfer_total = state.bytes_total or manifest.total_bytes  # archive size for archives
    state.set(bytes_total=transfer_total, bytes_done=transfer_total,
              files_total=len(manifest.files), files_done=len(manifest.files))
    return DownloadResult(path=dest, revision=resolved, total_bytes=manifest.total_bytes,
                          files=len(manifest.files), bytes_downloaded=fetched, reused=False)
