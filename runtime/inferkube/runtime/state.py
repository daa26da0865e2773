"""`RuntimeState`: what one running server shares (settings, engine, tenants, limiter, admission, metrics, phase)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from fastapi import FastAPI

from inferkube.api.quota import TenantLimits
from inferkube.api.tenantpolicy import PolicyFileError, TenantPolicy
from inferkube.runtime.admission import AdmissionController
from inferkube.runtime.engine import Engine, VLLMEngine
from inferkube.runtime.fairqueue import FairAdmission
from inferkube.runtime.metrics import RuntimeMetrics, get_metrics, priority_label
from inferkube.runtime.reload import FileWatcher
from inferkube.runtime.response_cache import build_response_cache
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.tenancy import RateLimiter, TenantRegistry, build_rate_limiter
from inferkube.runtime.tenancy.policy import TenancyState, load_policy_file

log = logging.getLogger("inferkube.runtime")

LOADING: Final = "loading"
WARMING: Final = "warming"
READY: Final = "ready"
DRAINING: Final = "draining"
FAILED: Final = "failed"
CUT_GRACE = 3.0  # seconds requests cut at the drain deadline get to write their last answer


def freeze_startup_heap() -> None:
    """Keep the start-up heap (model code, tokenizer, engine client) out of every later garbage collection,
    as vLLM's own server does after start-up: a full collection would otherwise walk it again and again."""
    for generation in range(3):
        gc.collect(generation)
    gc.freeze()


def build_tenancy(settings: RuntimeSettings) -> tuple[TenantRegistry, RateLimiter]:
    """The tenant registry (from the tenants file, or empty: no auth) and the rate limiter the settings ask for.

    The limiter gets no server defaults: `TenancyState.resolve` has already put them into every tenant it
    hands out, and the model budget's pseudo-tenant must not get a requests-per-minute limit from them.
    """
    registry = (TenantRegistry.from_file(settings.tenants_file) if settings.tenants_file
                else TenantRegistry.empty())
    limiter = build_rate_limiter(settings.rate_limit_backend, settings.redis_url,
                                 settings.rate_limit_fail_open, None, None)
    return registry, limiter


def initial_policy(settings: RuntimeSettings) -> TenantPolicy | None:
    """The tenant policy at start-up; a broken one is logged and ignored (its watcher picks up the next version)."""
    if settings.tenant_policy_file is None:
        return None
    try:
        return load_policy_file(settings.tenant_policy_file)
    except PolicyFileError as exc:
        log.error("tenant policy ignored until it is fixed: %s", exc)
        return None


