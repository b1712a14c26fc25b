"""Temperature scaling (Guo et al. 2017), expected calibration error, and the `uncertain` rule.

The rule, fitted on the validation split: a prediction is uncertain when its calibrated top
probability is below `confidence_threshold` (the lowest value at which validation predictions at
or above it reach `target_accuracy`) or its energy score is above the 99th percentile of
validation energies (looks unlike the training distribution).
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


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


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """Equal-width-bin ECE of the top-class confidence."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    return float(ece)


@dataclass
class Calibration:
    temperature: float = 1.0
    confidence_threshold: float = 0.5
    energy_threshold: float = float("inf")
    target_accuracy: float = 0.9
    ece_before: float = float("nan")
    ece_after: float = float("nan")
    val_uncertain_fraction: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def fit_calibration(val_logits, val_labels, target_accuracy: float = 0.9) -> Calibration:
    """Fit temperature and the uncertain thresholds on validation logits."""
    val_logits, val_labels = np.asarray(val_logits), np.asarray(val_labels)
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
    energies = energy_score(val_logits, t)
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
    )
