"""Every rendered PrometheusRule passes `promtool check rules`; `promtool test rules` proves each alert
fires after its `for:` duration on bad input series and stays silent on healthy ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inferkube.api import contract
from tests.prometheus import promtool
from tests.unit.operator.conftest import EXAMPLES, by_kind, load_example, render

NS, NAME = "llm", "qwen-7b"
SEL = f'namespace="{NS}",{contract.METRIC_LABEL_ISVC}="{NAME}"'
POD = "qwen-7b-5d8f9c-abcde"


def _rule_groups(obj: dict[str, Any]) -> dict[str, Any]:
    """The rule groups of an InferenceService's PrometheusRule (alerts switched on where an example has them off)."""
    obj = {**obj, "spec": {**obj["spec"], "monitoring": {**obj["spec"].get("monitoring", {}),
                                                          "serviceMonitor": True, "alertRules": True}}}
    rule = by_kind(render(obj, monitoring_api=True, alerting_api=True))["PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


def _rules_by_name(groups: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups["groups"] for r in g["rules"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_rendered_rule_file_passes_promtool_check(path: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(_rule_groups(load_example(path))))
    done = promtool("check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr


def _expect(rule: dict[str, Any], series_labels: dict[str, str]) -> dict[str, Any]:
    """The alert promtool should see: the series' labels plus the rule's, and the rule's annotations."""
    return {"exp_labels": {**series_labels, **rule["labels"]}, "exp_annotations": rule["annotations"]}


def _case(name: str, series: list[tuple[str, str]], quiet_at: str, fire_at: str | None,
          rule: dict[str, Any], alert_labels: dict[str, str]) -> dict[str, Any]:
    """One promtool test: still quiet at `quiet_at` (inside `for:`), firing at `fire_at` (None: never)."""
    checks = [{"eval_time": quiet_at, "alertname": name, "exp_alerts": []}]
    checks.append({"eval_time": fire_at or "30m", "alertname": name,
                   "exp_alerts": [_expect(rule, alert_labels)] if fire_at else []})
    return {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": checks}


def _cases(rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each alert: a case where it fires after `for:`, and one where it never does."""
    up = f'up{{{SEL},pod="{POD}"}}'
    up_labels = {"namespace": NS, contract.METRIC_LABEL_ISVC: NAME, "pod": POD}
    req = contract.METRIC_REQUESTS_TOTAL
    ok, err = f'{req}{{{SEL},status="200"}}', f'{req}{{{SEL},status="500"}}'
    queue, kv = f"{contract.METRIC_QUEUE_DEPTH}{{{SEL}}}", f"{contract.METRIC_KV_CACHE_USAGE}{{{SEL}}}"
    backend = f"{contract.METRIC_RATELIMIT_BACKEND_ERRORS_TOTAL}{{{SEL}}}"
    r = rules
    return [
        _case("InferkubeReplicaDown", [(up, "0x40")], "4m", "6m", r["InferkubeReplicaDown"], up_labels),
        _case("InferkubeReplicaDown", [(up, "1x40")], "4m", None, r["InferkubeReplicaDown"], up_labels),
        _case("InferkubeHighErrorRate", [(ok, "0+90x40"), (err, "0+10x40")], "9m", "15m",
              r["InferkubeHighErrorRate"], {}),
        _case("InferkubeHighErrorRate", [(ok, "0+99x40"), (err, "0+1x40")], "9m", None,
              r["InferkubeHighErrorRate"], {}),
        _case("InferkubeQueueBackingUp", [(queue, "20x40")], "9m", "12m", r["InferkubeQueueBackingUp"], {}),
        _case("InferkubeQueueBackingUp", [(queue, "10x40")], "9m", None, r["InferkubeQueueBackingUp"], {}),
        _case("InferkubeKVCacheSaturated", [(kv, "0.97x40")], "14m", "17m", r["InferkubeKVCacheSaturated"], {}),
        _case("InferkubeKVCacheSaturated", [(kv, "0.9x40")], "14m", None, r["InferkubeKVCacheSaturated"], {}),
        _case("InferkubeRateLimitBackendErrors", [(backend, "0+1x40")], "4m", "8m",
              r["InferkubeRateLimitBackendErrors"], {}),
        _case("InferkubeRateLimitBackendErrors", [(backend, "5x40")], "4m", None,
              r["InferkubeRateLimitBackendErrors"], {}),
    ]


def test_each_alert_fires_after_its_for_duration_and_not_on_healthy_series(tmp_path: Path) -> None:
    example = load_example(next(p for p in EXAMPLES if p.stem == "qwen-autoscaled-queue-depth"))
    assert (example["metadata"]["namespace"], example["metadata"]["name"]) == (NS, NAME)
    groups = _rule_groups(example)
    rules = _rules_by_name(groups)
    cases = _cases(rules)
    assert {c["alert_rule_test"][0]["alertname"] for c in cases} == set(rules), "every alert has a test"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": cases}))
    done = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_alert_expression_is_caught(tmp_path: Path) -> None:
    groups = _rule_groups(load_example(EXAMPLES[0]))
    groups["groups"][0]["rules"][0]["expr"] += " >"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    assert promtool("check", "rules", str(tmp_path / "rules.yaml")).returncode != 0
