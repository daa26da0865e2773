"""The runtime Deployment: GPU-affine, restricted, drained on shutdown, loading the model from disk."""

from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.builders.tenant_policy import policy_digest, service_policy
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings

PROBE_PERIOD_SECONDS = 10
TENANTS_VOLUME = "tenants"
POLICY_VOLUME = "tenant-policy"
SHM_VOLUME = "dshm"
ENCODER_DIR = f"{common.TMP_PATH}/response-cache-encoder"  # the semantic encoder, fetched at pod start


def runtime_args(spec: InferenceServiceSpec, meta: ServiceMeta, key: str) -> list[str]:
    """Arguments of ``inferkube-runtime serve`` for this spec."""
    rt = spec.runtime
    args = [
        "serve",
        "--model", common.model_path(spec, key),
        "--served-model-name", names.served_model_name(spec, meta),
        "--host", "0.0.0.0",
        "--port", str(contract.RUNTIME_PORT),
        "--tensor-parallel-size", str(rt.tensor_parallel_size),
        "--drain-timeout", str(rt.drain_timeout_seconds),
    ]
    optional: list[tuple[str, Any]] = [
        ("--dtype", rt.dtype),
        ("--max-model-len", rt.max_model_len),
        ("--gpu-memory-utilization", rt.gpu_memory_utilization),
        ("--max-num-seqs", rt.max_num_seqs),
        ("--max-in-flight", spec.api.max_in_flight),
        ("--default-requests-per-minute", spec.api.default_requests_per_minute),
        ("--default-tokens-per-minute", spec.api.default_tokens_per_minute),
    ]
    args += [item for flag, value in optional if value is not None for item in (flag, str(value))]
    if rt.enable_prefix_caching is True:
        args.append("--enable-prefix-caching")
    if spec.api.keys_secret:
        args += ["--tenants-file", f"{contract.TENANTS_MOUNT_DIR}/{contract.TENANTS_FILE_KEY}"]
    # Always there (an optional ConfigMap volume): a quota created later reaches running pods without a restart.
    args += ["--tenant-policy-file", f"{contract.POLICY_MOUNT_DIR}/{contract.POLICY_FILE_KEY}",
             "--scheduling-policy", "priority"]
    if spec.api.rate_limit_backend == "redis":
        args += ["--rate-limit-backend", "redis"]
    args += _response_cache_args(spec, key)
    if rt.engine_args:
        args += ["--", *rt.engine_args]
    return args


def _response_cache_args(spec: InferenceServiceSpec, key: str) -> list[str]:
    """Response-cache flags. The served cache key (source, revision, files) is the model revision that keys
    cached answers, so replicas of a new revision never serve the old revision's answers."""
    rc = spec.response_cache
    if not rc.enabled:
        return []
    args = [
        "--response-cache",
        "--response-cache-backend", rc.backend,
        "--response-cache-ttl", str(rc.ttl_seconds),
        "--response-cache-max-entries", str(rc.max_entries),
        "--response-cache-max-bytes", str(max(1024, int(parse_quantity(rc.max_bytes)))),
        "--response-cache-scope", rc.scope,
        "--model-revision", key,
    ]
    if rc.semantic is not None:
        args += ["--response-cache-semantic-model", _encoder_path(spec),
                 "--response-cache-similarity-threshold", str(rc.semantic.similarity_threshold)]
    return args


def _encoder_path(spec: InferenceServiceSpec) -> str:
    """Where the runtime finds the semantic encoder: fetched into scratch space, or built in."""
    semantic = spec.response_cache.semantic
    assert semantic is not None
    return semantic.model if semantic.model.startswith("builtin:") else ENCODER_DIR


