"""Markdown tables of the shipped models' held-out figures, read from `weights/manifest.json`.

README and docs quote these tables; `python -m core.release --tables` prints them, so every number there comes
from the manifest a release wrote rather than from a hand copy.
"""

from core.evaluation.report import with_ci

MODELS = ("teacher", "student", "quantized")
SPLITS = ("test", "external")


def _value(report: dict, key: str, ci: bool = False) -> str:
    return with_ci(report[key], report.get("ci95", {}).get(key) if ci else None)


def _rows(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _per_split(entry: dict, cells, width: int, part=lambda report: report) -> list:
    """cells(part(report)) on the HAM test split, then on the external set; dashes where the manifest has none."""
    row = []
    for split in SPLITS:
        figures = part(entry.get(split) or {})
        row += cells(figures) if figures else ["—"] * width
    return row


def results_table(manifest: dict) -> str:
    """Balanced accuracy (95% CI), accuracy and macro AUC per model, HAM10000 test split beside the external set."""
    rows = [[name] + _per_split(manifest["models"][name], lambda r: [
        _value(r, "balanced_accuracy", ci=True), _value(r, "accuracy"), _value(r, "auc")], 3) for name in MODELS]
    n_test, n_ext = manifest["test_split"]["n"], manifest.get("external", {}).get("n", 0)
    return _rows(["model", f"HAM10000 test (n={n_test}): balanced acc.", "accuracy", "macro AUC",
                  f"external (n={n_ext}): balanced acc.", "accuracy", "macro AUC"], rows)


def referral_table(manifest: dict, target: str = "0.90") -> str:
    """The referral flag at the threshold chosen on validation for `target` sensitivity: its validation point and
    its sensitivity / specificity (95% CI) for malignant lesions on each held-out set."""
    rows = []
    for name in MODELS:
        entry = manifest["models"][name]
        point = entry["calibration"]["referral"][target]
        validation = f"{point['val_sensitivity']:.3f} / {point['val_specificity']:.3f}"
        sens_spec = lambda t: [_value(t, "sensitivity", ci=True), _value(t, "specificity", ci=True)]  # noqa: E731
        rows.append([name, f"{point['threshold']:.3f}", validation]
                    + _per_split(entry, sens_spec, 2, part=lambda report: report.get("triage", {}).get(target)))
    return _rows(["model", f"threshold ({float(target):.0%} point)", "val. sens. / spec.", "HAM test sensitivity",
                  "specificity", "external sensitivity", "specificity"], rows)


def gate_table(manifest: dict) -> str:
    """Real dermoscopic images each model's input gate refused, and calibration error, on each held-out set."""
    def refused(r):
        share = r["not_dermoscopic_fraction"]
        return [f"{share:.1%} ({round(share * r['n'])} of {r['n']})"]

    rows = [[name] + _per_split(entry, refused, 1) + _per_split(entry, lambda r: [f"{r['ece']:.3f}"], 1)
            + ["on" if entry["calibration"].get("tta") else "off"]
            for name, entry in ((name, manifest["models"][name]) for name in MODELS)]
    return _rows(["model", "refused as not dermoscopic: HAM test", "external", "ECE test", "ECE external", "TTA"],
                 rows)


def ablation_table(manifest: dict) -> str:
    """Every ablation row: HAM test figures, external balanced accuracy and referral at the 90% point where
    measured, size and latency."""
    def referral(row):
        point = (row.get("external") or {}).get("referral_90")
        return f"{point['sensitivity']:.3f} / {point['specificity']:.3f}" if point else "—"

    rows = [[r["name"], f"{r['accuracy']:.3f}", f"{r['balanced_accuracy']:.3f}", f"{r['macro_f1']:.3f}",
             f"{r['auc']:.3f}", _value(r["external"], "balanced_accuracy", ci=True) if r.get("external") else "—",
             referral(r), f"{r['params']:,}", f"{r['file_bytes'] / 1024:.0f} KB",
             f"{r['latency_ms_p50']:.2f}" if r.get("latency_ms_p50") is not None else "—"]
            for r in manifest.get("ablation", [])]
    return _rows(["variant", "HAM test accuracy", "balanced acc.", "macro-F1", "macro AUC", "external balanced acc.",
                  "external referral @90%: sens. / spec.", "parameters", "file size", "batch-1 p50 (ms)"], rows)


def manifest_tables(manifest: dict) -> str:
    """All headline tables, each under a heading naming its source."""
    parts = [f"Release of {manifest.get('created', '?')} (weights/manifest.json)", "", results_table(manifest)]
    for target in sorted(next(iter(manifest["models"].values()))["calibration"].get("referral", {})):
        parts += ["", f"Referral flag at the {float(target):.0%} validation-sensitivity point:", "",
                  referral_table(manifest, target)]
    parts += ["", "Real images refused by the input gate, and calibration error:", "", gate_table(manifest)]
    parts += ["", "Ablation (HAM10000 test split; external figures where measured):", "",
              ablation_table(manifest)]
    return "\n".join(parts)
