"""Is this input a dermoscopic lesion image like the training images? Cheap colour statistics, and the
Mahalanobis distance of the model's own last-stage pooled feature to the nearest training class (Lee et al.,
NeurIPS 2018), with a threshold from the validation split.

Class means and one shared covariance (Ledoit-Wolf shrinkage, scikit-learn) come from training-split
features of the unaugmented view; the threshold is the 99.9th percentile of validation distances, so about
0.1% of real validation images are flagged. The layer and the percentile were chosen by measurement
(docs/safety.md): on the shipped student the fused feature caught 5 of 29 non-lesion images, the last stage
all of them, with 0.6% of the external validation images flagged at the 99.9th percentile (2.6% at the
99.5th). Arrays travel inside the model file as base64 float16 (the symmetric precision as its upper triangle),
small enough for the int8 model's metadata.
"""

import base64

import numpy as np
from sklearn.covariance import LedoitWolf

DEFAULT_PERCENTILE = 99.9
NOT_DERMOSCOPIC = "does not look like a dermoscopic image of a skin lesion"
# Colour-statistic limits set below what real dermoscopic images show, on 64 x 64 copies (all 10,015 HAM10000
# images / the 504 external validation images): smallest channel std min 1.43 / 3.91; texture min 1.98 / 2.64;
# mean chroma min 5.19 / 13.42; skin-toned fraction min 0.01 / 0.26. Every one of those images
# passes (tests/test_safety.py::test_dermoscopy_check_passes_real_images, with the full data).
MIN_CHANNEL_STD = 1.0  # per channel, 0-255 scale
MIN_TEXTURE = 1.0  # mean absolute Laplacian of the luminance
MIN_CHROMA = 4.0  # mean of max(R, G, B) - min(R, G, B): dermoscopy is a colour image, never greyscale
MIN_SKIN_TONED = 0.005  # pixels whose red channel is not below green and blue (sky, foliage have none)


def _encode(array, symmetric: bool = False) -> dict:
    """Base64 float16; a symmetric matrix keeps only its upper triangle (half the bytes of the int8 file's
    metadata)."""
    array = np.asarray(array)
    blob = {"shape": list(array.shape)}
    if symmetric:
        array, blob["triangle"] = array[np.triu_indices(len(array))], "upper"
    array = np.ascontiguousarray(array, dtype=np.float16)
    return {**blob, "float16_base64": base64.b64encode(array.tobytes()).decode("ascii")}


def _decode(blob: dict) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(blob["float16_base64"]), dtype=np.float16).astype(np.float64)
    if blob.get("triangle") != "upper":
        return values.reshape(blob["shape"])
    n = blob["shape"][0]
    matrix = np.zeros((n, n))
    matrix[np.triu_indices(n)] = values
    return matrix + np.triu(matrix, 1).T


def fit_class_gaussians(features, labels, num_classes: int):
    """(class means K x D, shared precision D x D) of features; classes absent from `labels` get no mean."""
    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    present = [k for k in range(num_classes) if (labels == k).any()]
    means = np.stack([features[labels == k].mean(axis=0) for k in present])
    centred = features - means[np.searchsorted(present, labels)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    return means, precision


def mahalanobis_distance(features, means, precision) -> np.ndarray:
    """Squared Mahalanobis distance of each feature row to the nearest class mean."""
    diff = np.asarray(features, dtype=np.float64)[:, None, :] - np.asarray(means, dtype=np.float64)[None]
    return np.einsum("nkd,de,nke->nk", diff, np.asarray(precision, dtype=np.float64), diff).min(axis=1)


def fit_ood(train_features, train_labels, val_features, num_classes: int,
            percentile: float = DEFAULT_PERCENTILE) -> dict:
    """The stored feature-distance test: class means, precision and the validation-percentile threshold."""
    means, precision = fit_class_gaussians(train_features, train_labels, num_classes)
    means, precision = _decode(_encode(means)), _decode(_encode(precision, symmetric=True))  # as stored
    val_distance = mahalanobis_distance(val_features, means, precision)
    threshold = float(np.percentile(val_distance, percentile))
    return {"method": "mahalanobis, last-stage pooled feature, nearest training class, Ledoit-Wolf shared covariance",
            "threshold": threshold, "percentile": percentile, "n_train": int(len(train_features)),
            "val_flagged_fraction": float((val_distance > threshold).mean()),
            "means": _encode(means), "precision": _encode(precision, symmetric=True)}


class FeatureDistance:
    """The fitted test, decoded once per loaded model."""

    def __init__(self, ood: dict):
        self.means, self.precision = _decode(ood["means"]), _decode(ood["precision"])
        self.threshold = float(ood["threshold"])
        self.percentile = float(ood.get("percentile", DEFAULT_PERCENTILE))

    def distance(self, features) -> np.ndarray:
        return mahalanobis_distance(features, self.means, self.precision)

    def unlike_training(self, features) -> np.ndarray:
        return self.distance(features) > self.threshold


def dermoscopy_check(image) -> list:
    """Reasons an image does not look dermoscopic (empty list when it plausibly does).

    Cheap colour statistics every real dermoscopic image in our data sets passes: each colour channel varies,
    the luminance has texture (not a smooth gradient), the image has colour (not greyscale: text, scans,
    x-rays), and some pixels are skin-toned (red channel not below blue and green).
    Rejects blank and solid-colour images, gradients, greyscale images, sky, foliage and the like.
    """
    arr = np.asarray(image.convert("RGB").resize((64, 64), resample=2), dtype=np.float32)
    channel_std = arr.reshape(-1, 3).std(axis=0)
    if channel_std.min() < MIN_CHANNEL_STD:
        return [f"{NOT_DERMOSCOPIC}: the image is nearly uniform in colour"]
    reasons = []
    luma = arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    laplacian = 4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1] - luma[1:-1, :-2] - luma[1:-1, 2:]
    if np.abs(laplacian).mean() < MIN_TEXTURE:
        reasons.append(f"{NOT_DERMOSCOPIC}: the image has no skin texture (smooth gradient or blank)")
    if (arr.max(axis=2) - arr.min(axis=2)).mean() < MIN_CHROMA:
        reasons.append(f"{NOT_DERMOSCOPIC}: the image has no colour (greyscale)")
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    skin_like = ((r + 8 >= g) & (r + 8 >= b)).mean()
    if skin_like < MIN_SKIN_TONED:
        reasons.append(f"{NOT_DERMOSCOPIC}: colours unlike skin ({skin_like:.0%} skin-toned pixels)")
    return reasons
