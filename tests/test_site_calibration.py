"""Site calibration: fitted on one half of a clinic's labelled cases, measured on the other, written atomically,
applied to the model's answers, and rolled back."""

import json

import numpy as np
import pytest

from core.data.ham10000 import load_ham10000
from core.registry.loader import load_model
from core.registry.site_calibration import (MIN_MALIGNANT_PER_PART, SiteCalibrationError, activate, active_site,
                                            fit_site, referral_figures, rollback, site_halves, site_path)
from tests.conftest import FIXTURE, ROOT

DEMO = ROOT / "assets" / "demo_ham10000"  # 15 images per class: 45 malignant, 60 benign


def test_halves_keep_lesions_together_and_share_malignancy():
    labels = np.array([0, 1, 2, 3, 4, 5, 6] * 20)  # akiec bcc bkl df mel nv vasc
    groups = np.repeat(np.arange(70), 2)  # two images per lesion
    fit, held = site_halves(labels, groups, seed=0)
    assert not set(fit) & set(held) and len(fit) + len(held) == len(labels)
    assert not set(groups[fit]) & set(groups[held])
    malignant = np.isin(labels, [0, 1, 4])
    assert abs(malignant[fit].mean() - malignant[held].mean()) < 0.1


def test_referral_figures_count_and_bound():
    f = referral_figures([0.9, 0.8, 0.1, 0.05, 0.6], [True, True, True, False, False], threshold=0.5)
    assert f["sensitivity"] == pytest.approx(2 / 3) and f["specificity"] == pytest.approx(1 / 2)
    lo, hi = f["sensitivity_ci95"]
    assert lo < 2 / 3 < hi and 0 <= lo and hi <= 1


def test_too_few_malignant_cases_are_refused_with_the_minimum(private_weights):
    with pytest.raises(SiteCalibrationError, match=f"at least {2 * MIN_MALIGNANT_PER_PART} malignant"):
        fit_site(load_model("student"), load_ham10000(FIXTURE), name="tiny")


def test_fit_activate_apply_and_roll_back(private_weights):
    student = load_model("student")
    validation = json.loads(json.dumps(student.calibration))
    records = load_ham10000(DEMO)
    proposal = fit_site(student, records, name="demo clinic")
    p = proposal["provenance"]
    assert p["n_fit"] + p["n_held_back"] == len(records) == 105
    assert p["malignant_fit"] >= MIN_MALIGNANT_PER_PART and p["malignant_held_back"] >= MIN_MALIGNANT_PER_PART
    figures = proposal["held_back"]["0.90"]
    assert figures["after"]["n_malignant"] == p["malignant_held_back"]  # measured on the held-back half only
    assert active_site(student.sha256) is None and not site_path().exists()  # a proposal is not stored

    activate(proposal)
    assert student.calibration["temperature"] == pytest.approx(proposal["temperature"])
    assert student.calibration["referral"]["0.90"] == proposal["referral"]["0.90"]
    assert student.calibration["energy_threshold"] == validation["energy_threshold"]  # the gate stays
    assert "demo clinic" in student.identity["site_calibration"]
    second = {**proposal, "temperature": proposal["temperature"] * 2}
    activate(second)
    assert student.calibration["temperature"] == pytest.approx(second["temperature"])
    assert not list(site_path().parent.glob("*.tmp*"))  # written by replace, no partial file left
    assert rollback(student.sha256)["temperature"] == pytest.approx(proposal["temperature"])
    assert student.calibration["temperature"] == pytest.approx(proposal["temperature"])
    assert rollback(student.sha256) is None
    assert student.calibration == validation and student.identity["site_calibration"] == ""
