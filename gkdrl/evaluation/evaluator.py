"""Evaluating a language model on a task's held-out prompts.

Shapes (see gkdrl/types.py): B batch, P prompt length, T = max_new_tokens.

`evaluate` generates completions for the first N prompts of a split in one
or more decoding modes (greedy, sampling at a temperature) and reports, per
mode, the reward, the task's own reward functions, ROUGE against the
targets, the reverse KL to a teacher on the model's own completions, the
diversity of the completions (Self-BLEU) and their length. Everything is
deterministic for a given seed. The sampler compiles once per mode and the
teacher KL once: every batch has the same shape, because prompts are padded
to the task's longest and a short last batch is filled up with copies of
its last row, which are dropped from every metric.

Several hosts: every process evaluates the whole set on its own. Sharded
parameters of a multi-host mesh (training's fsdp-sharded student) are first
gathered whole onto each process (`gkdrl.parallel.gather`, so all processes
must call `evaluate` together), and each process then samples, decodes and
scores every prompt on its first local device: every process returns the
same, complete metrics, those of one process evaluating alone. This needs
one copy of the evaluated parameters per host on one device, and repeats
the work on every host instead of splitting it.
"""

from collections.abc import Mapping, Sequence
import functools
import math
from typing import Any
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import agents
from gkdrl import envs
from gkdrl import losses
from gkdrl import parallel
from gkdrl import sampling
from gkdrl import types
from gkdrl import validation
from gkdrl import tasks
from gkdrl import validation
from gkdrl.evaluation import bleu_score
from gkdrl.evaluation import rouge
from gkdrl.evaluation import samples as samples_lib
from gkdrl.reward_models import base as rm_base

DEFAULT_MODES = (("greedy", 0.0), ("sample", 1.0))
# The `facts` task's oracle counts reported next to its rewards, per summary.
FACT_COUNT_KEYS = ("supported", "contradicted", "unsupported", "unparsed",
                   "claims")


def _check_modes(modes) -> list[tuple[str, float]]:
  pairs = list(modes.items()) if isinstance(modes, Mapping) else list(modes)
  if not pairs:
    raise ValueError("modes must hold at least one (name, temperature) pair")
  checked = []
  for i, pair in enumerate(pairs):
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
      raise ValueError(
          f"modes[{i}] must be a (name, temperature) pair, got {pair!r}")
    name, temperature = pair
    if not isinstance(name, str) or not name:
      raise ValueError(f"modes[{i}] name must be a non-empty str, got {name!r}")
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature >= 0):
      raise ValueError(
          f"modes[{i}] temperature must be a finite number >= 0 (0 is "
          f"greedy), got {temperature!r}")
    validation.check_temperature(f"modes[{i}] temperature", temperature,
                                 greedy=True)
    if name in dict(checked):
      raise ValueError(f"modes names must be unique, got {name!r} twice")
    checked.append((name, float(temperature)))
  return checked


def score_texts(task: tasks.Task, sources: Sequence[str],
                completions: Sequence[str],
                targets: Sequence[str]) -> dict[str, float]:
  """Task rewards, oracle fact counts and ROUGE of N completions, averaged.

  Args:
    task: the task; each of `task.reward_fns` is called once on all rows.
    sources: N source documents / questions.
    completions: N completions to score (decoded text, without EOS).
    targets: N reference targets.

  Returns:
    Means over the N rows: every task reward fn by its name (e.g.
    "factuality" and "coverage" for `facts`, "accuracy" for arithmetic);
    for the `facts` task the oracle's claims per summary ("supported",
    "contradicted", "unsupported", "unparsed", "claims"); and "rouge1",
    "rouge2", "rougeL" in [0, 100] (see `rouge_scores`).
  """
  sources, completions, targets = (
      bleu_score.check_texts(name, texts) for name, texts in (
          ("sources", sources), ("completions", completions),
          ("targets", targets)))
  n = len(completions)
  if not n or len(sources) != n or len(targets) != n:
    raise ValueError(
        "sources, completions and targets must have equal, non-zero lengths, "
        f"got {len(sources)}, {n} and {len(targets)}")
  metrics = {}
  for name, reward_fn in task.reward_fns.items():
    values = np.asarray(reward_fn(sources, completions, targets), np.float64)
    if values.shape != (n,):
      raise ValueError(
          f"task {task.name!r} reward fn {name!r} returned shape "
          f"{values.shape}, expected ({n},)")
    metrics[name] = float(values.mean())
  if task.name == "facts":
    counts = tasks.fact_counts(sources, completions)
    metrics.update({key: float(np.mean(counts[key]))
                    for key in FACT_COUNT_KEYS})
  metrics.update(rouge.rouge_scores(completions, targets))
  return metrics


