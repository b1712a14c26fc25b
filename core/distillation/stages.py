"""Training stages as a registry: which loss terms each stage switches on.

teacher  - teacher with deep supervision on every exit (no distillation)
student  - the student alone with deep supervision: the no-teacher baseline
kd       - single-stage logit KD (Hinton): beta * KD + gamma * CE
mskd     - multi-stage: alpha * exit KD + beta * KD + gamma * CE
mskd_lf  - multi-stage with layer fusion: alpha * (exit KD + stage/fused feature loss) + beta * KD + gamma * CE
"""

from dataclasses import dataclass

from torch import nn

from core.distillation import losses


@dataclass(frozen=True)
class Stage:
    name: str
    role: str  # which architecture it trains: "teacher" or "student"
    needs_teacher: bool
    exit_kd: bool = False
    feature_kd: bool = False
    logit_kd: bool = False
    description: str = ""  # one line for the Train page


STAGES = {
    s.name: s
    for s in (
        Stage("teacher", "teacher", needs_teacher=False,
              description="trains the large teacher, with a classifier on every stage (no distillation)"),
        Stage("student", "student", needs_teacher=False,
              description="trains the small student alone: the no-teacher baseline"),
        Stage("kd", "student", needs_teacher=True, logit_kd=True,
              description="student learns from the teacher's final answers (single-stage knowledge distillation)"),
        Stage("mskd", "student", needs_teacher=True, exit_kd=True, logit_kd=True,
              description="student learns from the teacher's answers at every stage (multi-stage distillation)"),
        Stage("mskd_lf", "student", needs_teacher=True, exit_kd=True, feature_kd=True, logit_kd=True,
              description="multi-stage distillation plus the teacher's stage features, with layer fusion (the "
                          "shipped recipe)"),
    )
}


class FeatureProjector(nn.Module):
    """Learned linear maps from student stage (and fused) features to the teacher's widths.

    Used only during training; a linear map of pooled features equals 1x1 conv + pooling.
    """

    def __init__(self, student_dims, teacher_dims):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(s, t) for s, t in zip(student_dims, teacher_dims))

    def forward(self, feats):
        return [m(f) for m, f in zip(self.maps, feats)]


def stage_losses(stage: Stage, out, targets, teacher_out=None, projector=None, *, alpha, beta, gamma,
                 temperature, label_smoothing=0.0) -> dict:
    """Every loss component of one step as tensors, plus their weighted `total`."""
    zero = out.logits.new_zeros(())
    parts = {"ce": losses.classification_loss(out.logits, targets, label_smoothing)}
    intermediate = zero
    if not stage.needs_teacher:
        parts["exit_ce"] = losses.deep_supervision_loss(out.exit_logits, targets, label_smoothing)
        intermediate = parts["exit_ce"]
    if stage.exit_kd:
        parts["exit_kd"] = losses.exit_kd_loss(out.exit_logits, teacher_out.exit_logits, temperature)
        intermediate = intermediate + parts["exit_kd"]
    if stage.feature_kd:
        student_feats = out.stage_features + [out.fused_feature]
        teacher_feats = teacher_out.stage_features + [teacher_out.fused_feature]
        parts["feature"] = losses.feature_loss(projector(student_feats), [t.detach() for t in teacher_feats])
        intermediate = intermediate + parts["feature"]
    parts["kd"] = losses.logit_kd_loss(out.logits, teacher_out.logits, temperature) if stage.logit_kd else zero
    parts["total"] = losses.total_loss(intermediate, parts["kd"], parts["ce"], alpha, beta, gamma)
    if not stage.logit_kd:
        parts.pop("kd")
    return parts
