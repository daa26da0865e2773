"""Where a download is staged next to its destination, and the rename that puts it into place.

For DEST=/models/llama the downloader uses siblings on the same filesystem (so renames are atomic):

    /models/.llama.inferkube-work/state.json   cache key of the run that owns this work dir
    /models/.llama.inferkube-work/archive.part an archive being fetched (HTTP Range resumes it)
    /models/.llama.inferkube-work/tree/        the copy being built (hf local_dir, or extracted archive)
    /models/.llama.inferkube-previous/         the old copy, only for the instant of the swap

A work dir left by an interrupted run with the same key is resumed; one with another key is wiped.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from inferkube.runtime.download.manifest import CacheKey


@dataclass(frozen=True)
class StagingLayout:
    """Paths used while downloading into `dest`."""

    dest: Path

    @property
    def work(self) -> Path:
        """The staging work directory (sibling of dest)."""
        return self.dest.parent / f".{self.dest.name}.inferkube-work"

    @property
    def tree(self) -> Path:
        """The copy being built; renamed to dest when complete."""
        return self.work / "tree"

    @property
    def archive(self) -> Path:
        """A partially or fully fetched archive."""
        return self.work / "archive.part"

    @property
    def previous(self) -> Path:
        """Where the old copy sits during the swap."""
        return self.dest.parent / f".{self.dest.name}.inferkube-previous"

    @property
    def state_file(self) -> Path:
        """The work dir's owner key."""
        return self.work / "state.json"


def recover_interrupted_swap(layout: StagingLayout) -> None:
    """If a previous run died between the two renames of a swap, put the old copy back."""
    if layout.previous.exists() and not layout.dest.exists():
        os.replace(layout.previous, layout.dest)
    elif layout.previous.exists():
        shutil.rmtree(layout.previous, ignore_errors=True)


def prepare_work_dir(layout: StagingLayout, key: CacheKey) -> bool:
    """Create (or keep, when it belongs to the same key) the work dir; return True if resuming."""
    resuming = False
    if layout.work.exists():
        try:
            owner = json.loads(layout.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            owner = None
        if owner == key.as_dict():
            resuming = True
        else:
            shutil.rmtree(layout.work)
    layout.dest.parent.mkdir(parents=True, exist_ok=True)
    layout.work.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(json.dumps(key.as_dict(), sort_keys=True), encoding="utf-8")
    return resuming


def promote(layout: StagingLayout) -> None:
    """Move the finished tree into place, replacing any previous copy, and remove the work dir."""
    if layout.previous.exists():
        shutil.rmtree(layout.previous)
    if layout.dest.exists() or layout.dest.is_symlink():
        os.replace(layout.dest, layout.previous)
    os.replace(layout.tree, layout.dest)
    shutil.rmtree(layout.previous, ignore_errors=True)
    shutil.rmtree(layout.work, ignore_errors=True)


def bytes_on_disk(root: Path) -> int:
    """Sum the sizes of regular files under root (0 if it does not exist)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_size
    return total
