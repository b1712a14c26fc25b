"""Benchmarks of the shipped models, measured in one run on this machine (CLI: `python -m core.bench`).

Per model: params, file size, input size, batch-1 latency p50/p95 and batch-32 throughput; for ONNX models
the kernels ONNX Runtime executed; with explanations, Grad-CAM, Score-CAM and LIME times. Ratios within one
run only: the machine is shared.
"""

import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

from core.quantization.onnx_export import executed_op_types

ORT_TWIN = "_ort_fp32"  # "<shipped torch model>_ort_fp32": its fp32 ONNX export, timed in ONNX Runtime
DEFAULT_MODELS = ("teacher", "teacher" + ORT_TWIN, "student", "student" + ORT_TWIN, "quantized")
# Student over teacher batch-1 latency, compared within one runtime (eager PyTorch, ONNX Runtime)
LATENCY_PAIRS = {"pytorch": ("student", "teacher"), "onnxruntime": ("student" + ORT_TWIN, "teacher" + ORT_TWIN)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_fn(fn, x, runs: int, warmup: int = 10) -> np.ndarray:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return np.array(times) * 1000.0


def bench_classifier(classifier, runs: int = 100) -> dict:
    size = classifier.config.img_size
    x1 = torch.randn(1, 3, size, size)
    x32 = torch.randn(32, 3, size, size)
    lat = time_fn(classifier.logits, x1, runs)
    t32 = time_fn(classifier.logits, x32, max(5, runs // 10), warmup=2)
    return {
        "params": classifier.params,
        "file_bytes": classifier.path.stat().st_size,
        "input_size": size,
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "throughput_ips_b32": float(32 / (np.median(t32) / 1000.0)),
        "runtime": "onnxruntime" if classifier.session is not None else "pytorch",
        **({"executed_ops": executed_op_types(classifier.path, size)} if classifier.session is not None else
           {"gflops_per_image": forward_gflops(classifier.module, size)}),
    }


def forward_gflops(module, size: int) -> float:
    """Forward cost of one image in GFLOP (torch's FlopCounterMode: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def bench_explanations(models=("teacher", "student", "quantized"), threads: int = 2, repeats: int = 3,
                       progress=None) -> dict:
    """Median seconds of each explanation method per model, default settings, one gallery image."""
    from PIL import Image

    from core.explain.heatmaps import METHODS, explain
    from core.paths import PROJECT_ROOT
    from core.registry.loader import load_with_counterpart, with_batch_runtime

    torch.set_num_threads(threads)
    image = Image.open(sorted((PROJECT_ROOT / "assets" / "gallery").glob("*.jpg"))[0]).convert("RGB")
    out = {}
    for name in models:
        classifier, counterpart = load_with_counterpart(name.removesuffix("_ort"))
        if name.endswith("_ort"):  # LIME samples and Score-CAM masks through the ONNX Runtime twin
            with_batch_runtime(classifier)
        out[name] = {}
        for method in METHODS:
            if progress:
                progress(f"{name} {method}")
            explain(classifier, image, method, float_classifier=counterpart)  # warm-up
            times = [explain(classifier, image, method, float_classifier=counterpart).seconds for _ in range(repeats)]
            out[name][method] = {"seconds_median": float(np.median(times)), "repeats": repeats}
    return {"explanations": out, "threads": threads, "cpu": cpu_name(), "image_size": list(image.size)}


def bench_target(name: str, root=None):
    """A shipped model, or with the ORT_TWIN suffix a shipped torch model's fp32 ONNX twin in ONNX Runtime (the
    student's is the one the app's explanations run in; the teacher's times it in the student's runtime)."""
    from core.registry.loader import load_model, onnx_twin_path

    if name.endswith(ORT_TWIN):
        return load_model(onnx_twin_path(load_model(name.removesuffix(ORT_TWIN), root)))
    return load_model(name, root)


def latency_ratios(models: dict) -> dict:
    """{runtime: student p50 / teacher p50} for each runtime in which both were timed in this run."""
    return {runtime: models[student]["latency_ms_p50"] / models[teacher]["latency_ms_p50"]
            for runtime, (student, teacher) in LATENCY_PAIRS.items() if student in models and teacher in models}


def run_bench(models=DEFAULT_MODELS, threads: int = 2, runs: int = 100, progress=None, root=None) -> dict:
    """Benchmark results as {"models": {name: {...}}, "threads": N, "cpu": "..."}; `root`: a weights folder
    other than the active one (a release benchmarks its staged models)."""
    with _BENCH_LOCK:  # one benchmark at a time: each sets the process-wide thread count
        return _run_bench(models, threads, runs, progress, root)


_BENCH_LOCK = threading.Lock()


def _run_bench(models, threads, runs, progress, root) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = {}
        for name in models:
            if progress:
                progress(name)
            results[name] = bench_classifier(bench_target(name, root), runs)
    finally:
        torch.set_num_threads(previous)  # a server's thread setting is not changed by a benchmark
    return {"models": results, "student_over_teacher_latency": latency_ratios(results), "threads": threads,
            "cpu": cpu_name(), "torch": torch.__version__}
