"""prometheus-adapter rules that serve every HPA scaling signal as a per-pod custom metric.

Generated from the same signals the HPA builder targets, so the names the HPA asks for and the names the
adapter serves cannot drift apart. The adapter fills the `<<...>>` placeholders per API request:
`<<.Series>>` with the series name, `<<.LabelMatchers>>` with `namespace="NS",pod=~"a|b"`, and
`<<.GroupBy>>` with `pod`.
"""

from __future__ import annotations

from typing import Any

from inferkube.operator.monitoring.signals import POD_LABELS, SIGNALS, ScalingSignal

DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc"
DEFAULT_PROMETHEUS_PORT = 9090


def adapter_rule(signal: ScalingSignal) -> dict[str, Any]:
    """One adapter rule: the signal's series, attached to its pod and namespace, one number per pod."""
    present = ",".join(f'{label}!=""' for label in POD_LABELS)
    return {
        "seriesQuery": f"{signal.metric}{{{present}}}",
        "resources": {"overrides": {label: {"resource": label} for label in POD_LABELS}},
        "name": {"matches": f"^{signal.metric}$", "as": signal.metric},
        "metricsQuery": f"{signal.per_pod}(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)",
    }


def adapter_rules() -> list[dict[str, Any]]:
    """Rules for every scaling signal, in the order the API lists them."""
    return [adapter_rule(signal) for signal in SIGNALS]


def adapter_config() -> dict[str, Any]:
    """The adapter's own config file (`--config=config.yaml`)."""
    return {"rules": adapter_rules()}


def adapter_helm_values() -> dict[str, Any]:
    """Values for the prometheus-community/prometheus-adapter Helm chart: only inferkube's rules."""
    return {
        "prometheus": {"url": DEFAULT_PROMETHEUS_URL, "port": DEFAULT_PROMETHEUS_PORT},
        "rules": {"default": False, "custom": adapter_rules()},
    }
