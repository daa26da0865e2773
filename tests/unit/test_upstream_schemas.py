"""The repository stands alone: upstream CRD schemas come from a configurable folder, and without them
only the validations that need them skip, saying which file is missing and where to get it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.schemas import UPSTREAM_SCHEMAS_ENV, UPSTREAM_SOURCES, require_upstream, upstream_dir

REPO = Path(__file__).resolve().parents[2]
SERVICEMONITOR = "monitoring.coreos.com_servicemonitors.yaml"
# Tests that need an upstream CRD: they must skip (not fail) in a clone without the schemas.
UPSTREAM_TESTS = [
    "tests/unit/operator/test_rendered_objects_are_valid.py::test_servicemonitor_and_scaledobject_pass_upstream_crds",
    "tests/integration/operator/test_reconcile.py::test_servicemonitor_appears_when_its_crd_is_installed",
    "tests/integration/operator/test_reconcile.py::test_keda_scaledobject_appears_when_keda_is_installed",
]


def test_missing_schema_skips_naming_the_file_and_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UPSTREAM_SCHEMAS_ENV, str(tmp_path))
    assert upstream_dir() == tmp_path
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_upstream(SERVICEMONITOR)
    message = str(skipped.value)
    assert SERVICEMONITOR in message and UPSTREAM_SCHEMAS_ENV in message
    assert "prometheus-operator/prometheus-operator v0.93.0" in message
    (tmp_path / SERVICEMONITOR).write_text("kind: CustomResourceDefinition\n")
    require_upstream(SERVICEMONITOR)  # present now: no skip


def test_docs_list_every_upstream_schema_and_name_no_file_outside_the_repository() -> None:
    testing = (REPO / "docs" / "testing.md").read_text()
    for name, source in UPSTREAM_SOURCES.items():
        assert name in testing and source.split()[0] in testing, name
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert not re.search(r"\.\./(shared|\w+/)", doc.read_text()), f"{doc.name} points outside the repository"


def _clone(target: Path) -> Path:
    """The tracked files of this checkout, copied where no ../shared/schemas exists (a fresh clone)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target / rel)
    return target


def test_a_clone_without_upstream_schemas_skips_only_those_tests(tmp_path: Path) -> None:
    clone = _clone(tmp_path / "elsewhere" / "inferkube")
    env = {k: v for k, v in os.environ.items() if k != UPSTREAM_SCHEMAS_ENV}
    env["PYTHONPATH"] = os.pathsep.join(str(clone / root) for root in ("operator", "runtime", "."))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *UPSTREAM_TESTS],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "failed" not in result.stdout and "error" not in result.stdout.lower(), result.stdout[-3000:]
    assert SERVICEMONITOR in result.stdout and "keda.sh_scaledobjects.yaml from kedacore/keda" in result.stdout
    assert "passed" in result.stdout, "examples without ServiceMonitor or ScaledObject still validate"
