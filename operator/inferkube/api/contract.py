"""Names shared by the operator (which writes Deployments) and the runtime (which serves).

Changing a value here changes the wire contract between the two: keep them stable.
"""

from __future__ import annotations

# --- API group -------------------------------------------------------------------------------
GROUP = "serving.inferkube.dev"
VERSION = "v1alpha1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ["infsvc", "iks"]
QUOTA_KIND = "InferenceQuota"          # cluster-scoped, owned by platform teams
QUOTA_PLURAL = "inferencequotas"
QUOTA_SINGULAR = "inferencequota"
QUOTA_SHORT_NAMES = ["iquota"]
CONDITION_QUOTA_EXCEEDED = "QuotaExceeded"   # InferenceService condition set by quota decisions

# --- Labels and annotations ------------------------------------------------------------------
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# Children carry this instead of app.kubernetes.io/instance: Argo CD tracks apps by that label by
# default and would prune children that carry an instance label it does not own.
LABEL_ISVC = "serving.inferkube.dev/inferenceservice"
APP_NAME = "inferkube"
MANAGED_BY = "inferkube-operator"
FIELD_MANAGER = "inferkube-operator"
ANNOTATION_PREFIX = "serving.inferkube.dev/"
ANNOTATION_MODEL_REVISION = ANNOTATION_PREFIX + "model-revision"
ANNOTATION_CACHE_KEY = ANNOTATION_PREFIX + "cache-key"
# On the Deployment (not its pods): digest of the tenant-policy ConfigMap the operator last applied. The
# operator does not watch ConfigMaps, so this is how it knows, also after a restart, what it wrote.
ANNOTATION_TENANT_POLICY = ANNOTATION_PREFIX + "tenant-policy"

# --- Runtime process contract ----------------------------------------------------------------
RUNTIME_PORT = 8000
RUNTIME_PORT_NAME = "http"
HEALTH_PATH = "/health"   # liveness: cheap, answers under full load
READY_PATH = "/ready"     # readiness: 503 until model loaded + warm-up ok, and while draining
METRICS_PATH = "/metrics"
CACHE_MOUNT_PATH = "/models"          # the model cache PVC (read-only in serving pods)
TENANTS_MOUNT_DIR = "/etc/inferkube/tenants"
TENANTS_FILE_KEY = "tenants.yaml"     # key inside the API-key Secret
POLICY_MOUNT_DIR = "/etc/inferkube/policy"   # the effective tenant policy ConfigMap (quotas -> runtime)
POLICY_FILE_KEY = "policy.yaml"              # key inside that ConfigMap
SHM_MOUNT_PATH = "/dev/shm"
DOWNLOAD_MANIFEST_FILE = ".inferkube-manifest.json"  # written by the downloader into the cache dir
ENV_PREFIX = "INFERKUBE_"
# Downloader reports: JSON lines on stdout and one final object as the termination message; the
# operator reads them into status.cache. The "event" key names one of the three events below.
DOWNLOAD_KEY_EVENT = "event"
DOWNLOAD_EVENT_PROGRESS = "progress"   # keys: bytesDone, bytesTotal, filesDone, filesTotal
DOWNLOAD_EVENT_DONE = "done"           # keys: revision, bytes, files
DOWNLOAD_EVENT_FAILED = "failed"       # keys: reason, message
DOWNLOAD_KEY_BYTES_DONE = "bytesDone"
DOWNLOAD_KEY_BYTES_TOTAL = "bytesTotal"
DOWNLOAD_KEY_FILES_DONE = "filesDone"
DOWNLOAD_KEY_FILES_TOTAL = "filesTotal"
DOWNLOAD_KEY_REVISION = "revision"
DOWNLOAD_KEY_BYTES = "bytes"           # done: bytes in the finished directory
DOWNLOAD_KEY_FILES = "files"           # done: files in the finished directory
DOWNLOAD_KEY_REASON = "reason"
DOWNLOAD_KEY_MESSAGE = "message"

