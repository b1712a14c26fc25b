"""Distillation losses, one small function each (unit-tested on hand-computed values)."""

import torch
import torch.nn.functional as F


def classification_loss(logits, targets, label_smoothing: float = 0.0):
    """Cross-entropy on the final logits."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def logit_kd_loss(student_logits, teacher_logits, temperature: float):
    """KL(teacher_T || student_T) * T^2 (Hinton et al. 2015), mean over the batch."""
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


def exit_kd_loss(student_exits, teacher_exits, temperature: float):
    """Multi-stage logit distillation: mean KD loss over matched (student exit, teacher exit) pairs."""
    if len(student_exits) != len(teacher_exits):
        raise ValueError(f"{len(student_exits)} student exits vs {len(teacher_exits)} teacher exits")
    losses = [logit_kd_loss(s, t, temperature) for s, t in zip(student_exits, teacher_exits)]
    return torch.stack(losses).mean()


def feature_loss(student_feats, teacher_feats):
    """Mean (1 - cosine similarity) between projected student features and teacher features."""
    losses = [1 - F.cosine_similarity(s, t, dim=-1).mean() for s, t in zip(student_feats, teacher_feats)]
    return torch.stack(losses).mean()


def deep_supervision_loss(exit_logits, targets, label_smoothing: float = 0.0):
    """Mean cross-entropy over intermediate exits (training without a teacher)."""
    return torch.stack([classification_loss(e, targets, label_smoothing) for e in exit_logits]).mean()


def total_loss(intermediate, logit, classification, alpha: float, beta: float, gamma: float):
    """alpha * intermediate + beta * logit + gamma * classification."""
    return alpha * intermediate + beta * logit + gamma * classification
