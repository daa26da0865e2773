"""FileWatcher: sees the kubelet's `..data` symlink swap, applies good versions, keeps the old one on a broken file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from inferkube.runtime.reload import FileWatcher, file_signature


class KubeletVolume:
    """A Secret/ConfigMap volume as the kubelet writes it: KEY -> ..data/KEY, ..data -> ..<version>/."""

    def __init__(self, root: Path, key: str) -> None:
        self.root, self.key, self.version = root, key, 0

    def publish(self, text: str) -> Path:
        self.version += 1
        target = self.root / f"..2026_12_01_{self.version:04d}"
        target.mkdir()
        (target / self.key).write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(target.name)
        os.replace(tmp, self.root / "..data")  # the atomic swap
        link = self.root / self.key
        if not link.is_symlink():
            link.symlink_to(f"..data/{self.key}")
        return link


def parse(path: Path) -> int:
    text = path.read_text()
    if not text.strip().isdigit():
        raise ValueError("not a number (line 1)")
    return int(text)


def test_a_symlink_swap_is_seen_and_applied(tmp_path: Path) -> None:
    vol = KubeletVolume(tmp_path, "policy.yaml")
    path = vol.publish("1")
    applied: list[int] = []
    watcher = FileWatcher(path, parse, applied.append, name="policy")
    assert watcher.check() is False, "nothing changed yet"
    vol.publish("2")
    assert watcher.check() is True and applied == [2]
    assert watcher.check() is False and applied == [2], "one reload per version"


def test_same_content_in_a_new_version_still_reloads(tmp_path: Path) -> None:
    vol = KubeletVolume(tmp_path, "f")
    watcher = FileWatcher(vol.publish("5"), parse, lambda _: None, name="f")
    vol.publish("5")
    assert watcher.check() is True


def test_a_broken_version_keeps_the_old_value_and_is_counted(tmp_path: Path) -> None:
    vol = KubeletVolume(tmp_path, "f")
    applied: list[int] = []
    errors: list[str] = []
    watcher = FileWatcher(vol.publish("1"), parse, applied.append, name="tenants", on_error=errors.append)
    vol.publish("oops")
    assert watcher.check() is False and applied == [] and watcher.counts.errors == 1
    assert "keeping the previous one" in errors[0] and "not a number" in errors[0]
    assert watcher.check() is False and watcher.counts.errors == 1, "the same broken version is reported once"
    vol.publish("3")
    assert watcher.check() is True and applied == [3] and watcher.counts.reloads == 1


def test_a_file_that_disappears_and_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("1")
    seen: list[int | None] = []

    def load(p: Path) -> int | None:
        return parse(p) if p.exists() else None

    watcher = FileWatcher(path, load, seen.append, name="f")
    path.unlink()
    assert file_signature(path) is None
    assert watcher.check() is True and seen == [None]
    path.write_text("4")
    assert watcher.check() is True and seen == [None, 4]


async def test_run_polls_until_cancelled(tmp_path: Path) -> None:
    vol = KubeletVolume(tmp_path, "f")
    applied: list[int] = []
    watcher = FileWatcher(vol.publish("1"), parse, applied.append, name="f", interval=0.01)
    task = asyncio.ensure_future(watcher.run())
    vol.publish("9")
    for _ in range(200):
        if applied:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert applied == [9]
