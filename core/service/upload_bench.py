"""Benchmark of Compare models' "Your images" path: a labelled zip checked, decoded and evaluated by each shipped
model through the app's work pool, as the page does it, with wall time per step and the process's memory.

"Idle" memory is this process once the models are loaded and every worker has evaluated the shipped sample with
each of them (what a warmed-up server holds); the peak is sampled every 20 ms while the upload is evaluated.
"""

import gc
import io
import threading
import time
import zipfile
from pathlib import Path

import psutil

from core.data.external_sample import SAMPLE_PATH
from core.evaluation.clinic import decode_upload
from core.registry.loader import SHIPPED, load_model
from core.service.labelled_set import evaluate_labelled_set
from core.service.pool import ModelWorkPool


def folder_zip(folder) -> bytes:
    """A labelled folder (`labels.csv` with image_id,dx and its images anywhere below) as the zip a browser uploads."""
    folder = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not compress further
        for path in sorted(folder.rglob("*")):
            if path.is_file() and (path.suffix.lower() in (".jpg", ".jpeg", ".png") or path.name == "labels.csv"):
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


class PeakMemory:
    """Highest resident set size of this process while the `with` block runs (sampled)."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()

    def _sample(self):
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_upload(zip_bytes: bytes, models=SHIPPED, progress=None) -> dict:
    """Seconds to check and decode the upload, and to evaluate it as the page does (`evaluate_labelled_set`: all
    models' parts queued at once on the pool's workers), with the time at which each model's report was done;
    plus idle and peak memory (MB) and their ratio. `progress(name)` as each model is loaded."""
    pool = ModelWorkPool()  # the app's pool: one worker per core, torch at one thread each
    classifiers = {}
    for name in models:
        if progress:
            progress(name)
        classifiers[name] = load_model(name)
    sizes = {c.config.img_size for c in classifiers.values()} | {
        c.gate.config.img_size for c in classifiers.values() if c.gate is not None}
    warm = decode_upload(sizes, zip_bytes=SAMPLE_PATH.read_bytes())  # the shipped 21-image sample
    # as a server that has answered before, on every worker (parts of 4 images spread the sample over both)
    evaluate_labelled_set(pool, classifiers, warm, "warm-up", lambda key, future: future.result(), part_images=4)
    gc.collect()
    idle = psutil.Process().memory_info().rss
    seconds = {}
    with PeakMemory() as memory:
        start = time.perf_counter()
        decoded = pool.submit("decode", decode_upload, sizes, keep=False, zip_bytes=zip_bytes).result()
        seconds["check_and_decode"] = time.perf_counter() - start
        start = time.perf_counter()
        evaluate_labelled_set(pool, classifiers, decoded, "bench", lambda key, future: future.result(),
                              progress=lambda done, total, name: seconds.__setitem__(
                                  f"until {name} done", time.perf_counter() - start))
        seconds["evaluate_all"] = time.perf_counter() - start
    return {"images": len(decoded.image_ids), "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "rss_idle_mb": round(idle / 2**20, 1), "rss_peak_mb": round(memory.peak / 2**20, 1),
            "peak_over_idle": round(memory.peak / idle, 3), "workers": pool.workers}