@functools.partial(jax.jit, static_argnames=("model", "teacher"))
def _teacher_kl(model, params, teacher, teacher_params,
                batch: types.Batch) -> types.Array:
  """[B] reverse KL(student || teacher) per token, averaged per sequence."""
  student_logits = agents.completion_logits(model, params, batch)  # [B, T, V]
  teacher_logits = agents.completion_logits(teacher, teacher_params, batch)
  kl = losses.reverse_kl(student_logits, teacher_logits)  # [B, T]
  mask = batch.completion_mask  # [B, T]
  return jnp.sum(jnp.where(mask, kl, 0.0), axis=-1) / jnp.maximum(
      jnp.sum(mask, axis=-1), 1)  # [B]


def _prompt_batches(task, split, num_examples, batch_size):
  """[(TaskBatch with exactly batch_size rows, number of real rows)]."""
  batches, remaining = [], num_examples
  for batch in task.batches(split, batch_size, seed=None, fixed_shape=True):
    n = min(remaining, len(batch.sources))
    pad = batch_size - n
    rows = lambda a: np.concatenate([a[:n], np.repeat(a[n - 1:n], pad, 0)])
    texts = lambda xs: list(xs[:n]) + [xs[n - 1]] * pad
    batches.append((batch._replace(
        prompt_tokens=rows(batch.prompt_tokens),
        prompt_mask=rows(batch.prompt_mask),
        target_tokens=rows(batch.target_tokens),
        target_mask=rows(batch.target_mask),
        sources=texts(batch.sources), targets=texts(batch.targets)), n))
    remaining -= n
    if not remaining:
      break
  return batches


def _score_rewards(reward, reward_params, batch, samples, completions):
  inputs = rm_base.RewardInputs(
      sources=batch.sources, completions=completions, targets=batch.targets,
      prompt_tokens=batch.prompt_tokens, prompt_mask=batch.prompt_mask,
      completion_tokens=samples.tokens, completion_mask=samples.mask)
  if reward.on_host:
    rewards = reward.score(reward_params, inputs)
  else:
    rewards = envs.score_rewards(reward.score, reward_params,
                                 inputs.arrays_only())
  return rm_base.check_rewards(np.asarray(rewards), len(completions),
                               reward.name)


def _evaluate_mode(key, temperature, *, model, params, task, batches,
                   max_new_tokens, teacher, teacher_params, reward,
                   reward_params, samples_per_prompt, num_samples):
  """(metrics, sample records) of one decoding mode."""
  tokenizer = task.tokenizer
  draws = 1 if temperature == 0 else samples_per_prompt
  columns = {"sources": [], "completions": [], "targets": []}
  lengths, rewards, kls, per_prompt = [], [], [], []
  # The first draw of the first `num_samples` prompts, as records.
  shown = {"prompts": [], "sources": [], "completions": [], "references": [],
           "rewards": [], "lengths": [], "teacher_kls": []}
  for b, (batch, n) in enumerate(batches):
    k = min(n, num_samples - len(shown["prompts"]))
    if k > 0:
      shown["prompts"] += agents.decode_completions(
          tokenizer, np.asarray(batch.prompt_tokens)[:k],
          np.asarray(batch.prompt_mask)[:k])
      shown["sources"] += batch.sources[:k]
      shown["references"] += batch.targets[:k]
    prompt_tokens = jnp.asarray(batch.prompt_tokens, jnp.int32)  # [B, P]
    prompt_mask = jnp.asarray(batch.prompt_mask, bool)  # [B, P]
    prompt_draws = [[] for _ in range(n)]
    for d in range(draws):
      samples = sampling.sample(
          model, params, jax.random.fold_in(jax.random.fold_in(key, b), d),
          prompt_tokens, prompt_mask, max_new_tokens=max_new_tokens,
          temperature=temperature, eos_token_id=tokenizer.eos_token_id,
          pad_token_id=tokenizer.pad_token_id)
      completions = agents.decode_completions(tokenizer, samples.tokens,
                                              samples.mask)
      columns["sources"] += batch.sources[:n]
      columns["completions"] += completions[:n]
      columns["targets"] += batch.targets[:n]
      lengths.append(np.asarray(samples.lengths)[:n])
      for i in range(n):
        prompt_draws[i].append(completions[i])
      if reward is not None:
        rewards.append(_score_rewards(reward, reward_params, batch, samples,
                                      completions)[:n])
      if teacher is not None:
        completed = types.Batch(
            prompt_tokens=prompt_tokens, prompt_mask=prompt_mask,
            completion_tokens=samples.tokens, completion_mask=samples.mask)
        kls.append(np.asarray(_teacher_kl(model, params, teacher,
                                          teacher_params, completed))[:n])
      if d == 0 and k > 0:
        shown["completions"] += completions[:k]
        shown["lengths"] += lengths[-1][:k].tolist()
        if reward is not None:
          shown["rewards"] += rewards[-1][:k].tolist()
        if teacher is not None:
          shown["teacher_kls"] += kls[-1][:k].tolist()
    per_prompt += prompt_draws
  scores = score_texts(task, **columns)
  if reward is not None:
    metrics = {"reward": float(np.mean(np.concatenate(rewards)))}
  elif task.reward_fns:
    metrics = {"reward": scores[next(iter(task.reward_fns))]}
  else:
    metrics = {"reward": scores["rouge2"] / 100.0}
  metrics.update(scores)
  if teacher is not None:
    metrics["teacher_kl"] = float(np.mean(np.concatenate(kls)))
  if draws > 1:
    metrics["self_bleu"] = float(np.mean(
        [bleu_score.self_bleu(texts) for texts in per_prompt]))
  else:
    metrics["self_bleu"] = bleu_score.self_bleu(
        [texts[0] for texts in per_prompt])
  metrics["length"] = float(np.mean(np.concatenate(lengths)))
  metrics["num_examples"] = float(len(per_prompt))
  return metrics, _records(task, shown, reward is not None,
                           teacher is not None)