def _env(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    """Environment of the runtime container: offline hub when cached, writable HOME, user's extras."""
    env = common.home_env()
    if names.uses_cache(spec) or spec.source_scheme == "pvc":
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    redis = spec.api.redis_url_secret
    uses_redis = spec.api.rate_limit_backend == "redis" or (
        spec.response_cache.enabled and spec.response_cache.backend == "redis")
    if uses_redis and redis is not None:
        env.append(
            {
                "name": contract.ENV_PREFIX + "REDIS_URL",
                "valueFrom": {"secretKeyRef": {"name": redis.name, "key": redis.key}},
            }
        )
    return env + common.hf_token_env(spec) + [dict(e) for e in spec.runtime.env]


def _resources(spec: InferenceServiceSpec, settings: OperatorSettings) -> dict[str, Any]:
    """Requests and limits: extended-resource GPUs as limits, memory request = limit."""
    res = spec.resources
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if res.cpu is not None:
        requests["cpu"] = str(res.cpu)
    if res.memory is not None:
        requests["memory"] = limits["memory"] = str(res.memory)
    profile = common.accelerator_profile(spec, settings)
    if profile is not None and res.gpus > 0:
        requests[profile.resource_name] = limits[profile.resource_name] = str(res.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _probes(spec: InferenceServiceSpec) -> dict[str, Any]:
    """Startup budget for loading large models, then cheap liveness and truthful readiness."""
    def http(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": common.PORT_NAME}}

    startup_failures = max(1, -(-spec.probes.startup_timeout_seconds // PROBE_PERIOD_SECONDS))
    return {
        "startupProbe": {**http(contract.READY_PATH), "periodSeconds": PROBE_PERIOD_SECONDS,
                         "failureThreshold": startup_failures, "timeoutSeconds": 5},
        "readinessProbe": {**http(contract.READY_PATH), "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 3},
        "livenessProbe": {**http(contract.HEALTH_PATH), "periodSeconds": PROBE_PERIOD_SECONDS,
                          "failureThreshold": 6, "timeoutSeconds": 5},
    }


def _volumes(spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings) -> tuple[list, list]:
    """(volumes, runtime volumeMounts)."""
    profile = common.accelerator_profile(spec, settings)
    shm = spec.resources.shm_size or (profile.shm_size if profile and spec.resources.gpus else "1Gi")
    volumes: list[dict[str, Any]] = [
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": str(shm)}},
        {"name": common.TMP_VOLUME, "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": SHM_VOLUME, "mountPath": contract.SHM_MOUNT_PATH},
        {"name": common.TMP_VOLUME, "mountPath": common.TMP_PATH},
    ]
    if spec.source_scheme == "pvc":
        claim = {"claimName": common.pvc_source_claim(spec), "readOnly": True}
        volumes.append({"name": common.CACHE_VOLUME, "persistentVolumeClaim": claim})
        mounts.append({"name": common.CACHE_VOLUME, "mountPath": contract.CACHE_MOUNT_PATH, "readOnly": True})
    elif names.uses_cache(spec):
        claim = {"claimName": names.cache_claim_name(spec, meta), "readOnly": True}
        volumes.append({"name": common.CACHE_VOLUME, "persistentVolumeClaim": claim})
        mounts.append({"name": common.CACHE_VOLUME, "mountPath": contract.CACHE_MOUNT_PATH, "readOnly": True})
    else:
        volumes.append({"name": common.CACHE_VOLUME, "emptyDir": {}})
        mounts.append({"name": common.CACHE_VOLUME, "mountPath": contract.CACHE_MOUNT_PATH})
    if spec.api.keys_secret:
        volumes.append({"name": TENANTS_VOLUME, "secret": {"secretName": spec.api.keys_secret,
                                                          "items": [{"key": contract.TENANTS_FILE_KEY,
                                                                     "path": contract.TENANTS_FILE_KEY}]}})
        mounts.append({"name": TENANTS_VOLUME, "mountPath": contract.TENANTS_MOUNT_DIR, "readOnly": True})
    volumes.append({"name": POLICY_VOLUME, "configMap": {"name": names.tenant_policy_name(meta), "optional": True}})
    mounts.append({"name": POLICY_VOLUME, "mountPath": contract.POLICY_MOUNT_DIR, "readOnly": True})
    return volumes, mounts


def _init_download(spec: InferenceServiceSpec, settings: OperatorSettings, key: str) -> list[dict[str, Any]]:
    """Without a cache claim every pod downloads the model into its emptyDir first (the slow path)."""
    if names.uses_cache(spec) or spec.source_scheme == "pvc":
        return []
    return [common.download_container(spec, settings, key, "download-model")]


def _init_encoder(spec: InferenceServiceSpec, settings: OperatorSettings, key: str) -> list[dict[str, Any]]:
    """The semantic cache's encoder, fetched by the model's downloader container into scratch space (~100 MB)."""
    semantic = spec.response_cache.semantic
    if not spec.response_cache.enabled or semantic is None or semantic.model.startswith("builtin:"):
        return []
    container = common.download_container(spec, settings, key, "download-encoder")
    container["args"] = ["download", "--source", semantic.model, "--dest", ENCODER_DIR,
                         *(["--revision", semantic.revision] if semantic.revision else [])]
    container["volumeMounts"] = [{"name": common.TMP_VOLUME, "mountPath": common.TMP_PATH}]
    return [container]


def build_deployment(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """The runtime Deployment. ``replicas`` is left out when an autoscaler owns it."""
    key = observed.serving_cache_key or names.cache_key(spec)
    img, policy = common.image(spec, settings)
    volumes, mounts = _volumes(spec, meta, settings)
    container: dict[str, Any] = {
        "name": "runtime",
        "image": img,
        "imagePullPolicy": policy,
        "args": runtime_args(spec, meta, key),
        "ports": [{"name": common.PORT_NAME, "containerPort": contract.RUNTIME_PORT, "protocol": "TCP"}],
        "env": _env(spec),
        "volumeMounts": mounts,
        "securityContext": dict(common.RESTRICTED_CONTAINER_SECURITY),
        "lifecycle": {"preStop": {"sleep": {"seconds": settings.pre_stop_sleep_seconds}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **_probes(spec),
    }
    if spec.runtime.env_from:
        container["envFrom"] = [dict(e) for e in spec.runtime.env_from]
    resources = _resources(spec, settings)
    if resources:
        container["resources"] = resources
    grace = settings.pre_stop_sleep_seconds + spec.runtime.drain_timeout_seconds + 15
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": dict(common.RESTRICTED_POD_SECURITY),
        "terminationGracePeriodSeconds": grace,
        "containers": [container],
        "volumes": volumes,
        **common.pod_scheduling(spec, settings),
    }
    init = _init_download(spec, settings, key) + _init_encoder(spec, settings, key)
    if init:
        pod_spec["initContainers"] = init
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": names.selector_labels(meta)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": spec.rollout.max_surge, "maxUnavailable": spec.rollout.max_unavailable},
        },
        "progressDeadlineSeconds": spec.probes.startup_timeout_seconds + 600,
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {
                "labels": names.labels(meta, names.COMPONENT_RUNTIME),
                "annotations": {contract.ANNOTATION_CACHE_KEY: key},
            },
            "spec": pod_spec,
        },
    }
    replicas = common.fixed_replicas(spec, observed)
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    annotations = {contract.ANNOTATION_CACHE_KEY: key}
    tenant_policy = service_policy(spec, observed)
    if tenant_policy is not None:
        annotations[contract.ANNOTATION_TENANT_POLICY] = policy_digest(meta, tenant_policy)
    return {
        "apiVersion": kinds.DEPLOYMENT.api_version,
        "kind": kinds.DEPLOYMENT.kind,
        "metadata": {**common.object_meta(meta, meta.name, names.COMPONENT_RUNTIME), "annotations": annotations},
        "spec": deployment_spec,
    }
