"""A labelled set (Compare models, "Your images") evaluated by several models through the shared work pool.

Each model's outputs are computed in parts of PART_IMAGES images, all queued at once, so that every worker of the
pool is busy (torch runs one thread per worker: a single job would use one core of two); one report job per model
then joins its parts. Results stay out of the shared cache (a user's private upload).
"""

from core.evaluation.clinic import outputs_part, report_on
from core.evaluation.inference import concat_outputs

PART_IMAGES = 64
COST_RANK = {"quantized": 0, "student": 1, "teacher": 2}  # queued cheapest first: their figures arrive first


def evaluate_labelled_set(pool, classifiers: dict, decoded, set_key: str, wait, progress=None,
                          part_images: int = PART_IMAGES) -> dict:
    """{model name: report} of each classifier on the decoded set. `wait(key, future)` returns a job's result (a
    page passes its heartbeat wait); `progress(done, total, name)` after each job. If waiting is interrupted,
    every job still queued for this set is released."""
    order = sorted(classifiers, key=lambda name: COST_RANK.get(name, 1))
    n = len(decoded.image_ids)
    parts = [slice(start, min(start + part_images, n)) for start in range(0, n, part_images)]
    queued = {name: [] for name in order}
    for name in order:
        classifier = classifiers[name]
        for i, rows in enumerate(parts):
            key = ("upload-outputs", set_key, classifier.sha256, i)
            queued[name].append((key, pool.submit(key, outputs_part, classifier, decoded, rows, priority=2,
                                                  keep=False)))
    total, done, reports = (len(parts) + 1) * len(classifiers), 0, {}
    try:
        for name in order:
            classifier, outputs = classifiers[name], []
            for key, future in queued[name]:
                outputs.append(wait(key, future))
                done += 1
                if progress:
                    progress(done, total, name)
            key = ("upload-report", set_key, classifier.sha256)
            reports[name] = wait(key, pool.submit(key, report_on, classifier, decoded, concat_outputs(outputs),
                                                  priority=1, keep=False))  # ahead of other models' parts
            done += 1
            if progress:
                progress(done, total, name)
    except BaseException:
        for jobs in queued.values():
            for key, _ in jobs:
                pool.release(key)
        raise
    return {name: reports[name] for name in classifiers}
