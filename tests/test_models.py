"""Teacher and student: structured output, predict path, parameter budgets, checkpoint round trip."""

import pytest
import torch

from core.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.models.factory import DEFAULT_CONFIGS, count_params, create_model
from core.models.fusion import HybridOutput


@pytest.fixture(scope="module")
def models():
    return {role: create_model(DEFAULT_CONFIGS[role](112)).eval() for role in ("teacher", "student")}


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_structured_output(models, role):
    model = models[role]
    out = model(torch.randn(2, 3, 112, 112))
    assert isinstance(out, HybridOutput)
    assert out.logits.shape == (2, 7)
    assert len(out.exit_logits) == len(out.stage_features) == 3
    assert all(e.shape == (2, 7) for e in out.exit_logits)
    assert [f.shape[1] for f in out.stage_features] == model.stage_dims
    assert out.fusion_weights.shape == (2, 3)
    assert torch.allclose(out.fusion_weights.sum(1), torch.ones(2))
    assert torch.equal(model.predict(torch.zeros(1, 3, 112, 112)), model(torch.zeros(1, 3, 112, 112)).logits)


def test_parameter_budgets(models):
    teacher, student = count_params(models["teacher"]), count_params(models["student"])
    assert student <= 1_000_000
    assert student * 5 <= teacher


def test_checkpoint_round_trip_carries_config(models, tmp_path):
    config = DEFAULT_CONFIGS["student"](112)
    save_checkpoint(tmp_path / "s.pt", models["student"], config, meta={"note": "x"})
    model, loaded_config, meta = load_checkpoint(tmp_path / "s.pt")
    assert loaded_config == config and meta == {"note": "x"}
    x = torch.randn(1, 3, 112, 112)
    assert torch.allclose(model.predict(x), models["student"].predict(x))


def test_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "dermadistill-checkpoint-v1", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.parametrize("change", [{"colour_constancy": "retinex"}, {"arch": "resnet9000"}, {"img_sz": 128}])
def test_unusable_config_is_a_named_checkpoint_error(tmp_path, models, change):
    """A checkpoint whose config this version cannot build fails at load time with the file's name."""
    config = DEFAULT_CONFIGS["student"](112)
    save_checkpoint(tmp_path / "m.pt", models["student"], config)
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    obj["config"].update(change)
    torch.save(obj, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="m.pt has an unusable model config"):
        load_checkpoint(tmp_path / "m.pt")
