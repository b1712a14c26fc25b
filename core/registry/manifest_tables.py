"""Markdown tables of the shipped models' held-out figures, read from `weights/manifest.json`.

README and docs quote these tables; `python -m core.release --tables` prints them, so every number there comes
from the manifest a release wrote rather than from a hand copy.
"""

from core.evaluation.report import with_ci

MODELS = ("teacher", "student", "quantized")


def _value(report: dict, key: str, ci: bool = False) -> str:
    return with_ci(report[key], report.get("ci95", {}).get(key) if ci else None)


def _rows(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def results_table(manifest: dict) -> str:
    """Balanced accuracy (95% CI), accuracy and macro AUC per model, HAM10000 test split beside the external set."""
    rows = []
    for name in MODELS:
        entry = manifest["models"][name]
        row = [name]
        for split in ("test", "external"):
            report = entry.get(split)
            row += ([_value(report, "balanced_accuracy", ci=True), _value(report, "accuracy"), _value(report, "auc")]
                    if report else ["—"] * 3)
        rows.append(row)
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
        row = [name, f"{point['threshold']:.3f}", f"{point['val_sensitivity']:.3f} / {point['val_specificity']:.3f}"]
        for split in ("test", "external"):
            triage = entry.get(split, {}).get("triage", {}).get(target)
            row += ([_value(triage, "sensitivity", ci=True), _value(triage, "specificity", ci=True)] if triage
                    else ["—"] * 2)
        rows.append(row)
    return _rows(["model", f"threshold ({float(target):.0%} point)", "val. sens. / spec.", "HAM test sensitivity",
                  "specificity", "external sensitivity", "specificity"], rows)


def gate_table(manifest: dict) -> str:
    """Real dermoscopic images each model's input gate refused, and calibration error, on each held-out set."""
    rows = []
    for name in MODELS:
        entry = manifest["models"][name]
        row = [name]
        for split in ("test", "external"):
            report = entry.get(split)
            refused = round(report["not_dermoscopic_fraction"] * report["n"]) if report else None
            row.append(f"{report['not_dermoscopic_fraction']:.1%} ({refused} of {report['n']})" if report else "—")
        row += [f"{entry[split]['ece']:.3f}" if entry.get(split) else "—" for split in ("test", "external")]
        row.append("on" if entry["calibration"].get("tta") else "off")
        rows.append(row)
    return _rows(["model", "refused as not dermoscopic: HAM test", "external", "ECE test", "ECE external", "TTA"],
                 rows)


def manifest_tables(manifest: dict) -> str:
    """All headline tables, each under a heading naming its source."""
    parts = [f"Release of {manifest.get('created', '?')} (weights/manifest.json)", "", results_table(manifest)]
    for target in sorted(next(iter(manifest["models"].values()))["calibration"].get("referral", {})):
        parts += ["", f"Referral flag at the {float(target):.0%} validation-sensitivity point:", "",
                  referral_table(manifest, target)]
    parts += ["", "Real images refused by the input gate, and calibration error:", "", gate_table(manifest)]
    return "\n".join(parts)
