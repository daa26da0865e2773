"""The response cache: exact-match answers of deterministic requests (in-process LRU or Redis shared by
replicas), opt-in semantic matching, SSE replay. Rules in `policy`, keys in `keys`; docs/response-cache.md.

```python
cache = build_response_cache(settings, metrics.cache)          # None when the cache is off
look = await cache.lookup(kind, request, tenant.name, headers.get("cache-control"))
if look.hit:
    return cache.respond(look, request)                         # fresh id/created, JSON or SSE
result = cache.record(look, result, usage=lambda: (prompt_tokens, completion_tokens))
... look.headers()                                              # x-inferkube-cache: miss | bypass
```
"""

from __future__ import annotations

from inferkube.runtime.metrics import ResponseCacheMetrics
from inferkube.runtime.response_cache.cache import BYPASS, HIT, MISS, SEMANTIC_HIT, CacheLookup, ResponseCache
from inferkube.runtime.response_cache.keys import model_revision
from inferkube.runtime.response_cache.memory import MemoryStore
from inferkube.runtime.response_cache.semantic import SemanticMatcher, TransformersEmbedder
from inferkube.runtime.response_cache.store import CacheStore
from inferkube.runtime.settings import RuntimeSettings

__all__ = ["BYPASS", "HIT", "MISS", "SEMANTIC_HIT", "CacheLookup", "MemoryStore", "ResponseCache",
           "build_response_cache"]


def build_store(settings: RuntimeSettings) -> CacheStore:
    """The backend the settings name: an in-process LRU, or the rate limiter's Redis."""
    if settings.response_cache_backend == "redis":
        from inferkube.runtime.response_cache.redis_store import RedisStore

        if not settings.redis_url:
            raise ValueError("response-cache backend 'redis' needs a Redis URL")
        return RedisStore(settings.redis_url, max_value_bytes=settings.response_cache_max_bytes)
    return MemoryStore(settings.response_cache_max_entries, settings.response_cache_max_bytes)


def build_response_cache(settings: RuntimeSettings, metrics: ResponseCacheMetrics) -> ResponseCache | None:
    """The response cache for these settings, or None when it is off."""
    if not settings.response_cache:
        return None
    semantic = None
    if settings.response_cache_semantic_model:
        semantic = SemanticMatcher(TransformersEmbedder(settings.response_cache_semantic_model),
                                   settings.response_cache_similarity_threshold)
    return ResponseCache(build_store(settings), model=settings.model_name,
                         revision=model_revision(settings.model, settings.model_revision),
                         ttl=settings.response_cache_ttl, scope=settings.response_cache_scope,
                         metrics=metrics, semantic=semantic)
