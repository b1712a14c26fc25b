"""Temperature scaling (Guo et al. 2017), expected calibration error, the `uncertain` rule and the
referral operating points.

The rule, fitted on the validation split: a prediction is uncertain when its calibrated top
probability is below `confidence_threshold` (the lowest value at which validation predictions at
or above it reach `target_accuracy`) or its energy score is above the 99th percentile of
validation energies (looks unlike the training distribution). Energy is computed from the plain
view's logits, also under TTA: the log of averaged probabilities would make it a second
confidence threshold.

Referral: malignancy risk = calibrated P(mel) + P(bcc) + P(akiec); for each target sensitivity the
highest threshold whose validation sensitivity for malignant lesions reaches the target.
"""

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.classes import CLASSES, SUSPICIOUS

REFERRAL_TARGETS = (0.90, 0.95)  # sensitivities a deployer can choose; the first is the default


def fit_temperature(logits, labels, max_iter: int = 200) -> float:
    """Scalar T > 0 minimising validation NLL of softmax(logits / T)."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def softmax_np(logits, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def energy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """-T * logsumexp(logits / T): higher means less like the training data (Liu et al. 2020)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = z.max(axis=1, keepdims=True)
    return -temperature * (m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))


def reliability_bins(probs, labels, n_bins: int = 15) -> list:
    """Equal-width bins of the top-class confidence: [{lo, hi, n, confidence, accuracy}] for non-empty bins
    (the data of a reliability diagram)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            bins.append({"lo": float(lo), "hi": float(hi), "n": int(in_bin.sum()),
                         "confidence": float(conf[in_bin].mean()),
                         "accuracy": float((pred[in_bin] == labels[in_bin]).mean())})
    return bins


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Equal-width-bin ECE of the top-class confidence."""
    bins = reliability_bins(probs, labels, n_bins)
    n = sum(b["n"] for b in bins)
    return float(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins))


def malignancy_risk(probs, classes=CLASSES) -> np.ndarray:
    """Calibrated probability that a lesion is malignant or pre-malignant: P(mel) + P(bcc) + P(akiec)."""
    columns = [k for k, c in enumerate(classes) if c in SUSPICIOUS]
    return np.asarray(probs, dtype=np.float64)[:, columns].sum(axis=1)


def is_malignant(labels, classes=CLASSES) -> np.ndarray:
    return np.isin(np.asarray(labels), [k for k, c in enumerate(classes) if c in SUSPICIOUS])


def referral_key(target: float) -> str:
    return f"{target:.2f}"


def fit_referral_threshold(risk, malignant, target: float) -> dict:
    """The highest risk threshold at which validation sensitivity reaches `target`, with the validation
    sensitivity and specificity it gives (a lesion is referred when risk >= threshold)."""
    risk, malignant = np.asarray(risk, dtype=np.float64), np.asarray(malignant, dtype=bool)
    positives = np.sort(risk[malignant])[::-1]
    if not len(positives) or malignant.all():  # nothing to validate a threshold on: no referral advice
        return {"threshold": None, "target_sensitivity": target, "val_sensitivity": None,
                "val_specificity": None, "val_malignant": int(malignant.sum()),
                "val_benign": int((~malignant).sum())}
    threshold = float(positives[int(np.ceil(target * len(positives))) - 1])
    return {"threshold": threshold, "target_sensitivity": target,
            "val_sensitivity": float((risk[malignant] >= threshold).mean()),
            "val_specificity": float((risk[~malignant] < threshold).mean()),
            "val_malignant": int(malignant.sum()), "val_benign": int((~malignant).sum())}


@dataclass
class Calibration:
    temperature: float = 1.0
    confidence_threshold: float = 0.5
    energy_threshold: float = float("inf")
    target_accuracy: float = 0.9
    ece_before: float = float("nan")
    ece_after: float = float("nan")
    val_uncertain_fraction: float = float("nan")
    referral: dict = field(default_factory=dict)  # referral_key(target) -> fit_referral_threshold(...)
    energy_view: str = "plain"  # the energy threshold was fitted on the unaugmented view's logits

    def to_dict(self) -> dict:
        return asdict(self)


def fit_calibration(val_logits, val_labels, plain_logits=None, classes=CLASSES,
                    target_accuracy: float = 0.9) -> Calibration:
    """Fit temperature, the uncertain thresholds and the referral thresholds on validation logits.
    `plain_logits`: the unaugmented view's logits, for the energy score (default: `val_logits`)."""
    val_logits, val_labels = np.asarray(val_logits), np.asarray(val_labels)
    plain_logits = val_logits if plain_logits is None else np.asarray(plain_logits)
    t = fit_temperature(val_logits, val_labels)
    probs = softmax_np(val_logits, t)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == val_labels
    threshold = 1.0
    for candidate in np.unique(conf):  # ascending: first that reaches the target wins
        kept = conf >= candidate
        if correct[kept].mean() >= target_accuracy:
            threshold = float(candidate)
            break
    energies = energy_score(plain_logits, t)
    energy_threshold = float(np.percentile(energies, 99))
    uncertain = (conf < threshold) | (energies > energy_threshold)
    return Calibration(
        temperature=t,
        confidence_threshold=threshold,
        energy_threshold=energy_threshold,
        target_accuracy=target_accuracy,
        ece_before=expected_calibration_error(softmax_np(val_logits), val_labels),
        ece_after=expected_calibration_error(probs, val_labels),
        val_uncertain_fraction=float(uncertain.mean()),
        referral={referral_key(target): fit_referral_threshold(malignancy_risk(probs, classes),
                                                               is_malignant(val_labels, classes), target)
                  for target in REFERRAL_TARGETS},
    )
