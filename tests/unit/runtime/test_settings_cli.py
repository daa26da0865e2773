"""`inferkube-runtime serve` flags and INFERKUBE_* variables -> one RuntimeSettings; vLLM argument mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inferkube.runtime.cli import main, parse_serve_args
from inferkube.runtime.engine import engine_batch_floor, engine_cli, vllm_cli_args
from inferkube.runtime.settings import RuntimeSettings


def test_contract_flags_are_parsed() -> None:
    values = parse_serve_args([
        "--model", "/models/llama", "--served-model-name", "llama", "--host", "127.0.0.1", "--port", "9000",
        "--dtype", "bfloat16", "--max-model-len", "4096", "--tensor-parallel-size", "2",
        "--tenants-file", "/etc/inferkube/tenants/tenants.yaml", "--rate-limit-fail-closed",
        "--max-in-flight", "8", "--max-queued", "0", "--drain-timeout", "30", "--enable-prefix-caching",
    ])
    s = RuntimeSettings(**values)
    assert (s.model, s.model_name, s.host, s.port) == ("/models/llama", "llama", "127.0.0.1", 9000)
    assert (s.dtype, s.max_model_len, s.tensor_parallel_size) == ("bfloat16", 4096, 2)
    assert str(s.tenants_file) == "/etc/inferkube/tenants/tenants.yaml"
    assert s.rate_limit_fail_open is False
    assert (s.max_in_flight, s.max_queued, s.drain_timeout) == (8, 0, 30.0)
    assert s.enable_prefix_caching is True
    assert s.engine_args == []


def test_arguments_after_double_dash_go_to_vllm() -> None:
    values = parse_serve_args(["--model", "m", "--", "--enforce-eager", "--max-num-batched-tokens", "512"])
    s = RuntimeSettings(**values)
    assert s.engine_args == ["--enforce-eager", "--max-num-batched-tokens", "512"]
    argv = vllm_cli_args(s, "/resolved/m")
    assert argv[:2] == ["--model", "/resolved/m"]
    assert argv[-3:] == ["--enforce-eager", "--max-num-batched-tokens", "512"]


def test_environment_fills_unset_flags_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERKUBE_MODEL", "from-env")
    monkeypatch.setenv("INFERKUBE_PORT", "7000")
    monkeypatch.setenv("INFERKUBE_RATE_LIMIT_BACKEND", "redis")
    monkeypatch.setenv("INFERKUBE_ENGINE_ARGS", '["--enforce-eager"]')
    s = RuntimeSettings(**parse_serve_args(["--port", "8001"]))
    assert (s.model, s.port, s.rate_limit_backend, s.engine_args) == ("from-env", 8001, "redis", ["--enforce-eager"])


def test_defaults() -> None:
    s = RuntimeSettings()
    assert (s.port, s.drain_timeout, s.rate_limit_backend, s.rate_limit_fail_open) == (8000, 120.0, "memory", True)
    assert s.model_name == s.model


def test_optional_engine_settings_map_to_vllm_flags() -> None:
    s = RuntimeSettings(model="m", gpu_memory_utilization=0.8, enable_prefix_caching=False, max_num_seqs=64,
                        max_model_len=1024)
    argv = vllm_cli_args(s, "m")
    for flag in (["--gpu-memory-utilization", "0.8"], ["--max-num-seqs", "64"], ["--max-model-len", "1024"]):
        i = argv.index(flag[0])
        assert argv[i:i + 2] == flag
    assert "--no-enable-prefix-caching" in argv


def test_invalid_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "m", "--max-in-flight", "0"]) == 2
    assert "max_in_flight" in capsys.readouterr().err


def test_priority_scheduling_sizes_the_engine_batch_above_the_admission_bound(caplog: pytest.LogCaptureFixture) -> None:
    # vLLM preempts for a more important request only when KV blocks run out, not at a full batch: the batch
    # must hold every admitted sequence plus the headroom a request outranking all others may use.
    prio = RuntimeSettings(model="m", scheduling_policy="priority", max_in_flight=32)
    assert engine_batch_floor(prio, None) == 36  # 32 + 32 // 8 when nothing sets the batch
    assert engine_batch_floor(RuntimeSettings(model="m", max_in_flight=32), None) is None  # fcfs: vLLM's default
    with caplog.at_level("WARNING", logger="inferkube.runtime.engine"):
        assert engine_batch_floor(prio, 16) is None  # a batch set explicitly is kept ...
    assert "below --max-in-flight 32" in caplog.text  # ... and named when too small


@pytest.mark.parametrize("raw", [["--max-num-seqs", "8"], ["--max-num-seqs=8"], ["--max_num_seqs", "8"]])
def test_a_batch_set_in_raw_engine_arguments_counts_in_every_spelling(raw: list[str]) -> None:
    args = engine_cli(RuntimeSettings(model="m", scheduling_policy="priority", engine_args=raw), "m")
    assert args.max_num_seqs == 8
    assert engine_batch_floor(RuntimeSettings(model="m", scheduling_policy="priority"), args.max_num_seqs) is None


@pytest.mark.parametrize("raw", [["--disable-log-stats"], ["--disable_log_stats"], ["--config", "CONFIG"]])
def test_engine_statistics_cannot_be_turned_off(raw: list[str], tmp_path: Path) -> None:
    # Token accounting (rate limits, metrics) reads vLLM's per-request statistics.
    config = tmp_path / "engine.yaml"
    config.write_text("disable-log-stats: true\n")
    raw = [str(config) if a == "CONFIG" else a for a in raw]
    with pytest.raises(ValueError, match="turn off vLLM's statistics"):
        engine_cli(RuntimeSettings(model="m", engine_args=raw), "m")


def test_the_server_refuses_to_start_without_engine_statistics() -> None:
    # Judged where vLLM's own parser reads the engine arguments, in the engine's start (the server listens
    # meanwhile: vLLM's parser alone takes seconds to import); the process ends with the reason.
    result = subprocess.run([sys.executable, "-m", "inferkube.runtime.cli", "serve", "--model", "builtin:tiny",
                             "--port", "0", "--", "--disable_log_stats"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 1  # the engine failed to start
    assert "turn off vLLM's statistics" in result.stderr and "Traceback" not in result.stderr


def test_unknown_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--no-such-flag"])
    assert exc.value.code == 2


def test_download_delegates_to_the_downloader(monkeypatch: pytest.MonkeyPatch) -> None:
    import inferkube.runtime.download.cli as download_cli

    seen: list[list[str]] = []
    monkeypatch.setattr(download_cli, "main", lambda argv: seen.append(argv) or 0)
    assert main(["download", "--source", "x"]) == 0
    assert seen == [["--source", "x"]]


def test_a_ready_server_caches_vllms_environment_variables() -> None:
    # vLLM's output processor reads an environment variable per request and step; the server process caches
    # them once ready, as vLLM's engine processes do.
    from vllm import envs

    from inferkube.runtime.engine import VLLMEngine

    try:
        assert not envs._is_envs_cache_enabled()
        VLLMEngine(RuntimeSettings(model="m")).settle()
        assert envs._is_envs_cache_enabled()
    finally:
        envs.disable_envs_cache()
