"""Below each source root, a module's path is its import path (what type checkers and IDEs assume)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIND = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
ROOTS = [REPO / root for root in FIND["where"]]


def test_no_package_dir_remapping() -> None:
    """No `package-dir` table: nothing maps a folder to a different import name."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in config


def test_every_module_imports_from_its_own_path() -> None:
    """For every .py file below a source root, the interpreter finds that module at exactly that file."""
    checked = 0
    for root in ROOTS:
        assert not (root / "inferkube" / "__init__.py").exists(), "inferkube is a namespace package shared by the roots"
        for path in sorted((root / "inferkube").rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.origin is not None, name
            assert Path(spec.origin).resolve() == path.resolve(), f"{name} imports from {spec.origin}, not {path}"
            checked += 1
    assert checked > 50


def test_package_data_ships_beside_the_code() -> None:
    """The Redis limiter's Lua script is package data of inferkube.runtime.tenancy (found through the package)."""
    from importlib.resources import files

    assert "redis.call" in (files("inferkube.runtime.tenancy") / "ratelimit.lua").read_text()
