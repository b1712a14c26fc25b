"""Answers a clinician can act on: the input gate, the referral flag, energy under TTA, and safe promotion."""

import json

import numpy as np
import pytest
import torch

from core.data.preprocess import load_image
from core.evaluation.calibration import fit_referral_threshold
from core.evaluation.ood import (NOT_DERMOSCOPIC, dermoscopy_check, fit_class_gaussians, fit_ood,
                                  mahalanobis_distance)
from core.evaluation.report import bootstrap_ci
from core.models.checkpoint import read_checkpoint, sha256_file
from core.predict.__main__ import main as predict_main
from core.registry.loader import load_model
from core.registry.predict import Prediction, predict_image
from core.registry.promotion import PromotionError, promote
from tests.conftest import FIXTURE, ROOT, SHARED
from tests.corpus import build_negative_corpus

NEGATIVE = build_negative_corpus()
EXTERNAL = ROOT.parent / "shared" / "data" / "isic2018_external_val"
SHIPPED_WEIGHTS = ROOT / "weights"


@pytest.fixture(scope="module")
def shipped():
    if not (SHIPPED_WEIGHTS / "manifest.json").is_file():
        pytest.skip("no shipped models")
    return {name: load_model(name, SHIPPED_WEIGHTS) for name in ("student", "quantized", "teacher")}


@pytest.mark.parametrize("name", [n for n in NEGATIVE if n.startswith(("solid_", "brown_square", "skin_gradient"))])
def test_colour_check_refuses_flat_images(name):
    assert dermoscopy_check(load_image(NEGATIVE[name]))


@pytest.mark.parametrize("model", ["student", "quantized", "teacher"])
def test_shipped_models_give_no_confident_answer_to_non_lesion_images(shipped, model):
    """Every image of the negative corpus is refused as not dermoscopic or answered as uncertain."""
    confident = {}
    for name, data in NEGATIVE.items():
        p = predict_image(shipped[model], load_image(data))
        if p.dermoscopic and not p.uncertain:
            confident[name] = f"{p.label} {p.confidence:.2f}"
    assert not confident, confident


def test_brown_square_gets_no_diagnosis(shipped):
    p = predict_image(shipped["student"], load_image(NEGATIVE["brown_square_5px"]))
    assert not p.dermoscopic and not p.referral and any(NOT_DERMOSCOPIC in r for r in p.reasons)
    assert p.to_dict()["label"] is None and p.to_dict(show_anyway=True)["shown_on_request"]


