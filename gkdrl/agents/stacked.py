"""gkd_rl at several alphas at once: one `Agent` holding one student per alpha.

    agent = make_stacked_agent(config, alphas=[0.0, 0.5, 1.0], student=...,
                               teacher=..., tokenizer=..., reward=...)
    state = agent.init(student_params)       # every leaf has a leading [A]
    batch, info = agent.act(state, task_batch, key, teacher_params=...,
                            reward_params=...)           # [A, B, ...]
    state, metrics = agent.update(state, batch, teacher_params, key)

so `gkdrl.runners.loop.train` drives it like any agent (checkpoints,
resume). Each step samples from the A students in one compiled call with
the same key, scores the A * B completions in one reward call, and updates
every student in one jitted, vmapped gkd_rl update in which alpha is a
traced value (`gkd_rl.make_gkd_rl_loss`). Each alpha gets the same data,
keys and loss as the gkd_rl agent of that alpha, so it ends within float
tolerance of it. The teacher and the reward are computed for every alpha
(at alpha = 0 and 1 the unused one is swapped out before use). Metrics and
info values carry the leading [A] axis; `split_metrics` gives each alpha
the keys its own agent logs.

It pays off for small models on one device, where one student's step
leaves the device mostly idle; memory grows with A.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import validation
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import gkd_rl
from gkdrl.agents import optimizer as optimizer_lib
from gkdrl.agents import registry
from gkdrl.agents import rl


def check_alphas(alphas: Sequence[float]) -> list[float]:
  """The alphas as floats: at least one, each in [0, 1], none twice."""
  alphas = [float(a) for a in alphas]
  if not alphas:
    validation.fail("alphas", alphas, "at least one alpha is needed")
  for alpha in alphas:
    validation.check_unit_interval("alpha", alpha)
  repeated = sorted({a for a in alphas if alphas.count(a) > 1})
  if repeated:
    validation.fail("alphas", alphas,
                    "each alpha may appear once; repeated: "
                    + ", ".join(f"{a:g}" for a in repeated))
  return alphas


def split_metrics(metrics: dict, alphas: Sequence[float]
                  ) -> list[dict[str, float]]:
  """Per-alpha floats from values with a leading [A] axis.

  Each alpha keeps the keys the gkd_rl agent of that alpha logs: no
  reward at alpha = 1, no teacher KL at alpha = 0.
  """
  metrics = jax.device_get(metrics)
  rows = []
  for i, alpha in enumerate(alphas):
    unused = {1.0: "reward/mean", 0.0: "kl/teacher"}.get(alpha)
    rows.append({k: float(np.asarray(v)[i]) for k, v in metrics.items()
                 if k != unused})
  return rows


def _make_update(config, student, teacher, optimizer, alphas):
  """`update(states [A], batches [A], teacher_params, key)`, jitted."""
  loss = gkd_rl.make_gkd_rl_loss(config, student, teacher)

  def loss_fn(params, state, batch, teacher_and_alpha, key):
    teacher_params, alpha = teacher_and_alpha
    return loss(params, state, batch, teacher_params, key, alpha=alpha)

  update = base.make_update(
      loss_fn, optimizer, jit=False, prepare=rl.make_prepare(config),
      grad_accum_steps=config.grad_accum_steps, reduction=config.reduction)

  def stacked(states, batches, teacher_params, alpha_array, key):
    base.log_compile("update_stacked", batch=batches)
    return jax.vmap(
        lambda s, b, a: update(s, b, (teacher_params, a), key))(
            states, batches, alpha_array)

  jitted = jax.jit(stacked, donate_argnums=0)
  alpha_array = jnp.asarray(alphas, jnp.float32)  # [A], an argument

  def update_fn(states, batches, teacher_params, key):
    return jitted(states, batches, teacher_params, alpha_array, key)

  return update_fn


def _make_act(config, parts: registry.Parts, num: int):
  """Samples of every student (one key), scored in one reward call."""

  def act(state, task_batch, key, *, teacher_params=None,
          reward_params=None):
    del teacher_params
    task_batch = acting.repeat_rows(task_batch, config.samples_per_prompt)
    batch = acting.sample_batch(
        parts.student, state.params, key, task_batch, config=config,
        eos_token_id=parts.eos_token_id, pad_token_id=parts.pad_token_id,
        stacked=True)  # [A, B, ...]
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
    rewards = acting.score_batch(
        parts.reward, reward_params, parts.tokenizer, flat,
        list(task_batch.sources) * num, list(task_batch.targets) * num)
    rewards = jnp.asarray(rewards).reshape(num, -1)  # [A, B]
    batch = batch._replace(rewards=rewards)
    info = {"reward/mean": jnp.mean(rewards, axis=1),  # [A]
            **jax.vmap(acting.rollout_info)(batch)}
    return batch, info

  return act


def make_stacked_agent(config: gkd_rl.GKDRLConfig, alphas: Sequence[float],
                       *, student, teacher, tokenizer, reward,
                       eos_token_id=None, pad_token_id: int | None = None
                       ) -> base.Agent:
  """The gkd_rl agent at every alpha of `alphas` at once (module docstring).

  Args:
    config: the gkd_rl settings; `config.alpha` is not read.
    alphas: the teacher weights, one student each, distinct, in [0, 1].
    student: the student `LanguageModel`.
    teacher: the teacher `LanguageModel`.
    tokenizer: decodes completions for host reward models.
    reward: the `RewardModel`.
    eos_token_id: as in `make_agent`.
    pad_token_id: as in `make_agent`.

  Returns:
    An `Agent` whose state, batches, metrics and info have a leading [A].
  """
  alphas = check_alphas(alphas)
  if not isinstance(config, gkd_rl.GKDRLConfig):
    validation.fail("config", type(config).__name__, "a GKDRLConfig")
  for part, value in (("teacher", teacher), ("reward", reward),
                      ("tokenizer", tokenizer)):
    if value is None:
      validation.fail(part, value, "the stacked gkd_rl agent needs it")
  if config.lora_rank:
    validation.fail("lora_rank", config.lora_rank,
                    "the stacked gkd_rl agent trains full students (0)")
  parts = registry.make_parts(
      student=student, teacher=teacher, tokenizer=tokenizer, reward=reward,
      eos_token_id=eos_token_id, pad_token_id=pad_token_id)
  student, teacher = parts.student, parts.teacher
  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  init_one = base.make_init(optimizer, keep_reference=config.ref_kl_coef > 0,
                            param_dtype=config.param_dtype)

  def init(params) -> base.TrainingState:
    state = init_one(params)
    return jax.tree.map(lambda x: jnp.stack([x] * len(alphas)), state)

  return base.Agent(
      name=registry.agent_name(config), config=config, init=init,
      act=_make_act(config, parts, len(alphas)),
      update=_make_update(config, student, teacher, optimizer, alphas),
      uses_teacher=True, uses_reward=True)


def unstack(tree, index: int):
  """Member `index` of a stacked pytree (e.g. one alpha's parameters)."""
  return jax.tree.map(lambda x: x[index], tree)

