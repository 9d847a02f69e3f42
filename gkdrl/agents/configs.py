"""Config dataclasses of the agents: frozen, keyword-only, self-validating."""

import dataclasses

from gkdrl.agents import base
from gkdrl import validation
from gkdrl.losses import divergences
from gkdrl.losses import objectives
from gkdrl.losses import policy_gradient


# From this vocabulary size on, distillation losses are chunked by default.
LARGE_VOCABULARY = 32_768


def _check_int(name: str, value, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{name}={value!r} must be an int >= {minimum}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTConfig(base.AgentConfig):
  """SFT: negative log-likelihood of the dataset targets (no teacher)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeqKDConfig(base.AgentConfig):
  """SeqKD: SFT on completions the teacher samples for each batch
  (at `sample_temperature`, 0 for greedy teacher outputs)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillationConfig(base.AgentConfig):
  """Settings of the token-level divergence to the teacher.

  Attributes:
    divergence: a name of `gkdrl.losses.DIVERGENCES`.
    beta: JSD(beta) coefficient in [0, 1] (divergence "jsd").
    normalized: divide JSD by beta * (1 - beta) (a gkdrl extension).
    skew: mixture weight of the skew KLs, [0, 1].
    student_temperature: divides the student logits in the loss, > 0.
    teacher_temperature: divides the teacher logits, i.e. sharpens (< 1) or
      flattens the target distribution (paper: 0.1 or 1.0), > 0.
    loss_chunk_size: for gkd and supervised_kd, compute logits and
      divergence from hidden states in chunks of this many positions, so no
      [B, T, V] array is alive (`gkdrl.losses.chunked_distillation_loss`).
      None (default) chunks by 128 when V >= 32,768; 0 never chunks.
  """

  divergence: str = "jsd"
  beta: float = 0.5
  normalized: bool = False
  skew: float = 0.1
  student_temperature: float = 1.0
  teacher_temperature: float = 1.0
  loss_chunk_size: int | None = None

  def __post_init__(self):
    super().__post_init__()
    if self.loss_chunk_size is not None:
      _check_int("loss_chunk_size", self.loss_chunk_size, 0)
    validation.check_choice("divergence", self.divergence,
                         divergences.DIVERGENCES)
    validation.check_unit_interval("beta", self.beta)
    validation.check_unit_interval("skew", self.skew)
    validation.check_positive("student_temperature", self.student_temperature)
    validation.check_positive("teacher_temperature", self.teacher_temperature)

  def chunk_size(self, vocab_size: int) -> int:
    """Positions per loss chunk for a vocabulary; 0 means no chunking."""
    if self.loss_chunk_size is not None:
      return self.loss_chunk_size
    return 128 if vocab_size >= LARGE_VOCABULARY else 0

  def divergence_kwargs(self) -> dict:
    """The keyword arguments `gkdrl.losses.divergence` takes for ours."""
    own = {"beta": self.beta, "normalized": self.normalized,
           "skew": self.skew}
    kwargs = {k: own[k]
              for k in divergences.DIVERGENCE_PARAMETERS[self.divergence]}
    kwargs["student_temperature"] = self.student_temperature
    kwargs["teacher_temperature"] = self.teacher_temperature
    return kwargs


@dataclasses.dataclass(frozen=True, kw_only=True)
class SupervisedKDConfig(DistillationConfig):
  """Supervised KD (paper Eq. 3): forward KL on the dataset targets."""

  divergence: str = "forward_kl"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GKDConfig(DistillationConfig):
  """GKD (paper Algorithm 1).

  Attributes:
    lmbda: student data fraction in [0, 1]: each batch is sampled by the
      student with probability lmbda (one draw per batch from the PRNG
      key), else taken from the dataset. 1 is on-policy, 0 supervised.
  """

  lmbda: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    validation.check_unit_interval("lmbda", self.lmbda)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLConfig(base.AgentConfig):
  """REINFORCE on a sequence-level reward, optionally PPO-clipped.

  Attributes:
    baseline: "none", "mean" or "rloo".
    samples_per_prompt: completions sampled per prompt (consecutive rows);
      "rloo" needs >= 2.
    ppo_epochs: gradient steps per rollout; > 1 uses PPO's clipped
      surrogate on the sampler's log-probabilities.
    ppo_epsilon: PPO clipping radius, > 0.
    ref_kl_coef: weight of KL(student || initial student), >= 0 (the
      KL-regularised RL of ordinary RLHF).
  """

  baseline: str = "mean"
  samples_per_prompt: int = 1
  ppo_epochs: int = 1
  ppo_epsilon: float = 0.2
  ref_kl_coef: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    validation.check_choice("baseline", self.baseline, policy_gradient.BASELINES)
    _check_int("samples_per_prompt", self.samples_per_prompt, 1)
    _check_int("ppo_epochs", self.ppo_epochs, 1)
    validation.check_positive("ppo_epsilon", self.ppo_epsilon)
    validation.check_non_negative("ref_kl_coef", self.ref_kl_coef)
    if self.baseline == "rloo" and self.samples_per_prompt < 2:
      raise ValueError(
          f"baseline='rloo' needs samples_per_prompt >= 2, got "
          f"samples_per_prompt={self.samples_per_prompt}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GKDRLConfig(DistillationConfig, RLConfig):
  """GKD + RL (paper Eq. 5).

  Attributes:
    alpha: teacher weight in [0, 1]; 1 is pure GKD (no reward computed),
      0 pure RL (teacher not run).
    beta: JSD coefficient; 0.9 is the paper's choice when mixing with RL.
    kl_mode: "analytic" (full-vocabulary divergence, the paper) or
      "sampled" (the per-token log-ratio folded into the advantage).
  """

  alpha: float = 0.5
  beta: float = 0.9
  kl_mode: str = "analytic"

  def __post_init__(self):
    super().__post_init__()
    validation.check_unit_interval("alpha", self.alpha)
    validation.check_choice("kl_mode", self.kl_mode, objectives.KL_MODES)
    if self.ppo_epochs > 1:
      raise ValueError(
          f"ppo_epochs={self.ppo_epochs} is only supported by the 'rl' "
          "agent; gkd_rl takes one gradient step per rollout (ppo_epochs=1).")