def _records(task, shown, has_reward, has_teacher):
  if not shown["prompts"]:
    return []
  if not has_reward:
    shown["rewards"] = samples_lib.row_rewards(
        task, shown["sources"], shown["completions"], shown["references"])
  return samples_lib.make_records(
      prompts=shown["prompts"], completions=shown["completions"],
      references=shown["references"], rewards=shown["rewards"],
      lengths=shown["lengths"],
      teacher_kls=shown["teacher_kls"] if has_teacher else None)


def evaluate(*, model, params: Any, task: tasks.Task,
             split: str = "validation", num_examples: int = 128,
             batch_size: int = 32, max_new_tokens: int, teacher=None,
             teacher_params: Any = None, reward: Any = None,
             reward_params: Any = None, samples_per_prompt: int = 4,
             seed: int = 0,
             modes: Sequence[tuple[str, float]] = DEFAULT_MODES
             ) -> dict[str, dict[str, float]]:
  """Evaluates `model` on the first `num_examples` prompts of a split.

  The prompts are the split's first rows in dataset order. For each mode
  `(name, temperature)` the model completes every prompt once at
  temperature 0 (greedy) or `samples_per_prompt` times at a positive
  temperature, with keys derived from `seed`, the mode's name and the batch.
  Every metric below is a mean over all completions of the mode, except
  Self-BLEU and the number of examples:

    "reward"       `reward.score` (a host model gets sources, completions,
                   targets and the token arrays; a device model
                   `inputs.arrays_only()`); without `reward`, the task's
                   first reward fn, or rouge2 / 100 if it has none.
    <reward fn>    every `task.reward_fns` entry by name, and for `facts`
                   the oracle's claims per summary (see `score_texts`).
    "rouge1", "rouge2", "rougeL"   F1 * 100 against the targets, standard
                   ROUGE: rouge-score's tokenizer and stemmer (see
                   `rouge_scores`).
    "teacher_kl"   reverse KL(model || teacher) over the full vocabulary at
                   every completion token (EOS included), averaged per
                   sequence, then over sequences (the "sequence" reduction),
                   on the model's own completions; only with a teacher.
    "self_bleu"    diversity in [0, 100], lower is more diverse. With several
                   samples per prompt: the Self-BLEU of each prompt's
                   samples, averaged over prompts. For greedy decoding (or
                   samples_per_prompt == 1) a prompt's samples would be
                   identical, so it is the Self-BLEU of the whole set of
                   completions of different prompts, i.e. how much the model
                   says the same thing whatever the prompt.
    "length"       completion length in tokens, EOS included.
    "num_examples" the number of prompts evaluated.

  Args:
    model: the `gkdrl.networks.LanguageModel` to evaluate (pass the same
      object across calls to reuse compilations).
    params: its parameters.
    task: a `gkdrl.tasks.Task`; its tokenizer gives the EOS and pad ids.
    split: "train", "validation" or "test".
    num_examples: how many prompts, >= 1; capped at the split's size.
    batch_size: prompts per generation call, >= 1 (capped at num_examples).
    max_new_tokens: T, the most tokens generated per completion, >= 1.
    teacher: a `LanguageModel` over the same vocabulary, or None.
    teacher_params: the teacher's parameters (required with a teacher).
    reward: a `RewardModel` (or an object with `reward_model()`), or None.
    reward_params: its parameters; None calls `reward.init` with a key
      derived from `seed`.
    samples_per_prompt: completions per prompt in sampling modes, >= 1.
    seed: the seed every sampling key derives from.
    modes: (name, temperature) pairs, or a dict name -> temperature.

  Returns:
    mode name -> metric name -> float, modes in the order given; in a
    multi-host run the same on every process (see the module docstring).
  """
  return _evaluate(
      num_samples=0, model=model, params=params, task=task, split=split,
      num_examples=num_examples, batch_size=batch_size,
      max_new_tokens=max_new_tokens, teacher=teacher,
      teacher_params=teacher_params, reward=reward,
      reward_params=reward_params, samples_per_prompt=samples_per_prompt,
      seed=seed, modes=modes)[0]


