"""CLI benchmark: `python -m core.bench [--models teacher,student,quantized] [--threads N] [--json OUT] [--xai]`.

Per model, in one run on this machine: params, file_bytes, input_size, batch-1 latency p50/p95
(>= 50 timed runs after warm-up) and batch-32 throughput. Besides the shipped models it also times
the student's fp32 ONNX Runtime path (`student_ort_fp32`), so that int8 is compared with the
fastest fp32 runtime as well as with eager PyTorch; for ONNX models it lists the kernels ONNX Runtime
actually executed (int8 QLinearConv or float Conv). `--xai` times Grad-CAM, Score-CAM and LIME per
model on one gallery image instead. Compare ratios within one run only.
"""

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from core.quantization.onnx_export import executed_op_types

DEFAULT_MODELS = ("teacher", "student", "student_ort_fp32", "quantized")


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
    from core.models.loader import load_with_counterpart, with_batch_runtime
    from core.paths import PROJECT_ROOT

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


def student_ort_fp32(root=None):
    """The shipped student's fp32 ONNX twin (the one the app's explanations run in), in ONNX Runtime."""
    from core.models.loader import load_model, onnx_twin_path

    return load_model(onnx_twin_path(load_model("student", root)))


def run_bench(models=DEFAULT_MODELS, threads: int = 2, runs: int = 100, progress=None, root=None) -> dict:
    """Benchmark results as {"models": {name: {...}}, "threads": N, "cpu": "..."}; `root`: a weights folder
    other than the active one (a release benchmarks its staged models)."""
    with _BENCH_LOCK:  # one benchmark at a time: each sets the process-wide thread count
        return _run_bench(models, threads, runs, progress, root)


_BENCH_LOCK = threading.Lock()


def _run_bench(models, threads, runs, progress, root) -> dict:
    from core.models.loader import load_model

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = {}
        for name in models:
            if progress:
                progress(name)
            classifier = student_ort_fp32(root) if name == "student_ort_fp32" else load_model(name, root)
            results[name] = bench_classifier(classifier, runs)
    finally:
        torch.set_num_threads(previous)  # a server's thread setting is not changed by a benchmark
    return {"models": results, "threads": threads, "cpu": cpu_name(), "torch": torch.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=100, help="timed batch-1 runs per model (>= 50)")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--xai", action="store_true", help="time the explanation methods instead")
    p.add_argument("--xai-models", default="teacher,student,student_ort,quantized",
                   help="with --xai; student_ort: the student with LIME/Score-CAM passes in ONNX Runtime")
    a = p.parse_args(argv)
    if a.runs < 50:
        print("error: --runs must be >= 50", file=sys.stderr)
        return 2
    from core.models.checkpoint import CheckpointError

    names = [m.strip() for m in a.models.split(",") if m.strip()]
    say = lambda what: print(f"benchmarking {what} ...", file=sys.stderr)  # noqa: E731
    try:
        if a.xai:
            result = bench_explanations(a.xai_models.split(","), a.threads, progress=say)
        else:
            result = run_bench(names, a.threads, a.runs, progress=say)
    except (CheckpointError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if a.json_out:
        Path(a.json_out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
