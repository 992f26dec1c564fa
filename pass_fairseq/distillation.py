"""Word-level knowledge distillation: the pure tensor loss (docs/method.md, "Distillation").
The criterion side (the teacher, the flags, the logs) is
:mod:`pass_fairseq.criterions.distillation`. No fairseq here.

    L = (1 - alpha) * L_stock + alpha * L_KD
    L_KD = T^2 * sum_{t: target_t != pad} KL( p_teacher(. | t) || p_student(. | t) ),  p = softmax(logits / T)

This is Kim & Rush's word-level KD (2016, eq. 4), written as the KL to the teacher's token
distribution (it differs from their cross-entropy by the teacher's entropy, a constant, so it
is 0 when the student equals the teacher), with Hinton et al.'s temperature and T^2 scaling
(2015) so that the gradient's size does not depend on T.
"""
import torch
import torch.nn.functional as F


def word_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                 temperature: float = 1.0) -> torch.Tensor:
    """L_KD (the module docstring), summed over the positions where ``mask`` is true.

    ``student_logits`` and ``teacher_logits`` are (..., V) and ``mask`` is (...); computed in
    float32 whatever the logits' dtype; the teacher gets no gradient."""
    t = float(temperature)
    student = F.log_softmax(student_logits.float() / t, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(-1)  # sum_v p_T (log p_T - log p_S)
    return (t * t) * (kl * mask.to(kl.dtype)).sum()  # a product, not a selection: no host sync


def mix(stock_loss: torch.Tensor, kd_loss: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - alpha) * L_stock + alpha * L_KD, alpha = ``weight``."""
    return (1.0 - weight) * stock_loss + weight * kd_loss
