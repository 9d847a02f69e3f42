"""gkdrl.losses: pure loss functions of arrays (no haiku, no state).

Divergences are position-wise (`[..., V]` logits in, `[...]` out); sequence
objectives take `[B, T]` values with a `[B, T]` mask. P = teacher,
Q = student. See DESIGN.md for the conventions.
"""

from gkdrl.losses.chunked import chunked_distillation_loss
from gkdrl.losses.cross_tokenizer import cross_tokenizer_loss
from gkdrl.losses.cross_tokenizer import uld
from gkdrl.losses.divergences import DIVERGENCE_PARAMETERS
from gkdrl.losses.divergences import DIVERGENCES
from gkdrl.losses.divergences import divergence
from gkdrl.losses.divergences import divergence_and_gradient
from gkdrl.losses.divergences import forward_kl
from gkdrl.losses.divergences import generalized_jsd
from gkdrl.losses.divergences import reverse_kl
from gkdrl.losses.divergences import sampled_kl
from gkdrl.losses.divergences import skew_forward_kl
from gkdrl.losses.divergences import skew_reverse_kl
from gkdrl.losses.divergences import total_variation
from gkdrl.losses.objectives import distillation_loss
from gkdrl.losses.objectives import gkd_rl_loss
from gkdrl.losses.objectives import KL_MODES
from gkdrl.losses.policy_gradient import BASELINES
from gkdrl.losses.policy_gradient import policy_gradient_loss
from gkdrl.losses.policy_gradient import ppo_clip_loss
from gkdrl.losses.policy_gradient import sequence_advantages
from gkdrl.losses.reductions import masked_mean
from gkdrl.losses.reductions import masked_reduce
from gkdrl.losses.reductions import reduction_denominator
from gkdrl.losses.reductions import REDUCTIONS
from gkdrl.losses.top_k import bucket_log_probs
from gkdrl.losses.top_k import top_k_distillation_loss
from gkdrl.losses.top_k import TopKTeacher
from gkdrl.losses.top_k import top_k_divergence
from gkdrl.losses.top_k import top_k_teacher

__all__ = [
    "BASELINES",
    "DIVERGENCES",
    "DIVERGENCE_PARAMETERS",
    "KL_MODES",
    "chunked_distillation_loss",
    "cross_tokenizer_loss",
    "REDUCTIONS",
    "TopKTeacher",
    "bucket_log_probs",
    "distillation_loss",
    "divergence",
    "divergence_and_gradient",
    "forward_kl",
    "generalized_jsd",
    "gkd_rl_loss",
    "masked_mean",
    "masked_reduce",
    "policy_gradient_loss",
    "ppo_clip_loss",
    "reduction_denominator",
    "reverse_kl",
    "sampled_kl",
    "sequence_advantages",
    "skew_forward_kl",
    "skew_reverse_kl",
    "top_k_distillation_loss",
    "uld",
    "top_k_divergence",
    "top_k_teacher",
    "total_variation",
]