def evaluate_with_samples(*, num_samples: int = 4, **kwargs
                          ) -> tuple[dict[str, dict[str, float]],
                                     dict[str, list[dict]]]:
  """`evaluate` (same keyword arguments) plus a few completions per mode.

  The metrics are exactly `evaluate`'s; the samples are the first draw of
  the first `num_samples` prompts, with their reward and teacher KL (see
  `gkdrl.evaluation.samples`).

  Args:
    num_samples: completions kept per mode, >= 0.
    **kwargs: `evaluate`'s arguments.

  Returns:
    (mode -> metric name -> float, mode -> list of sample records).
  """
  return _evaluate(num_samples=num_samples, **kwargs)


def _evaluate(*, num_samples: int, model, params: Any, task: tasks.Task,
              split: str = "validation", num_examples: int = 128,
              batch_size: int = 32, max_new_tokens: int, teacher=None,
              teacher_params: Any = None, reward: Any = None,
              reward_params: Any = None, samples_per_prompt: int = 4,
              seed: int = 0,
              modes: Sequence[tuple[str, float]] = DEFAULT_MODES):
  """`evaluate`'s work; also keeps `num_samples` records per mode."""
  validation.check_choice("split", split, tuple(task.splits))
  num_examples = min(validation.check_int("num_examples", num_examples, 1),
                     len(task.splits[split]))
  batch_size = min(validation.check_int("batch_size", batch_size, 1),
                   num_examples)
  validation.check_int("max_new_tokens", max_new_tokens, 1)
  validation.check_int("samples_per_prompt", samples_per_prompt, 1)
  validation.check_int("seed", seed)
  modes = _check_modes(modes)
  num_samples = samples_lib.check_num_samples(num_samples)
  if (teacher is None) != (teacher_params is None):
    raise ValueError(
        "teacher and teacher_params must be given together, got teacher="
        f"{type(teacher).__name__} and teacher_params="
        f"{type(teacher_params).__name__}")
  if teacher is not None and (
      teacher.config.vocab_size != model.config.vocab_size):
    raise ValueError(
        f"teacher vocab_size={teacher.config.vocab_size} must equal the "
        f"model's vocab_size={model.config.vocab_size}")
  for what, lm in (("the model", model), ("the teacher", teacher)):
    if lm is not None and not lm.is_encoder_decoder:  # no position limit
      validation.check_completion_length(
          max_new_tokens, prompt_tokens=task.max_prompt_tokens,
          max_positions=lm.config.max_positions, model=what)
  if jax.process_count() > 1:
    # Whole copies on this process's device, so that nothing below reads
    # rows other processes hold; local parameters (and non-array leaves of
    # host reward models) stay as they are.
    on_device = lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x
    params, teacher_params, reward_params = (
        jax.tree.map(on_device, parallel.gather(tree))
        for tree in (params, teacher_params, reward_params))
  key = jax.random.key(seed)
  if reward is not None:
    reward = rm_base.as_reward_model(reward)
    if reward_params is None:
      reward_params = reward.init(jax.random.fold_in(key, 0))
  batches = _prompt_batches(task, split, num_examples, batch_size)
  results = {}
  for name, temperature in modes:
    # The mode's name, not its position, picks its keys, so adding a mode
    # leaves the others' samples unchanged.
    mode_key = jax.random.fold_in(key, zlib.crc32(name.encode()) % 2**31 + 1)
    results[name] = _evaluate_mode(
        mode_key, temperature, model=model, params=params, task=task,
        batches=batches, max_new_tokens=max_new_tokens, teacher=teacher,
        teacher_params=teacher_params, reward=reward,
        reward_params=reward_params, samples_per_prompt=samples_per_prompt,
        num_samples=num_samples)
  return ({name: metrics for name, (metrics, _) in results.items()},
          {name: records for name, (_, records) in results.items()})