class RuntimeState:
    """Everything one running server shares: settings, engine, tenancy, admission, metrics, phase."""

    def __init__(self, settings: RuntimeSettings, engine: Engine, registry: TenantRegistry,
                 limiter: RateLimiter, metrics: RuntimeMetrics) -> None:
        self.settings = settings
        self.engine = engine
        defaults = TenantLimits(requests_per_minute=settings.default_requests_per_minute,
                                tokens_per_minute=settings.default_tokens_per_minute)
        self.tenancy = TenancyState(registry, initial_policy(settings), defaults, settings.model_name,
                                    shared_limiter=settings.rate_limit_backend == "redis")
        self.limiter = limiter
        self.metrics = metrics
        self.admission: AdmissionController | FairAdmission
        if settings.scheduling_policy == "priority":
            self.admission = FairAdmission(settings.max_in_flight, settings.max_queued, on_shed=self._count_shed)
        else:
            self.admission = AdmissionController(settings.max_in_flight, settings.max_queued)
        self.watchers = self._watchers()
        self.response_cache = build_response_cache(settings, metrics.cache)
        self.phase: str = LOADING
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cut: asyncio.Future[None] | None = None
        self.freeze_heap_when_ready = False  # the server process sets it (tests share their process)
        metrics.declare_model(settings.model_name)
        metrics.bind_gauges(settings.model_name, lambda: self.admission.queued,
                            lambda: self.admission.in_flight)

    @classmethod
    def create(cls, settings: RuntimeSettings, engine: Engine | None = None, *,
               registry: TenantRegistry | None = None, limiter: RateLimiter | None = None,
               metrics: RuntimeMetrics | None = None) -> RuntimeState:
        """The state for `settings`; anything not given (tests pass doubles) is built from the settings."""
        if registry is None or limiter is None:
            built_registry, built_limiter = build_tenancy(settings)
            registry = registry if registry is not None else built_registry
            limiter = limiter if limiter is not None else built_limiter
        return cls(settings, engine if engine is not None else VLLMEngine(settings), registry, limiter,
                   metrics or get_metrics())

    @property
    def registry(self) -> TenantRegistry:
        """The tenants file in force (reloaded when it changes)."""
        return self.tenancy.registry

    def _count_shed(self, tenant: str, priority: int) -> None:
        self.metrics.shed.labels(self.settings.model_name, self.metrics.tenant_label(tenant), priority_label(priority)).inc()

    def _watchers(self) -> list[FileWatcher[Any]]:
        """Reload the tenants file and the tenant policy when the kubelet swaps them; every reload is counted."""
        files: list[tuple[str, Any, Callable[[Any], Any], Callable[[Any], None]]] = [
            ("tenants", self.settings.tenants_file, TenantRegistry.from_file, self.tenancy.set_registry),
            ("policy", self.settings.tenant_policy_file, load_policy_file, self.tenancy.set_policy),
        ]
        return [FileWatcher(path, load, self._counted(name, apply), name=name, interval=self.settings.reload_interval,
                            on_error=self._count_error(name))
                for name, path, load, apply in files if path is not None]

    def _counted(self, name: str, apply: Callable[[Any], None]) -> Callable[[Any], None]:
        """apply, then count a good reload of the file `name`."""
        def applied(value: Any) -> None:
            apply(value)
            self.metrics.config_reloads.labels(name, "ok").inc()
        return applied

    def _count_error(self, name: str) -> Callable[[str], None]:
        """Count a refused new version of the file `name` (the watcher has logged why)."""
        def failed(_: str) -> None:
            self.metrics.config_reloads.labels(name, "error").inc()
        return failed

    @property
    def ready(self) -> bool:
        """True when the model is loaded, warmed up, and the server is not draining."""
        return self.phase == READY and not self.admission.draining

    @property
    def cut(self) -> asyncio.Future[None]:
        """Done once the drain deadline has passed: running requests end with a 503 / a last SSE error event."""
        if self._cut is None:
            self._cut = asyncio.get_running_loop().create_future()
        return self._cut

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a small background coroutine, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def load(self) -> None:
        """Start the engine and warm it up; on failure mark the server failed and call on_fatal."""
        try:
            await self.engine.start()
            self.phase = WARMING
            if self.settings.warmup:
                await self.engine.warmup()
            if self.response_cache is not None:
                await self.response_cache.warm()
            if self.freeze_heap_when_ready:
                self.engine.settle()
                freeze_startup_heap()
            self.phase = READY
            log.info("model %s ready", self.settings.model_name)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - any load failure makes the replica unhealthy
            self.phase = FAILED
            log.error("engine failed to start: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)

    async def drain(self, timeout: float) -> bool:
        """Stop admitting, flip /ready to 503, and wait up to `timeout` s for in-flight work to end.

        At the deadline, queued requests get 503 `server_draining` and running ones are cut (a 503, or a
        last SSE error event and `[DONE]`); they get CUT_GRACE seconds to write that. True if nothing
        had to be cut."""
        adm = self.admission
        adm.start_draining()
        log.info("draining: %d sequences in flight, %d queued", adm.in_flight, adm.queued)
        if await adm.wait_idle(timeout):
            log.info("drain complete")
            return True
        refused = adm.refuse_queued()
        running = adm.in_flight
        if not self.cut.done():
            self.cut.set_result(None)
        cut_ended = await adm.wait_idle(CUT_GRACE)
        log.warning("drain timed out after %.0fs: %d queued requests refused, %d running sequences cut%s",
                    timeout, refused, running, "" if cut_ended else " (some did not end in time)")
        return False

    async def close(self) -> None:
        """Release the engine and the limiter's connections (end of the lifespan)."""
        await self.engine.stop()
        await self.limiter.close()
        if self.response_cache is not None:
            await self.response_cache.close()


def runtime_state(app: FastAPI) -> RuntimeState:
    """The RuntimeState `build_app` attached to `app`."""
    state = app.state.runtime
    if not isinstance(state, RuntimeState):
        raise RuntimeError("this app was not built by inferkube.runtime.app.build_app")
    return state