def test_predict_cli_json_for_a_non_lesion(use_weights, tmp_path, capsys):
    path = tmp_path / "brown.png"
    path.write_bytes(NEGATIVE["solid_brown"])
    assert predict_main([str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dermoscopic"] is False and out["label"] is None and out["referral"] is None
    assert predict_main([str(path), "--json", "--show-anyway"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] in {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"} and out["shown_on_request"]


def test_predict_cli_json_has_referral_fields(use_weights, capsys):
    image = next((FIXTURE / "images").glob("*.jpg"))
    assert predict_main([str(image), "--json", "--referral-sensitivity", "0.95"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"referral", "malignancy_risk", "referral_threshold", "dermoscopic", "model"} <= set(out)
    assert out["referral_target"] == 0.95 and len(out["model"]["sha256"]) == 12
    assert predict_main([str(image), "--referral-sensitivity", "0.8"]) == 2  # not a validated point


@pytest.mark.skipif(not (SHARED / "HAM10000_metadata.csv").is_file() or not EXTERNAL.is_dir(),
                    reason="full HAM10000 copy or external set not present")
def test_dermoscopy_check_passes_real_images():
    """The colour limits sit below every real dermoscopic image of HAM10000 and the external set."""
    paths = [p for p in SHARED.rglob("*.jpg")] + sorted((EXTERNAL / "images").glob("*.jpg"))
    refused = [p.name for p in paths if dermoscopy_check(load_image(p))]
    assert len(paths) > 10_000 and not refused, refused[:10]


@pytest.mark.skipif(not EXTERNAL.is_dir(), reason="external validation set not present")
def test_gate_refuses_at_most_one_percent_of_external_images(shipped):
    from core.data.ham10000 import load_external
    from core.evaluation.report import records_report

    report = records_report(shipped["student"], load_external(EXTERNAL))
    assert report["not_dermoscopic_fraction"] <= 0.01


def test_referral_threshold_reaches_target_sensitivity():
    rng = np.random.default_rng(0)
    malignant = rng.random(1000) < 0.2
    risk = np.clip(rng.normal(np.where(malignant, 0.6, 0.2), 0.2), 0, 1)
    for target in (0.9, 0.95):
        point = fit_referral_threshold(risk, malignant, target)
        assert point["val_sensitivity"] >= target
        above = risk[malignant][risk[malignant] > point["threshold"]]
        assert (len(above) / malignant.sum()) < target  # the highest threshold that reaches it
        assert 0 < point["val_specificity"] < 1


def test_uncertain_answer_still_refers():
    p = Prediction("nv", "Melanocytic nevi", 0.45, {"mel": 0.43, "nv": 0.45}, False, True, malignancy_risk=0.47,
                   referral=True, referral_threshold=0.19, referral_target=0.9, referral_val_sensitivity=0.9,
                   referral_val_specificity=0.7, reasons=["low confidence"])
    assert p.referral_text().startswith("Refer: malignancy risk 47%") and "9 in 10" in p.referral_text()
    below = Prediction("nv", "Melanocytic nevi", 0.95, {"nv": 0.95}, False, False, malignancy_risk=0.05,
                       referral=False, referral_threshold=0.19, referral_val_sensitivity=0.9)
    assert "not a sign that the lesion is benign" in below.referral_text()


def test_feature_distance_flags_far_points():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 5, (3, 8))
    labels = rng.integers(0, 3, 3000)
    feats = means[labels] + rng.normal(0, 1, (3000, 8))
    val = means[labels[:1000]] + rng.normal(0, 1, (1000, 8))
    ood = fit_ood(feats, labels, val, 3)
    assert 0 < ood["val_flagged_fraction"] <= 0.005
    from core.evaluation.ood import FeatureDistance
    test = FeatureDistance(ood)
    assert not test.unlike_training(means).any() and test.unlike_training(means + 50).all()
    assert mahalanobis_distance(means[:1], means, np.eye(8))[0] == 0
    # the stored precision is its upper triangle (the int8 file's metadata) and decodes to the whole matrix
    _, precision = fit_class_gaussians(feats, labels, 3)
    assert ood["precision"]["triangle"] == "upper" and ood["precision"]["shape"] == [8, 8]
    np.testing.assert_allclose(test.precision, precision, rtol=2e-3, atol=1e-3)
    np.testing.assert_array_equal(test.precision, test.precision.T)


def test_energy_under_tta_uses_the_plain_view(shipped):
    """Energy differs between a real lesion and a solid colour under TTA (it is not a function of the averaged
    probabilities)."""
    from core.data.preprocess import preprocess
    from core.evaluation.calibration import energy_score

    classifier = shipped["quantized"]
    cfg = classifier.config
    lesion = preprocess(next((FIXTURE / "images").glob("*.jpg")), cfg)
    flat = preprocess(NEGATIVE["solid_tan"], cfg)
    out = classifier.predict_outputs(torch.cat([lesion, flat]), tta=True)
    plain = classifier.predict_outputs(torch.cat([lesion, flat]), tta=False)
    assert torch.allclose(out.plain_logits, plain.logits, atol=1e-4)
    energies = energy_score(out.plain_logits.numpy())
    assert abs(energies[0] - energies[1]) > 0.1


def test_bootstrap_by_lesion_is_wider_when_lesions_repeat():
    rng = np.random.default_rng(1)
    y = np.repeat(rng.integers(0, 3, 60), 5)
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), np.where(rng.random(len(y) // 5) < 0.7, y[::5], (y[::5] + 1) % 3).repeat(5)] = 0.8
    by_image = bootstrap_ci(y, probs, ("a", "b", "c"), n_boot=300)
    by_lesion = bootstrap_ci(y, probs, ("a", "b", "c"), groups=np.arange(len(y)) // 5, n_boot=300)
    width = lambda ci: ci["accuracy"][1] - ci["accuracy"][0]  # noqa: E731
    assert width(by_lesion) > 1.5 * width(by_image)


def test_promotion_needs_confirmation(private_weights, tiny_runs):
    before = sha256_file(private_weights / "student.pt")
    with pytest.raises(PromotionError, match="confirmation"):
        promote(tiny_runs / "mskd_lf", data_dir=FIXTURE, root=private_weights)
    assert sha256_file(private_weights / "student.pt") == before


def test_promotion_of_another_split_is_refused(private_weights, tiny_runs):
    manifest = json.loads((private_weights / "manifest.json").read_text())
    manifest["test_split"] = {"fingerprint": "0" * 64, "seed": 7}
    (private_weights / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PromotionError, match="another data split"):
        promote(tiny_runs / "mskd_lf", data_dir=FIXTURE, root=private_weights, confirmed=True)


def test_worse_run_needs_a_reason_which_is_recorded(private_weights, tiny_runs):
    manifest = json.loads((private_weights / "manifest.json").read_text())
    cal = manifest["models"]["student"]["calibration"]
    for key in ("val_balanced_accuracy_plain", "val_balanced_accuracy_tta"):
        cal[key] = 1.0  # the active model looks perfect on validation: the run is worse
    (private_weights / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PromotionError, match="give a reason"):
        promote(tiny_runs / "mskd_lf", data_dir=FIXTURE, root=private_weights, confirmed=True)
    result = promote(tiny_runs / "mskd_lf", data_dir=FIXTURE, root=private_weights, confirmed=True,
                     reason="fixes the int8 drift")
    assert result["promotions"][-1]["reason"] == "fixes the int8 drift" and result["promotions"][-1]["at"]
    assert result["models"]["student"]["source"].startswith("promoted from run mskd_lf")
    assert result["models"]["student"]["demo"] is True  # the fixture is not the full data set


def set_calibration(root, name: str, **changes) -> None:
    """Rewrite a shipped checkpoint's calibration (both inference modes) and its manifest sha256."""
    obj = read_checkpoint(root / f"{name}.pt")
    cal = obj["meta"]["calibration"]
    for mode in (cal, cal["other"]):
        for key, value in changes.items():
            if key == "referral_threshold":
                for point in mode["referral"].values():
                    point["threshold"] = value
            else:
                mode[key] = value
    torch.save(obj, root / f"{name}.pt")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["models"][name]["sha256"] = sha256_file(root / f"{name}.pt")
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_diagnose_shows_uncertain_and_referral_together(private_weights):
    """An uncertain answer whose risk is above the threshold still shows the referral line; the model banner
    names the answering file."""
    from streamlit.testing.v1 import AppTest

    set_calibration(private_weights, "student", confidence_threshold=1.01, referral_threshold=0.0)
    at = AppTest.from_file(str(ROOT / "pages" / "diagnose.py"), default_timeout=120)
    at.run()
    at.selectbox[0].select_index(1).run()
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    errors = " ".join(e.value for e in at.error)
    assert "Uncertain" in warnings and "Refer: malignancy risk" in errors
    sha = sha256_file(private_weights / "student.pt")[:12]
    assert any(sha in c.value and "Answering model" in c.value for c in at.caption)


def test_diagnose_refuses_a_coloured_square(private_weights):
    """A 5 x 5 brown PNG gets no diagnosis, no referral and no maps, unless asked for, and then marked."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / "diagnose.py"), default_timeout=120)
    at.run()
    at.file_uploader[0].set_value([("brown.png", NEGATIVE["brown_square_5px"], "image/png")]).run()
    assert not at.exception
    assert any("Not a dermoscopic image of a skin lesion" in e.value for e in at.error)
    assert not at.success and not any("Refer" in e.value for e in at.error)
    assert not any("Explanations" in m.value for m in at.markdown)
    at.toggle(key=[t.key for t in at.toggle if t.key.startswith("anyway-")][0]).set_value(True).run()
    assert any("Shown on request" in w.value for w in at.warning)
