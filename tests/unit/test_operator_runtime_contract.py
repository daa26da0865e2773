"""The operator's Deployments start a runtime that understands them: flags, env, ports, paths, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inferkube.api import contract
from inferkube.runtime.cli import parse_serve_args
from inferkube.runtime.download.cli import build_parser as build_download_parser
from inferkube.runtime.settings import RuntimeSettings
from tests.unit.operator.conftest import EXAMPLES, by_kind, load_example, render


def _runtime_container(obj: dict[str, Any]) -> dict[str, Any]:
    return by_kind(render(obj))["Deployment"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_runtime_accepts_the_args_and_env_the_operator_writes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    container = _runtime_container(load_example(path))
    args = container["args"]
    assert args[0] == "serve"
    for env in container["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
        elif env["name"].startswith(contract.ENV_PREFIX):
            monkeypatch.setenv(env["name"], "redis://redis.example:6379/0")  # the Secret's value
    settings = RuntimeSettings(**parse_serve_args(args[1:]))
    assert settings.port == contract.RUNTIME_PORT == container["ports"][0]["containerPort"]
    assert settings.model == args[args.index("--model") + 1]
    if "--" in args:
        assert settings.engine_args == args[args.index("--") + 1 :]
    if "--rate-limit-backend" in args:
        assert settings.redis_url == "redis://redis.example:6379/0"
    if "--response-cache" in args:
        rc = load_example(path)["spec"]["responseCache"]
        assert settings.response_cache and settings.response_cache_backend == rc.get("backend", "memory")
        assert settings.response_cache_ttl == rc.get("ttlSeconds", 600)
        deployment = by_kind(render(load_example(path)))["Deployment"]
        assert settings.model_revision == deployment["metadata"]["annotations"][contract.ANNOTATION_CACHE_KEY]
        if settings.response_cache_backend == "redis":
            assert settings.redis_url == "redis://redis.example:6379/0"
    if "--tenants-file" in args:
        assert str(settings.tenants_file).startswith(contract.TENANTS_MOUNT_DIR)


def test_download_job_args_parse_with_the_downloader() -> None:
    for path in EXAMPLES:
        children = render(load_example(path), serving_cache_key=None)
        for job in (c for c in children if c["kind"] == "Job"):
            args = job["spec"]["template"]["spec"]["containers"][0]["args"]
            assert args[0] == "download"
            parsed = build_download_parser().parse_args(args[1:])
            assert str(parsed.dest).startswith(contract.CACHE_MOUNT_PATH + "/")
