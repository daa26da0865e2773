"""The manifest the downloader writes next to a complete copy, and the cheap check that re-uses it.

Re-use check (what a re-run does before touching the network): the manifest's source, revision,
patterns and expected sha256 must equal the request, and every listed file must exist as a regular
file with exactly the recorded size. Checksums are recorded for audit but not re-hashed on re-runs:
hashing gigabytes on every pod start would defeat the cache; the copy was hashed once when written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferkube.api.contract import DOWNLOAD_MANIFEST_FILE

MANIFEST_VERSION = 1
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class CacheKey:
    """What identifies a cached copy: same key on a re-run means nothing needs downloading."""

    source: str
    revision: str | None = None
    sha256: str | None = None
    allow_patterns: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the key as the JSON fields stored in manifest and staging state."""
        return {"source": self.source, "revision": self.revision, "sha256": self.sha256,
                "allowPatterns": list(self.allow_patterns), "ignorePatterns": list(self.ignore_patterns)}

    def digest(self) -> str:
        """Return a short stable hash of the key (names the staging state)."""
        raw = json.dumps(self.as_dict(), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


@dataclass
class ManifestFile:
    """One file of a cached copy."""

    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """The content of the manifest file."""

    key: CacheKey
    resolved_revision: str | None
    files: list[ManifestFile] = field(default_factory=list)
    finished_at: str = ""

    @property
    def total_bytes(self) -> int:
        """Sum of file sizes."""
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        """Serialise to the manifest JSON document."""
        return {
            "version": MANIFEST_VERSION,
            **self.key.as_dict(),
            "resolvedRevision": self.resolved_revision,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "totalBytes": self.total_bytes,
            "finishedAt": self.finished_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Parse a manifest JSON document (raises KeyError/TypeError/ValueError when malformed)."""
        key = CacheKey(source=data["source"], revision=data.get("revision"), sha256=data.get("sha256"),
                       allow_patterns=tuple(data.get("allowPatterns") or ()),
                       ignore_patterns=tuple(data.get("ignorePatterns") or ()))
        files = [ManifestFile(path=str(f["path"]), size=int(f["size"]), sha256=str(f["sha256"]))
                 for f in data["files"]]
        return cls(key=key, resolved_revision=data.get("resolvedRevision"), files=files,
                   finished_at=str(data.get("finishedAt", "")))


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(root: Path) -> list[Path]:
    """Return every regular file under root (sorted, symlinks not followed, the manifest excluded)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            if path.parent == root and name == DOWNLOAD_MANIFEST_FILE:
                continue
            found.append(path)
    return found


def build_manifest(root: Path, key: CacheKey, resolved_revision: str | None) -> Manifest:
    """Hash every file under root and return the manifest describing it."""
    files = [ManifestFile(path=p.relative_to(root).as_posix(), size=p.stat().st_size, sha256=sha256_file(p))
             for p in list_files(root)]
    finished = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Manifest(key=key, resolved_revision=resolved_revision, files=files, finished_at=finished)


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write the manifest into root (via a temporary file and rename) and return its path."""
    path = root / DOWNLOAD_MANIFEST_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(root: Path) -> Manifest | None:
    """Read root's manifest; None when it is missing or unreadable."""
    try:
        data = json.loads((root / DOWNLOAD_MANIFEST_FILE).read_text(encoding="utf-8"))
        return Manifest.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verify_by_size(root: Path, manifest: Manifest) -> str | None:
    """Check every manifest file exists with its recorded size; return the first problem or None."""
    if not manifest.files:
        return "manifest lists no files"
    for entry in manifest.files:
        path = root / entry.path
        try:
            st = path.lstat()
        except OSError:
            return f"missing file {entry.path}"
        if not path.is_file() or path.is_symlink():
            return f"not a regular file: {entry.path}"
        if st.st_size != entry.size:
            return f"size of {entry.path} is {st.st_size}, manifest says {entry.size}"
    return None


def complete_copy(root: Path, key: CacheKey) -> Manifest | None:
    """Return root's manifest when root holds a complete copy for `key` (see module docstring), else None."""
    manifest = read_manifest(root)
    if manifest is None or manifest.key != key:
        return None
    if verify_by_size(root, manifest) is not None:
        return None
    return manifest
