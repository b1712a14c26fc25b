"""Figures of an evaluation report: a reliability diagram and ROC curves, as PNG files for a study."""

from pathlib import Path


def write_plots(report: dict, folder, title: str) -> list:
    """reliability.png (accuracy against confidence, with ECE) and roc.png (one-vs-rest, AUC per class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    bins = report["reliability"]
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=1 / 15, edgecolor="k",
           alpha=0.7, label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlabel="calibrated confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"{title}: ECE {report['ece']:.3f}, n = {report['n']}")
    ax.legend(loc="upper left")
    fig.savefig(folder / "reliability.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    for c, curve in report["roc"].items():
        ax.plot(curve["fpr"], curve["tpr"], label=f"{c} (AUC {auc(curve['fpr'], curve['tpr']):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC (thinned curves)")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(folder / "roc.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [folder / "reliability.png", folder / "roc.png"]
