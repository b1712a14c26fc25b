"""Model work for a multi-user server: one bounded worker pool per process and a shared result cache.

Twenty sessions each running torch and ONNX Runtime on every core thrash a small machine; here all
model work goes through `ModelWorkPool.submit`, which runs at most `workers` jobs at once (one per
core, torch at one intra-op thread each), so concurrent sessions queue instead of fighting. The queue is
ordered by priority, then arrival: a prediction (milliseconds) is not kept waiting behind other sessions'
explanations (seconds each).
Identical requests share one computation and, once done, one cached result (bounded LRU), keyed by
what determines the answer: image sha256, model sha256, method, target and settings. The cache is
bounded by bytes (arrays and images a result holds), so memory stays flat under load. A waiter
that goes away (`release`) cancels a job nobody else waits for before it starts.
"""

import itertools
import logging
import os
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

class ModelWorkPool:
    def __init__(self, workers: int = None, cache_bytes: int = 256 * 2**20, threads_per_worker: int = 1):
        self.workers = workers or os.cpu_count() or 1
        torch.set_num_threads(threads_per_worker)  # once, for the whole process
        self._queue = queue.PriorityQueue()  # (priority, arrival, future, key, keep, fn, args, kwargs)
        self._arrival = itertools.count()
        for i in range(self.workers):
            threading.Thread(target=self._work, name=f"model-work-{i}", daemon=True).start()
        self._lock = threading.Lock()
        self._done = OrderedDict()  # key -> (result, bytes), least recently used first
        self._running = {}  # key -> (future, number of waiters)
        self.cache_bytes, self._cached_bytes = cache_bytes, 0
        self.hits = self.computed = self.cancelled = 0

    def submit(self, key, fn, *args, priority: int = 1, keep: bool = True, **kwargs) -> Future:
        """A future of fn(*args, **kwargs), shared with any identical request (same key); queued jobs run in
        order of `priority` (lower first), then of arrival. `keep=False`: the result is not kept in the shared
        cache (a user's private upload)."""
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                self.hits += 1
                future = Future()
                future.set_result(self._done[key][0])
                return future
            if key in self._running:
                future, waiters = self._running[key]
                self._running[key] = (future, waiters + 1)
                return future
            future = Future()
            self._queue.put((priority, next(self._arrival), future, key, keep, fn, args, kwargs))
            self._running[key] = (future, 1)
            return future

    def _work(self):
        while True:
            _, _, future, key, keep, fn, args, kwargs = self._queue.get()
            if not future.set_running_or_notify_cancel():  # released before it started
                continue
            try:
                future.set_result(self._run(key, keep, fn, args, kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def _run(self, key, keep, fn, args, kwargs):
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            with self._lock:
                self._running.pop(key, None)
            raise
        with self._lock:
            self._running.pop(key, None)
            self.computed += 1
            if not keep:
                return result
            size = result_bytes(result)
            self._done[key] = (result, size)
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes and len(self._done) > 1:
                self._cached_bytes -= self._done.popitem(last=False)[1][1]
        return result

    def wait(self, key, future: Future, heartbeat=None, interval: float = 0.25):
        """The job's result. `heartbeat` is called every `interval` seconds while waiting: a Streamlit page passes
        a call that raises when its run was asked to stop or rerun (Streamlit raises at the next `st.*` call,
        never inside a blocking wait). If waiting is interrupted, the job is released, so an abandoned request
        is not computed."""
        try:
            while True:
                try:
                    return future.result(timeout=interval if heartbeat else None)
                except FutureTimeout:
                    heartbeat()
        except BaseException:
            self.release(key)
            raise

    def release(self, key) -> None:
        """The caller stopped waiting (its browser went away or it moved on): a queued job that no one
        else waits for is cancelled rather than computed."""
        with self._lock:
            if key not in self._running:
                return
            future, waiters = self._running[key]
            if waiters > 1:
                self._running[key] = (future, waiters - 1)
            elif future.cancel():
                self._running.pop(key)
                self.cancelled += 1

    def stats(self) -> dict:
        with self._lock:
            return {"workers": self.workers, "cached": len(self._done), "cached_bytes": self._cached_bytes,
                    "running_or_queued": len(self._running), "hits": self.hits, "computed": self.computed,
                    "cancelled": self.cancelled}


def result_bytes(result) -> int:
    """Approximate memory of a result (an object or a tuple of them): the numpy arrays and PIL images it
    holds, plus 1 KB for the rest."""
    items = result if isinstance(result, tuple) else (result,)
    parts = [p for item in items for p in (vars(item).values() if hasattr(item, "__dict__") else [item])]
    total = 1024
    for part in parts:
        if isinstance(part, np.ndarray):
            total += part.nbytes
        elif isinstance(part, Image.Image):
            total += part.width * part.height * len(part.getbands())
    return total


class ModelRegistry:
    """The loaded models of a server process: one version per model name, so a promotion replaces the old
    model in memory instead of adding to it. `load(name)` builds a model; `prepare(classifier)` then runs in
    the background (e.g. attaching a faster runtime) without delaying the first answer."""

    def __init__(self, load, prepare=None):
        self._load, self._prepare = load, prepare
        self._models = {}  # name -> (version, classifier)
        self._locks = {}
        self._lock = threading.Lock()

    def get(self, name: str, version: str):
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:  # one load per name at a time; other names load in parallel
            cached = self._models.get(name)
            if cached and cached[0] == version:
                return cached[1]
            classifier = self._load(name)
            self._models[name] = (version, classifier)
        if self._prepare:  # not a daemon: torch work cut off at interpreter exit aborts the process
            threading.Thread(target=self._prepare_quietly, args=(classifier,), daemon=False,
                             name=f"prepare-{name}").start()
        return classifier

    def _prepare_quietly(self, classifier):
        try:
            self._prepare(classifier)
        except Exception:  # a faster runtime is optional: without it the model still answers
            log.exception("background preparation of %s failed", classifier.name)

    def warm(self, names, version_of) -> threading.Thread:
        """Load `names` in a background thread (errors are logged, not raised: pages report them on use)."""
        def run():
            for name in names:
                try:
                    self.get(name, version_of())
                except Exception:
                    log.exception("warm-up of %s failed", name)
        thread = threading.Thread(target=run, daemon=False, name="model-warm-up")
        thread.start()
        return thread

    def loaded(self) -> dict:
        return {name: version for name, (version, _) in self._models.items()}
