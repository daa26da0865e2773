"""The response cache's flags and environment variables, and what they build."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from inferkube.runtime.cli import parse_serve_args
from inferkube.runtime.metrics import ResponseCacheMetrics
from inferkube.runtime.response_cache import MemoryStore, build_response_cache
from inferkube.runtime.settings import RuntimeSettings


def metrics() -> ResponseCacheMetrics:
    return ResponseCacheMetrics(CollectorRegistry())


def test_flags_configure_the_cache() -> None:
    settings = RuntimeSettings(**parse_serve_args([
        "--response-cache", "--response-cache-ttl", "30", "--response-cache-max-entries", "5",
        "--response-cache-max-bytes", "4096", "--response-cache-scope", "shared", "--model-revision", "abc"]))
    cache = build_response_cache(settings, metrics())
    assert cache is not None and isinstance(cache.store, MemoryStore)
    assert (cache.ttl, cache.scope, cache.store.max_entries, cache.store.max_bytes) == (30, "shared", 5, 4096)
    other = build_response_cache(settings.model_copy(update={"model_revision": "def"}), metrics())
    assert other is not None and other.revision != cache.revision


def test_off_by_default_and_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_response_cache(RuntimeSettings(), metrics()) is None
    monkeypatch.setenv("INFERKUBE_RESPONSE_CACHE", "true")
    monkeypatch.setenv("INFERKUBE_RESPONSE_CACHE_BACKEND", "redis")
    monkeypatch.setenv("INFERKUBE_REDIS_URL", "redis://127.0.0.1:1/0")
    cache = build_response_cache(RuntimeSettings(), metrics())
    assert cache is not None and cache.store.name == "redis"


def test_redis_backend_needs_a_url() -> None:
    with pytest.raises(ValidationError, match="needs --redis-url"):
        RuntimeSettings(**parse_serve_args(["--response-cache", "--response-cache-backend", "redis"]))
    with pytest.raises(ValidationError):
        RuntimeSettings(**parse_serve_args(["--response-cache-similarity-threshold", "1.5"]))
