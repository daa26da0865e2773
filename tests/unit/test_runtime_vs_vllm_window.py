"""The side-by-side benchmark's `--together` numbers: tokens, CPU and latencies counted inside the common window."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from runtime_vs_vllm import at, common_window, median_interval, token_times, window_metrics  # noqa: E402


def _result() -> dict:
    """Three requests as vLLM's client saves them with --save-detailed (seconds, monotonic clock)."""
    return {"start_times": [10.0, 12.0, 11.0], "ttfts": [0.5, 0.5, 0.0], "latencies": [2.5, 1.5, 0.0],
            "itls": [[1.0, 1.0], [1.0], []],  # request 0: three chunks of one token; request 1: two chunks
            "output_lens": [3, 4, 0]}          # request 1's chunks carry two tokens each; request 2 failed


def test_token_times_follow_the_chunks_spread_a_chunk_of_several_tokens_and_skip_failures() -> None:
    assert token_times(_result()) == [10.5, 11.5, 12.5, 12.5, 12.5, 13.5, 13.5]


def test_cpu_is_interpolated_between_samples_and_refused_outside_them() -> None:
    samples = [(0.0, 1.0, 10.0), (2.0, 3.0, 20.0)]
    assert at(samples, 1.0) == (2.0, 15.0)
    with pytest.raises(ValueError):
        at(samples, 3.0)


def test_window_counts_tokens_inside_it_and_latencies_of_requests_wholly_inside_it() -> None:
    samples = [(10.0, 0.0, 0.0), (14.0, 0.004, 0.008)]  # 1 ms of API CPU and 2 ms of engine CPU a second
    m = window_metrics(_result(), samples, 11.0, 13.6)
    assert m["output_throughput"] == pytest.approx(6 / 2.6)  # 11.5, 12.5 x 3, 13.5 x 2; 10.5 is outside
    assert m["api_cpu_us_per_token"] == pytest.approx(1e6 * 0.0026 / 6)
    assert m["engine_cpu_us_per_token"] == pytest.approx(1e6 * 0.0052 / 6)
    # Only request 1 started and ended inside (request 0 started before, request 2 failed).
    assert m["median_ttft_ms"] == pytest.approx(500.0)
    assert m["median_tpot_ms"] == pytest.approx(1e3 * 1.0 / 3)
    with pytest.raises(statistics.StatisticsError):  # a request that ends after the window does not count
        window_metrics(_result(), samples, 11.0, 13.0)


def test_common_window_runs_from_the_later_first_answer_to_the_earlier_last_request() -> None:
    a = {"start_times": [0.0, 1.0, 30.0], "latencies": [2.0, 2.0, 2.0], "output_lens": [4, 4, 4]}
    b = {"start_times": [0.5, 0.6, 20.0, 25.0], "latencies": [0.0, 3.0, 2.0, 2.0], "output_lens": [0, 4, 4, 4]}
    # a answers first at 2.0, b at 3.6 (its request at 0.5 failed: no answer); a sends last at 30, b at 25.
    assert common_window([a, b]) == (3.6, 25.0)
    assert common_window([b, a]) == (3.6, 25.0)


def test_median_interval_from_order_statistics_with_its_coverage() -> None:
    low, high, coverage = median_interval([1.2, 0.8, 1.0, 0.9, 1.1])
    assert (low, high) == (0.8, 1.2) and coverage == pytest.approx(0.9375)  # 5 values: min-max
    eleven = [float(i) for i in range(11)]
    low, high, coverage = median_interval(eleven[::-1])
    assert (low, high) == (1.0, 9.0) and coverage == pytest.approx(1 - 2 * 12 / 2048)
