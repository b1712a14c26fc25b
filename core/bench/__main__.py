"""CLI benchmark: `python -m core.bench [--models teacher,student,quantized] [--threads N] [--json OUT] [--xai]`.

Per model, in one run on this machine: params, file_bytes, input_size, batch-1 latency p50/p95
(>= 50 timed runs after warm-up) and batch-32 throughput. Besides the shipped models it also times
the student's fp32 ONNX Runtime path (`student_ort_fp32`), so that int8 is compared with the
fastest fp32 runtime as well as with eager PyTorch, and the teacher's (`teacher_ort_fp32`, exported once
per file into the cache), so that the student/teacher latency ratio is given within each runtime
(`student_over_teacher_latency`); for ONNX models it lists the kernels ONNX Runtime
actually executed (int8 QLinearConv or float Conv). `--xai` times Grad-CAM, Score-CAM and LIME per
model on one gallery image instead. `--upload DIR` times Compare models' "Your images" path instead: DIR (a
labelled folder: labels.csv with image_id,dx, and its images) zipped as a browser uploads it, checked, decoded
and evaluated by each model through the app's work pool, with the process's idle and peak memory.
Compare ratios within one run only.
"""

import argparse
import json
import sys
from pathlib import Path

from core.models.checkpoint import CheckpointError
from core.registry.bench import DEFAULT_MODELS, bench_explanations, run_bench
from core.registry.loader import SHIPPED
from core.service.upload_bench import bench_upload, folder_zip


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
    p.add_argument("--upload", metavar="DIR", help="time the labelled-upload evaluation of this folder instead")
    a = p.parse_args(argv)
    if a.runs < 50:
        print("error: --runs must be >= 50", file=sys.stderr)
        return 2
    names = [m.strip() for m in a.models.split(",") if m.strip()]
    say = lambda what: print(f"benchmarking {what} ...", file=sys.stderr)  # noqa: E731
    try:
        if a.upload:
            result = bench_upload(folder_zip(a.upload), [n for n in names if n in SHIPPED], progress=say)
        elif a.xai:
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
