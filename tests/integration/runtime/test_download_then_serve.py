"""A model fetched by `inferkube-runtime download` from a (fake, local) Hub is served by the real runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from inferkube.api.contract import DOWNLOAD_MANIFEST_FILE
from tests.integration.runtime.conftest import SERVED_NAME, start_runtime_server
from tests.unit.runtime.test_download_fakes import FakeHub, HubRepo, read_tree

pytestmark = pytest.mark.engine

REPO = "acme/tiny-llama"


def test_downloaded_tiny_model_is_served_by_real_vllm(tiny_model_dir: Path, tmp_path: Path) -> None:
    hub = FakeHub({REPO: HubRepo(files=read_tree(tiny_model_dir))}).start()
    try:
        dest = tmp_path / "models" / "tiny"
        # The real command line, with the Hub address taken from HF_ENDPOINT as in a pod.
        env = {**os.environ, "HF_ENDPOINT": hub.url}
        env.pop("HF_TOKEN", None)
        proc = subprocess.run(
            [sys.executable, "-m", "inferkube.runtime.cli", "download", "--source", f"hf://{REPO}",
             "--revision", "main", "--dest", str(dest), "--termination-log", str(tmp_path / "term"),
             "--progress-interval", "0.2"],
            env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        final = json.loads(proc.stdout.strip().splitlines()[-1])
        assert final["event"] == "done" and final["files"] == len(read_tree(tiny_model_dir))
        assert (dest / DOWNLOAD_MANIFEST_FILE).is_file()
    finally:
        hub.stop()
    # The hub is gone now: serving must work from the local copy alone, with the hub switched off.
    server = start_runtime_server(dest, ["--drain-timeout", "5"], log_path=tmp_path / "server.log",
                                  env={"HF_HUB_OFFLINE": "1"})
    try:
        response = httpx.post(server.base_url + "/v1/completions", timeout=120, json={
            "model": SERVED_NAME, "prompt": "Hello world", "max_tokens": 5, "temperature": 0})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["usage"]["completion_tokens"] > 0
        assert isinstance(body["choices"][0]["text"], str)
    finally:
        assert server.stop() == 0
