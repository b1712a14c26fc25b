"""Each distillation loss against values computed by hand."""

import math

import pytest
import torch

from core.distillation import losses


def test_classification_loss_matches_hand_value():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert losses.classification_loss(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_hand_value():
    logits = torch.tensor([[0.0, 0.0]])
    # uniform prediction: CE is log 2 whatever the smoothing
    assert losses.classification_loss(logits, torch.tensor([1]), 0.2).item() == pytest.approx(math.log(2), rel=1e-6)


def test_logit_kd_is_kl_times_t_squared():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[2.0 * math.log(3.0), 0.0]])  # at T=2 teacher probs are (3/4, 1/4)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.logit_kd_loss(s, t, 2.0).item() == pytest.approx(kl * 4, rel=1e-5)


def test_logit_kd_zero_when_equal():
    x = torch.randn(4, 7)
    assert losses.logit_kd_loss(x, x.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_exit_kd_averages_pairs():
    s = [torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])]
    t = [torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[1.0, 1.0]])]
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert losses.exit_kd_loss(s, t, 1.0).item() == pytest.approx(kl / 2, rel=1e-5)
    with pytest.raises(ValueError):
        losses.exit_kd_loss(s, t[:1], 1.0)


def test_feature_loss_is_one_minus_cosine():
    s = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])]
    t = [torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 2.0]])]
    # first pair orthogonal (1 - 0), second parallel (1 - 1): mean 0.5
    assert losses.feature_loss(s, t).item() == pytest.approx(0.5, abs=1e-6)


def test_total_loss_weights():
    assert losses.total_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), 0.3, 0.3, 0.4).item() == pytest.approx(
        0.3 + 0.6 + 1.2)
