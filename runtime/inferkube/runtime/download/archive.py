"""Extract tar / tar.gz / zip archives safely: no absolute paths, no `..`, no links that leave the tree."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from inferkube.runtime.download.errors import InvalidSource
from inferkube.runtime.download.progress import ProgressState


def _check_name(name: str) -> PurePosixPath:
    """Reject member names that are absolute or climb out of the destination."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InvalidSource(f"unsafe archive: member {name!r} has an absolute path")
    if ".." in path.parts:
        raise InvalidSource(f"unsafe archive: member {name!r} escapes the destination with '..'")
    return path


def _check_link(name: str, target: str, *, hard: bool = False) -> None:
    """Reject a link whose target resolves outside the destination."""
    member = _check_name(name)
    if target.startswith("/"):
        raise InvalidSource(f"unsafe archive: link {name!r} points to absolute path {target!r}")
    base = PurePosixPath() if hard else member.parent
    depth = len(base.parts)
    for part in PurePosixPath(target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                raise InvalidSource(f"unsafe archive: link {name!r} -> {target!r} escapes the destination")
        elif part != ".":
            depth += 1


def _extract_tar(archive: Path, dest: Path, state: ProgressState) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_name(member.name)
            if member.issym():
                _check_link(member.name, member.linkname)
            elif member.islnk():
                _check_link(member.name, member.linkname, hard=True)
            elif not (member.isfile() or member.isdir()):
                raise InvalidSource(f"unsafe archive: member {member.name!r} is a device or fifo")
        files = [m for m in members if m.isfile()]
        state.set(files_total=len(files), files_done=0)
        # Python's "data" filter is a second line of defence (also strips setuid bits and owners).
        for member in members:
            tar.extract(member, dest, filter="data")
            if member.isfile():
                state.set(files_done=state.files_done + 1)


def _extract_zip(archive: Path, dest: Path, state: ProgressState) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        links: list[tuple[zipfile.ZipInfo, str]] = []
        for info in infos:
            _check_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "replace")
                _check_link(info.filename, target)
                links.append((info, target))
        files = [i for i in infos if not i.is_dir() and all(i is not link for link, _ in links)]
        state.set(files_total=len(files), files_done=0)
        for info in infos:
            if any(info is link for link, _ in links):
                continue
            zf.extract(info, dest)
            if not info.is_dir():
                state.set(files_done=state.files_done + 1)
        root = os.path.realpath(dest)
        created: list[tuple[str, Path]] = []
        for info, target in links:
            # Links made earlier may redirect this one's folder (`x/y -> ..` then `x/y/z -> ..`):
            # check where it really lands, on disk, before and after creating it.
            member = PurePosixPath(info.filename.replace("\\", "/"))
            parent = Path(os.path.realpath(dest / member.parent))
            _inside(root, str(parent), info.filename, target)
            _inside(root, os.path.realpath(parent / target), info.filename, target)
            parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, parent / member.name)
            created.append((info.filename, parent / member.name))
        for name, path in created:  # a later link can re-point an earlier one's target
            _inside(root, os.path.realpath(path), name, os.readlink(path))


def _inside(root: str, resolved: str, name: str, target: str) -> None:
    """Refuse a link whose real location or target is outside `root`."""
    if resolved != root and not resolved.startswith(root + os.sep):
        raise InvalidSource(f"unsafe archive: link {name!r} -> {target!r} escapes the destination")


def _flatten_single_top_dir(dest: Path) -> None:
    """If the archive held one top-level folder (e.g. `model/...`), move its content up into dest."""
    entries = list(dest.iterdir())
    if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
        return
    inner = entries[0]
    holder = dest.parent / (dest.name + ".flatten")
    if holder.exists():
        shutil.rmtree(holder)
    os.replace(inner, holder)
    dest.rmdir()
    os.replace(holder, dest)


def extract_archive(archive: Path, dest: Path, state: ProgressState) -> None:
    """Extract a tar (any compression) or zip archive into an empty dest, refusing unsafe members."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, state)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, dest, state)
        else:
            raise InvalidSource("the downloaded file is not a tar, tar.gz or zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InvalidSource(f"cannot extract the archive (corrupt or truncated?): {exc}") from exc
    if not any(dest.iterdir()):
        raise InvalidSource("the archive is empty")
    _flatten_single_top_dir(dest)
