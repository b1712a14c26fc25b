"""The process-wide model-work pool: shared computation, cross-session cache, memory bound, abandoned jobs."""

import threading

import numpy as np
import torch

from core.serving import ModelWorkPool, result_bytes


def test_identical_requests_share_one_computation_and_then_the_cache():
    pool = ModelWorkPool(workers=2, threads_per_worker=torch.get_num_threads())
    gate, calls = threading.Event(), []

    def work(x):
        gate.wait(5)
        calls.append(x)
        return x * 2

    first, second = pool.submit("k", work, 21), pool.submit("k", work, 21)
    assert first is second  # the second session waits on the same job
    gate.set()
    assert first.result(5) == second.result(5) == 42
    assert pool.submit("k", work, 21).result(5) == 42  # later: served from the cache
    assert calls == [21] and pool.stats()["hits"] == 1 and pool.stats()["computed"] == 1


def test_a_job_nobody_waits_for_is_not_computed():
    pool = ModelWorkPool(workers=1, threads_per_worker=torch.get_num_threads())
    gate, calls = threading.Event(), []
    busy = pool.submit("busy", lambda: gate.wait(5))
    pool.submit("abandoned", calls.append, "abandoned")  # queued behind the busy worker
    shared = pool.submit("shared", calls.append, "shared")
    pool.submit("shared", calls.append, "shared")
    pool.release("abandoned")  # its only session went away
    pool.release("shared")  # one of two sessions went away: still computed for the other
    gate.set()
    busy.result(5)
    shared.result(5)
    assert calls == ["shared"] and pool.stats()["cancelled"] == 1


def test_cache_is_bounded_by_bytes():
    pool = ModelWorkPool(workers=1, cache_bytes=3 * 2**20, threads_per_worker=torch.get_num_threads())
    for i in range(10):
        pool.submit(i, np.zeros, 2**20 // 8).result(5)  # 1 MB arrays
    stats = pool.stats()
    assert stats["cached_bytes"] <= 3 * 2**20 and stats["cached"] == 2
    assert pool.submit(9, np.ones, 1).result(5).nbytes == 2**20  # the most recent stays cached
    assert result_bytes(np.zeros(10)) == 1024 + 80


def test_predictions_jump_the_queue_of_explanations():
    pool = ModelWorkPool(workers=1, threads_per_worker=torch.get_num_threads())
    gate, order = threading.Event(), []
    busy = pool.submit("busy", lambda: gate.wait(5))
    queued = [pool.submit(name, order.append, name) for name in ("explain-1", "explain-2")]
    queued.append(pool.submit("predict", order.append, "predict", priority=0))  # arrives last
    gate.set()
    busy.result(5)
    for future in queued:
        future.result(5)
    assert order == ["predict", "explain-1", "explain-2"]
