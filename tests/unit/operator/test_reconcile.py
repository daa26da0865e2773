"""One reconcile: drift is compared by value, replicas are handed over, and every outcome (refusals too)
ends in the one status write."""

from __future__ import annotations

from typing import Any

from inferkube.operator.apply import PermanentApiError
from inferkube.operator.reconcile import is_subset, reconcile, replicas_to_hand_over
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.world import Children


def test_live_defaults_do_not_count_as_drift() -> None:
    desired = {"spec": {"ports": [{"port": 80, "name": "http"}], "replicas": 2}}
    live = {"spec": {"ports": [{"port": 80, "name": "http", "protocol": "TCP"}], "replicas": 2, "clusterIP": "10.0.0.1"}}
    assert is_subset(desired, live)
    assert not is_subset({"spec": {"replicas": 3}}, live)
    assert not is_subset({"spec": {"ports": [{"port": 80}, {"port": 81}]}}, live)


def test_replicas_are_handed_over_before_an_autoscaler_takes_them() -> None:
    desired = {"kind": "Deployment", "spec": {"template": {}}}  # autoscaled: no replicas sent
    ours = {"manager": "inferkube-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    live = {"metadata": {"managedFields": [ours]}, "spec": {"replicas": 4}}
    assert replicas_to_hand_over(desired, live) == 4
    hpa_owns = {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    assert replicas_to_hand_over(desired, {"metadata": {"managedFields": [hpa_owns]}, "spec": {"replicas": 4}}) is None
    assert replicas_to_hand_over({"kind": "Deployment", "spec": {"replicas": 2}}, live) is None
    assert replicas_to_hand_over(desired, None) is None


class FakeWriter:
    """Records writes; rejects applies of one kind with a 422, like an API server with a stricter schema."""

    def __init__(self, reject_kind: str | None = None) -> None:
        self.reject_kind = reject_kind
        self.writes: list[tuple[str, str]] = []
        self.status_patches: list[dict[str, Any]] = []

    async def apply(self, body: dict[str, Any], field_manager: str = "") -> dict[str, Any]:
        if body["kind"] == self.reject_kind:
            raise PermanentApiError(422, f"422 Unprocessable Entity: {body['kind']} is invalid")
        self.writes.append(("apply", body["kind"]))
        return body

    async def create_if_absent(self, body: dict[str, Any]) -> bool:
        self.writes.append(("create", body["kind"]))
        return True

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.writes.append(("delete", kind))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.status_patches.append(status)
        return {"kind": "InferenceService", "metadata": {"name": name, "namespace": namespace}, "status": status}

    async def pod_log_tail(self, namespace: str, pod: str, lines: int = 20) -> str:
        return ""


def _isvc(**spec: Any) -> dict[str, Any]:
    return {"kind": "InferenceService", "metadata": {"name": "m", "namespace": "ns", "uid": "u1", "generation": 2},
            "spec": {"model": {"source": "hf://o/m", "revision": "r1"}, "replicas": 1, **spec}}


def _merged(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if v is not None}


async def test_an_invalid_spec_is_a_status_written_once_not_an_exception() -> None:
    writer = FakeWriter()
    body = _isvc(resources={"accelerator": "tpu-v9", "gpus": 1})
    outcome = await reconcile(body, Children(), set(), OperatorSettings(), writer)
    assert outcome.refused is not None and outcome.refused.reason == "InvalidSpec"
    assert "unknown accelerator profile 'tpu-v9'" in outcome.refused.message
    assert writer.writes == [] and outcome.status_written and len(writer.status_patches) == 1
    status = writer.status_patches[0]
    assert status["phase"] == "Failed" and status["observedGeneration"] == 2
    again = await reconcile({**body, "status": _merged(status)}, Children(), set(), OperatorSettings(),
                            writer)
    assert again.refused == outcome.refused and not again.status_written and len(writer.status_patches) == 1


async def test_a_rejected_child_is_apply_rejected_through_the_same_status_path() -> None:
    writer = FakeWriter(reject_kind="Service")
    outcome = await reconcile(_isvc(), Children(), set(), OperatorSettings(), writer)
    assert outcome.refused is not None and outcome.refused.reason == "ApplyRejected"
    assert outcome.refused.message.startswith("the API server rejected a child: 422")
    assert writer.writes == [("create", "PersistentVolumeClaim"), ("create", "Job")], "stops at the rejected child"
    [status] = writer.status_patches
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyRejected")


# --- The tenant policy ConfigMap is not watched: what the Deployment's annotation tells after a restart ---

def _policy_children(digest: str | None) -> Any:
    from inferkube.api import contract
    annotations = {contract.ANNOTATION_TENANT_POLICY: digest} if digest else {}
    return Children({"Deployment": [{"kind": "Deployment", "metadata": {"name": "m", "annotations": annotations}}]})


def test_a_restarted_operator_knows_the_policy_it_wrote_from_the_deployment() -> None:
    from inferkube.api.tenantpolicy import TenantPolicy
    from inferkube.operator.apply import OwnerRef, adopt
    from inferkube.operator.builders.tenant_policy import build_tenant_policy, policy_digest
    from inferkube.operator.inputs import ServiceMeta
    from inferkube.operator.reconcile import needs_apply, recall_tenant_policy
    from inferkube.operator.render import Child

    meta, owner = ServiceMeta("m", "ns"), OwnerRef("m", "uid-1")
    policy = TenantPolicy.model_validate({"ceiling": {"tokensPerMinute": 10}})
    child = Child(build_tenant_policy(meta, policy))
    same = _policy_children(policy_digest(meta, policy))
    recall_tenant_policy([child], same, meta, owner)
    assert not needs_apply(child, adopt(child.body, owner), same.get("ConfigMap", "m-tenant-policy")), "no write after a restart"
    other = _policy_children("0123456789abcdef")
    recall_tenant_policy([child], other, meta, owner)
    assert needs_apply(child, adopt(child.body, owner), other.get("ConfigMap", "m-tenant-policy")), "a changed policy is applied"
    gone = _policy_children("0123456789abcdef")
    recall_tenant_policy([], gone, meta, owner)
    stale = gone.get("ConfigMap", "m-tenant-policy")
    assert stale is not None and stale["metadata"]["ownerReferences"][0]["uid"] == "uid-1", "no policy wanted: pruned"
    none = _policy_children(None)
    recall_tenant_policy([child], none, meta, owner)
    assert none.get("ConfigMap", "m-tenant-policy") is None, "never written: nothing to recall"
