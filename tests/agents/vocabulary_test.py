"""A teacher and a student whose embeddings are padded differently.

The teacher's vocabulary is padded to a multiple of 64 (as many real models
pad theirs), the student's is not; they share the task's tokenizer. The
padding rows are set so that their logits dominate: any computation that
read them would show.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from gkdrl import losses
from gkdrl import networks
from gkdrl import reward_models
from gkdrl import sampling
from gkdrl import tasks
from gkdrl.agents import base
from gkdrl.agents import vocabulary
from tests.tiny_models import tiny_config


def padded_model(task, d_model, seed):
  """A tiny model padded to a multiple of 64 rows, padding rows large."""
  real = len(task.tokenizer)
  config = dataclasses.replace(tiny_config(task, d_model, 1),
                               vocab_size=-(-(real + 1) // 64) * 64)
  model = networks.make_model(config)
  params = model.init(jax.random.key(seed))
  embed = params["lm/embed"]["embeddings"]  # [V_padded, D] (tied)
  big = 30.0 * jax.random.normal(jax.random.key(seed + 10),
                                 embed[real:].shape)
  params["lm/embed"]["embeddings"] = embed.at[real:].set(big)
  return model, params


@pytest.fixture(scope="module")
def padded_pair(facts_task, tiny_models):
  """(student unpadded, its params, teacher padded, its params)."""
  student, sp, _, _ = tiny_models
  teacher, tp = padded_model(facts_task, 24, 1)
  assert teacher.config.vocab_size % 64 == 0
  assert teacher.config.vocab_size > student.config.vocab_size
  return student, sp, teacher, tp


def config_of(name, **kwargs):
  return agents.make_config(
      name, max_new_tokens=6,
      optimizer=agents.OptimizerConfig(learning_rate=1e-2, warmup_steps=0),
      **kwargs)


@pytest.mark.parametrize("name,kwargs", [
    ("gkd", {}),
    ("gkd", {"loss_chunk_size": 3}),
    ("gkd_rl", {"alpha": 1.0}),
    ("gkd_rl", {"alpha": 0.5, "kl_mode": "analytic"}),
])
def test_padded_teacher_trains_and_its_divergence_is_over_the_real_vocab(
    name, kwargs, padded_pair, facts_task, fixed_batch):
  student, sp, teacher, tp = padded_pair
  real = len(facts_task.tokenizer)
  config = config_of(name, **kwargs)
  reward = reward_models.make_python_reward(
      lambda sources, completions, targets: np.asarray(
          [len(c) / 10 for c in completions], np.float32), name="length")
  agent = agents.make_agent(config, student=student, teacher=teacher,
                            tokenizer=facts_task.tokenizer, reward=reward)
  state = agent.init(sp)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0),
                       teacher_params=tp, reward_params=())
  # The divergence on the sliced logits, computed here independently.
  s_logits = base.completion_logits(student, sp, batch)  # [B, T, V]
  t_full = base.completion_logits(teacher, tp, batch)  # [B, T, V_padded]
  assert t_full.shape[-1] > real
  kwargs = {"beta": config.beta} if config.divergence == "jsd" else {}
  want, _ = losses.distillation_loss(
      s_logits, t_full[..., :real], batch.completion_mask,
      divergence=config.divergence, chunk_size=0, **kwargs)
  state, metrics = agent.update(jax.tree.map(jnp.copy, state), batch, tp,
                                jax.random.key(1))
  np.testing.assert_allclose(metrics["loss/divergence"], want, rtol=1e-5)
  assert float(metrics["train/skipped"]) == 0.0 and int(state.step) == 1
  # Reading the padding (large logits) would give another value.
  padded_student = jnp.pad(s_logits, [(0, 0), (0, 0),
                                      (0, t_full.shape[-1] - real)],
                           constant_values=-1e9)
  wrong, _ = losses.distillation_loss(padded_student, t_full,
                                      batch.completion_mask,
                                      divergence=config.divergence,
                                      chunk_size=0, **kwargs)
  assert abs(float(wrong) - float(want)) > 1e-2 * abs(float(want))
  if name == "gkd" or config.alpha == 1.0:  # a pure divergence falls
    for _ in range(3):
      state, metrics = agent.update(state, batch, tp, jax.random.key(1))
    assert float(metrics["loss/divergence"]) < float(want)


def test_padded_ids_are_never_sampled(facts_task):
  """Student and teacher padded: rollouts of either stay in the tokenizer."""
  student, sp = padded_model(facts_task, 16, 3)
  teacher, tp = padded_model(facts_task, 24, 4)
  real = len(facts_task.tokenizer)
  tb = next(facts_task.batches("train", 8, fixed_shape=True))
  # The padded model itself samples padding ids (their logits dominate).
  raw = sampling.sample(student, sp, jax.random.key(0),
                        jnp.asarray(tb.prompt_tokens),
                        jnp.asarray(tb.prompt_mask), max_new_tokens=6,
                        eos_token_id=facts_task.tokenizer.eos_token_id)
  assert np.any(np.asarray(raw.tokens)[np.asarray(raw.mask)] >= real)
  for name in ("gkd", "seqkd"):  # the student's and the teacher's samples
    agent = agents.make_agent(config_of(name), student=student,
                              teacher=teacher,
                              tokenizer=facts_task.tokenizer)
    state = agent.init(sp)
    for seed in range(3):
      batch, _ = agent.act(state, tb, jax.random.key(seed),
                           teacher_params=tp)
      tokens = np.asarray(batch.completion_tokens)
      assert tokens.max() < real, name
      assert np.all(np.isfinite(np.asarray(batch.behaviour_logp_a)))
    state, metrics = agent.update(state, batch, tp, jax.random.key(0))
    assert np.isfinite(float(metrics["loss/total"]))


def test_restricted_model_slices_every_logits_output(facts_task):
  model, params = padded_model(facts_task, 16, 5)
  real = len(facts_task.tokenizer)
  view = vocabulary.restrict_vocabulary(model, real)
  tokens = jnp.asarray([[1, 5, 6, 7]])
  np.testing.assert_array_equal(view.apply(params, tokens),
                                model.apply(params, tokens)[..., :real])
  assert view.unembedding(params).shape == (16, real)
  # One view per model and size: the same model padded alike, built again,
  # gets the same view (and so reuses the programs compiled for it).
  assert vocabulary.restrict_vocabulary(
      padded_model(facts_task, 16, 6)[0], real) is view
  assert vocabulary.restrict_vocabulary(model,
                                        model.config.vocab_size) is model
  with pytest.raises(ValueError, match="vocab_size=.* is not allowed; the "
                     "model's embedding has only"):
    vocabulary.restrict_vocabulary(model, model.config.vocab_size + 1)


def test_pairs_that_cannot_share_a_vocabulary_are_refused(padded_pair,
                                                          facts_task):
  student, _, teacher, _ = padded_pair
  # Padded differently and nothing says where the real vocabulary ends.
  with pytest.raises(ValueError, match=r"vocabularies differ: teacher "
                     r"vocab_size=\d+, student vocab_size=\d+.*tokenizer"):
    agents.make_agent(config_of("gkd"), student=student, teacher=teacher)
  # A real vocabulary larger than the student's embedding.
  with pytest.raises(ValueError, match=r"vocab_size=\d+ is not allowed; "
                     r"the shared vocabulary must fit both"):
    agents.check_vocabularies(teacher, student,
                              vocab_size=student.config.vocab_size + 1)
  # Tokenizers that differ, the difference named.
  other = tasks.make_task("arithmetic").tokenizer
  with pytest.raises(ValueError, match=r"tokenizers differ \(teacher's "
                     r"against student's: \d+ tokens against \d+\)"):
    agents.check_vocabularies(teacher, student, teacher_tokenizer=other,
                              student_tokenizer=facts_task.tokenizer)
  assert agents.check_vocabularies(
      teacher, student, teacher_tokenizer=facts_task.tokenizer,
      student_tokenizer=facts_task.tokenizer) == len(facts_task.tokenizer)


def test_tokenizer_difference_names_the_first_differing_id(facts_task):
  tok = facts_task.tokenizer
  assert vocabulary.tokenizer_difference(tok, tok) is None
  words = sorted(tok.get_vocab(), key=tok.get_vocab().get)[4:]
  swapped = tasks.make_word_tokenizer(
      [words[1], words[0]] + words[2:])
  assert vocabulary.tokenizer_difference(swapped, tok) == (
      f"token {words[0]!r} has id 5 against 4")