# --- Metrics the runtime exports (stable names; the HPA scales on the first two) -------------
# ServiceMonitor.targetLabels copies the Service's LABEL_ISVC onto every series, sanitised like this.
METRIC_LABEL_ISVC = LABEL_ISVC.replace(".", "_").replace("/", "_").replace("-", "_")
METRIC_QUEUE_DEPTH = "inferkube_queue_depth"                  # gauge: admitted, waiting for engine
METRIC_KV_CACHE_USAGE = "inferkube_kv_cache_usage_ratio"      # gauge 0..1
METRIC_REQUESTS_IN_FLIGHT = "inferkube_requests_in_flight"    # gauge
METRIC_REQUESTS_TOTAL = "inferkube_requests_total"            # counter {model, tenant, status}
METRIC_REJECTIONS_TOTAL = "inferkube_rejections_total"        # counter {model, reason}
# Values of its `reason` label: why the runtime refused a request before the engine.
REJECTION_AUTH, REJECTION_RATE_LIMIT, REJECTION_ADMISSION = "auth", "rate_limit", "admission"
REJECTION_VALIDATION, REJECTION_DRAINING = "validation", "draining"
REJECTION_REASONS = (REJECTION_AUTH, REJECTION_RATE_LIMIT, REJECTION_ADMISSION, REJECTION_VALIDATION,
                     REJECTION_DRAINING)
METRIC_TTFT_SECONDS = "inferkube_time_to_first_token_seconds"       # histogram
METRIC_TPOT_SECONDS = "inferkube_time_per_output_token_seconds"     # histogram
METRIC_E2E_SECONDS = "inferkube_request_duration_seconds"           # histogram
METRIC_PROMPT_TOKENS_TOTAL = "inferkube_prompt_tokens_total"        # counter
METRIC_COMPLETION_TOKENS_TOTAL = "inferkube_completion_tokens_total"  # counter
METRIC_CLIENT_DISCONNECTS_TOTAL = "inferkube_client_disconnects_total"  # counter
METRIC_RATELIMIT_BACKEND_ERRORS_TOTAL = "inferkube_ratelimit_backend_errors_total"  # counter

# --- NVIDIA DCGM exporter series (read, not exported, by inferkube) ----------------------------
# dcgm-exporter in Kubernetes mode labels each GPU's series with the `pod`/`namespace` using it;
# scraped with honorLabels those labels join GPU series to the serving pods.
METRIC_DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"      # gauge, percent 0..100, one series per GPU
METRIC_DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"        # gauge, MiB of framebuffer memory in use
METRIC_DCGM_FB_FREE = "DCGM_FI_DEV_FB_FREE"        # gauge, MiB free
METRIC_DCGM_GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"      # gauge, degrees Celsius
# Kubernetes' own replica series (kube-state-metrics, part of kube-prometheus-stack).
METRIC_KSM_HPA_DESIRED = "kube_horizontalpodautoscaler_status_desired_replicas"
METRIC_KSM_DEPLOYMENT_READY = "kube_deployment_status_replicas_ready"

# --- Response cache (runtime) ----------------------------------------------------------------
HEADER_RESPONSE_CACHE = "x-inferkube-cache"                 # hit | semantic-hit | miss | bypass
HEADER_RESPONSE_CACHE_SIMILARITY = "x-inferkube-cache-similarity"  # cosine of a semantic hit
METRIC_RESPONSE_CACHE_HITS_TOTAL = "inferkube_response_cache_hits_total"          # counter {model, match}
METRIC_RESPONSE_CACHE_MISSES_TOTAL = "inferkube_response_cache_misses_total"      # counter {model}
METRIC_RESPONSE_CACHE_BYPASSES_TOTAL = "inferkube_response_cache_bypasses_total"  # counter {model, reason}
METRIC_RESPONSE_CACHE_STORED_BYTES_TOTAL = "inferkube_response_cache_stored_bytes_total"  # counter {model}
METRIC_RESPONSE_CACHE_SIZE_BYTES = "inferkube_response_cache_size_bytes"          # gauge {model} (memory)
METRIC_RESPONSE_CACHE_HIT_SECONDS = "inferkube_response_cache_hit_duration_seconds"  # histogram {model}
METRIC_ADMISSION_WAIT_SECONDS = "inferkube_admission_wait_seconds"  # histogram {model, priority}
METRIC_ADMITTED_TOTAL = "inferkube_admitted_total"                  # counter {model, tenant, priority}
METRIC_SHED_TOTAL = "inferkube_shed_total"                          # counter {model, tenant, priority}: 429 for more important work
METRIC_CONFIG_RELOADS_TOTAL = "inferkube_config_reloads_total"      # counter {file, result}: tenants / policy, ok / error
