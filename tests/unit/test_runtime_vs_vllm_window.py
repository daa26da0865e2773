"""The side-by-side benchmark's `--together` numbers: tokens, CPU and latencies counted inside the common window."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from runtime_vs_vllm import at, median_interval, token_times, window_metrics  # noqa: E402


def _result() -> dict:
    """Two requests as vLLM's client saves them with --save-detailed (times in seconds, monotonic clock)."""
    return {"start_times": [10.0, 12.0], "ttfts": [0.5, 0.5], "latencies": [2.5, 1.5],
            "itls": [[1.0, 1.0], [1.0]],  # request 0: three chunks of one token; request 1: two chunks
            "output_lens": [3, 4]}          # request 1's chunks carry two tokens each


def test_token_times_follow_the_chunks_and_spread_a_chunk_of_several_tokens() -> None:
    assert token_times(_result()) == [10.5, 11.5, 12.5, 12.5, 12.5, 13.5, 13.5]


def test_cpu_is_interpolated_between_samples_and_refused_outside_them() -> None:
    samples = [(0.0, 1.0, 10.0), (2.0, 3.0, 20.0)]
    assert at(samples, 1.0) == (2.0, 15.0)
    with pytest.raises(ValueError):
        at(samples, 3.0)


def test_window_counts_only_tokens_and_requests_inside_it() -> None:
    samples = [(10.0, 0.0, 0.0), (14.0, 0.004, 0.008)]  # 1 ms of API CPU and 2 ms of engine CPU a second
    m = window_metrics(_result(), samples, 11.0, 13.0)
    assert m["output_throughput"] == pytest.approx(4 / 2.0)  # 11.5 and three at 12.5; 10.5 and 13.5 outside
    assert m["api_cpu_us_per_token"] == pytest.approx(1e6 * 0.002 / 4)
    assert m["engine_cpu_us_per_token"] == pytest.approx(1e6 * 0.004 / 4)
    assert m["median_ttft_ms"] == pytest.approx(500.0)  # only request 1 started inside the window
    assert m["median_tpot_ms"] == pytest.approx(1e3 * 1.0 / 3)


def test_median_interval_brackets_the_median_and_narrows_with_agreeing_pairs() -> None:
    spread = [0.8, 0.9, 1.0, 1.1, 1.2]
    low, high = median_interval(spread)
    assert low <= 1.0 <= high and high - low >= 0.1
    assert median_interval([1.0] * 5) == (1.0, 1.0)
