"""The `inferkube` CLI works from the `operator` extra alone (what Dockerfile.operator installs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "examples" / "llama-8b-single-gpu.yaml"


def test_dockerfile_installs_the_operator_extra() -> None:
    assert "pip install --no-cache-dir \".[operator]\"" in (REPO / "Dockerfile.operator").read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_validate_and_render_in_a_fresh_venv_with_only_the_operator_extra(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    for root in ("operator", "runtime"):
        shutil.copytree(REPO / root, source / root, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{source}[operator]"],
                         capture_output=True, text=True, timeout=240)
    assert pip.returncode == 0, pip.stderr[-3000:]
    cli = str(venv / "bin" / "inferkube")
    validate = subprocess.run([cli, "validate", "-f", str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert validate.returncode == 0, validate.stderr
    assert validate.stdout.strip().endswith("valid")
    render = subprocess.run([cli, "render", "-f", str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert render.returncode == 0, render.stderr
    assert "Deployment" in [d["kind"] for d in yaml.safe_load_all(render.stdout)]
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("replicas:", "replicaz:", 1))
    rejected = subprocess.run([cli, "validate", "-f", str(bad)], capture_output=True, text=True, timeout=60)
    assert rejected.returncode == 1 and "unknown field" in rejected.stderr and "Traceback" not in rejected.stderr
    runtime_stack = subprocess.run([str(venv / "bin" / "python"), "-c", "import fastapi"], capture_output=True)
    assert runtime_stack.returncode != 0, "only the operator's dependencies are installed"
