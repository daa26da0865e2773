"""The inferkube CLI as a user runs it: a subprocess, its output and exit code, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inferkube.operator.crd import render_crd_yaml, render_quota_crd_yaml
from tests.unit.operator.conftest import EXAMPLES, REPO


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferkube.operator.cli", *args],
        capture_output=True, text=True, input=stdin, timeout=60, cwd=REPO,
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_render_prints_every_child_as_yaml() -> None:
    result = run("render", "-f", str(REPO / "manifests/examples/llama-70b-tp4-h100.yaml"))
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == [
        "PersistentVolumeClaim", "Job", "Service", "PodDisruptionBudget", "Deployment", "ServiceMonitor",
        "PrometheusRule",
    ]
    assert "&id" not in result.stdout, "no YAML anchors in output a user pipes to kubectl"
    assert result.stderr == "", "no quota in the input: no decisions to report"


def test_render_reads_stdin_and_cache_pending_has_no_deployment() -> None:
    text = (REPO / "manifests/examples/llama-8b-single-gpu.yaml").read_text()
    result = run("render", "-f", "-", "--cache-pending", stdin=text)
    assert result.returncode == 0, result.stderr
    assert "Deployment" not in [d["kind"] for d in yaml.safe_load_all(result.stdout)]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_validate_accepts_every_example(path: Path) -> None:
    result = run("validate", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_crd_prints_the_generated_crds(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(run("crd").stdout) if d]
    assert [d["spec"]["names"]["kind"] for d in docs] == ["InferenceService", "InferenceQuota"]
    assert run("crd", "-o", str(tmp_path)).returncode == 0
    assert (tmp_path / "serving.inferkube.dev_inferenceservices.yaml").read_text() == render_crd_yaml()
    assert (tmp_path / "serving.inferkube.dev_inferencequotas.yaml").read_text() == render_quota_crd_yaml()


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    assert_clean_failure(run("validate", "-f", str(bad)), "not valid YAML")
    assert_clean_failure(run("render", "-f", str(bad)), "not valid YAML")


def test_missing_file() -> None:
    assert_clean_failure(run("render", "-f", "/nonexistent/x.yaml"), "cannot read /nonexistent/x.yaml")


def test_wrong_kind(tmp_path: Path) -> None:
    f = tmp_path / "cm.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert_clean_failure(run("validate", "-f", str(f)), "document 1 is 'ConfigMap'", "expected kind InferenceService or InferenceQuota")


def test_every_problem_is_printed_with_its_path(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "apiVersion: serving.inferkube.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: bad}\n"
        "spec:\n  model: {source: 'hf://o/m', revison: typo}\n  replicas: 2\n"
        "  autoscaling: {minReplicas: 5, maxReplicas: 2, targetQueueDepth: 3}\n"
    )
    result = run("validate", "-f", str(f))
    assert_clean_failure(
        result,
        ".spec.model.revison: unknown field",
        ".spec: set either replicas or autoscaling",
        ".spec.autoscaling.minReplicas: autoscaling.minReplicas must be <=",
    )
    assert_clean_failure(run("render", "-f", str(f)), "unknown field")


def test_unknown_accelerator_profile_renders_a_clear_error(tmp_path: Path) -> None:
    obj = yaml.safe_load((REPO / "manifests/examples/llama-8b-single-gpu.yaml").read_text())
    obj["spec"]["resources"]["accelerator"] = "tpu-v5"
    f = tmp_path / "tpu.yaml"
    f.write_text(yaml.safe_dump(obj))
    assert_clean_failure(run("render", "-f", str(f)), "llama-8b: unknown accelerator profile 'tpu-v5'")


def test_engine_args_that_would_break_token_accounting_are_refused(tmp_path: Path) -> None:
    obj = yaml.safe_load((REPO / "manifests/examples/llama-8b-single-gpu.yaml").read_text())
    obj["spec"].setdefault("runtime", {})["engineArgs"] = ["--enforce-eager", "--disable_log_stats"]
    f = tmp_path / "nostats.yaml"
    f.write_text(yaml.safe_dump(obj))
    assert_clean_failure(run("validate", "-f", str(f)), ".spec.runtime.engineArgs", "'--disable-log-stats' is not allowed")


def test_settings_file_adds_profiles(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "runtimeImage: registry.local/runtime:1\n"
        "acceleratorProfiles:\n  tpu-v5:\n    resourceName: google.com/tpu\n"
        "    nodeSelector: {cloud.google.com/gke-tpu-accelerator: tpu-v5-lite-podslice}\n"
    )
    obj = yaml.safe_load((REPO / "manifests/examples/llama-8b-single-gpu.yaml").read_text())
    obj["spec"]["resources"]["accelerator"] = "tpu-v5"
    f = tmp_path / "tpu.yaml"
    f.write_text(yaml.safe_dump(obj))
    result = run("render", "-f", str(f), "--settings", str(settings))
    assert result.returncode == 0, result.stderr
    dep = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/runtime:1"
    assert container["resources"]["limits"]["google.com/tpu"] == "1"
    bad = tmp_path / "bad-settings.yaml"
    bad.write_text("acceleratorProfiles: {x: {nodeSelector: {}}}\n")
    assert_clean_failure(run("render", "-f", str(f), "--settings", str(bad)), "invalid operator settings")


def test_operator_log_format_flag() -> None:
    from inferkube.operator.main import build_parser

    assert build_parser().parse_args([]).log_format == "text"
    assert build_parser().parse_args(["--log-format", "json"]).log_format == "json"
