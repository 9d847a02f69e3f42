"""Distillation from a teacher with another tokenizer (word against
word-piece), through `supervised_kd` and `gkd`."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from gkdrl import networks
from gkdrl import types
from gkdrl.agents import acting
from gkdrl.agents import cross_tokenizer
from gkdrl.losses import cross_tokenizer as xtok_losses
from tests.tiny_models import tiny_config
from tests.tiny_models import word_piece_tokenizer

TEXT = "Ada is a dentist ."


@pytest.fixture(scope="module")
def teacher_tokenizer(facts_task):
  return word_piece_tokenizer(facts_task)


@pytest.fixture(scope="module")
def teacher(facts_task, teacher_tokenizer):
  """A tiny teacher for the word pieces, made peaked (its final norm's
  scale times 40) so that matching it is a visible change."""
  tok = teacher_tokenizer
  config = dataclasses.replace(
      tiny_config(facts_task, 24, 1),
      vocab_size=len(tok), max_positions=512,
      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
      bos_token_id=tok.bos_token_id)
  model = networks.make_model(config)
  params = dict(model.init(jax.random.key(1)))
  params["lm/final_norm"] = {"scale": params["lm/final_norm"]["scale"] * 40}
  return model, params


def _student_batch(tokenizer, text):
  ids = tokenizer.encode(text, add_special_tokens=False) + [
      tokenizer.eos_token_id]
  prompt = tokenizer.encode("summary :")
  return types.Batch(
      prompt_tokens=jnp.asarray([prompt], jnp.int32),
      prompt_mask=jnp.ones((1, len(prompt)), bool),
      completion_tokens=jnp.asarray([ids + [0, 0]], jnp.int32),
      completion_mask=jnp.asarray([[True] * len(ids) + [False] * 2]))


def test_token_spans_cover_the_decoded_text(facts_task, teacher_tokenizer):
  tok = teacher_tokenizer
  ids = tok.encode(TEXT, add_special_tokens=False)
  assert tok.convert_ids_to_tokens(ids) == [
      "Ada", "is", "a", "d", "##e", "##n", "##t", "##i", "##s", "##t", "."]
  text, spans = cross_tokenizer.token_spans(tok, ids + [tok.eos_token_id])
  assert text == TEXT
  # A token's span holds the space the decoder puts before it.
  assert spans == [(0, 3), (3, 6), (6, 8), (8, 10), (10, 11), (11, 12),
                   (12, 13), (13, 14), (14, 15), (15, 16), (16, 18),
                   (18, 18)]
  text, spans = cross_tokenizer.token_spans(
      facts_task.tokenizer, facts_task.tokenizer.encode(
          TEXT, add_special_tokens=False))
  assert text == TEXT
  assert spans == [(0, 3), (3, 6), (6, 8), (8, 16), (16, 18)]


def test_retokenize_aligns_a_hand_checked_example(facts_task,
                                                  teacher_tokenizer):
  student_tok, tok = facts_task.tokenizer, teacher_tokenizer
  batch = cross_tokenizer.retokenize(
      _student_batch(student_tok, TEXT), student_tok, tok,
      eos_token_id=student_tok.eos_token_id)
  view = batch.teacher_tokens
  # Student: Ada | is | a | dentist | . | <eos> | pad pad. Teacher: Ada is
  # a d ##e ##n ##t ##i ##s ##t . [EOS]. "dentist" pairs with the teacher
  # token where it starts, "d" (approximate); the rest coincide.
  np.testing.assert_array_equal(view.index[0], [0, 1, 2, 3, 10, 11, 0, 0])
  np.testing.assert_array_equal(
      view.exact[0], [True, True, True, False, True, True, False, False])
  t_len = int(view.completion_mask[0].sum())
  assert tok.convert_ids_to_tokens(
      np.asarray(view.completion_tokens[0, :t_len]).tolist())[-2:] == [
          ".", "[EOS]"]
  assert view.completion_tokens.shape[1] == cross_tokenizer.bucket_length(
      12) == 16
  prompt = np.asarray(view.prompt_tokens[0])[np.asarray(view.prompt_mask[0])]
  assert tok.decode(prompt.tolist()) == "summary :"
  # The shared tokens: same strings, and the two EOS tokens paired.
  s_ids, t_ids = cross_tokenizer.shared_ids(student_tok, tok)
  pairs = set(zip(student_tok.convert_ids_to_tokens(s_ids.tolist()),
                  tok.convert_ids_to_tokens(t_ids.tolist())))
  assert ("<eos>", "[EOS]") in pairs and ("is", "is") in pairs
  assert all(s == t for s, t in pairs if s != "<eos>")
  assert len(set(s_ids.tolist())) == len(s_ids)


def test_a_teacher_with_another_tokenizer_is_refused_without_the_option(
    facts_task, tiny_models, teacher, teacher_tokenizer):
  student = tiny_models[0]
  with pytest.raises(ValueError, match="cross_tokenizer='align'"):
    agents.make_agent(agents.GKDConfig(), student=student,
                      teacher=teacher[0], tokenizer=facts_task.tokenizer,
                      teacher_tokenizer=teacher_tokenizer)
  with pytest.raises(ValueError, match="teacher_top_k=4 is not allowed"):
    agents.GKDConfig(cross_tokenizer="uld", teacher_top_k=4)
  with pytest.raises(ValueError, match="cross_tokenizer='align' is not al"):
    agents.GKDRLConfig(cross_tokenizer="align")
  with pytest.raises(ValueError, match="cross_tokenizer='xx' is not al"):
    agents.GKDConfig(cross_tokenizer="xx")


def _aligned_kl(agent_parts, student_params, teacher_params, batch):
  """Mean forward KL over the shared buckets at the exact positions,
  computed apart from the agent's loss."""
  student, teacher, s_ids, t_ids = agent_parts
  view = batch.teacher_tokens
  s_logits = agents.completion_logits(student, student_params, batch)
  t_logits = agents.completion_logits(teacher, teacher_params, batch._replace(
      prompt_tokens=view.prompt_tokens, prompt_mask=view.prompt_mask,
      completion_tokens=view.completion_tokens,
      completion_mask=view.completion_mask))
  t_logits = jnp.take_along_axis(t_logits, view.index[..., None], axis=1)
  kl = xtok_losses.shared_bucket_kl(s_logits, t_logits, s_ids, t_ids)
  exact = np.asarray(view.exact & batch.completion_mask)
  return float(np.asarray(kl)[exact].mean())


def _train(agent_name, facts_task, tiny_models, teacher, teacher_tokenizer):
  """(aligned KL before, after, exact fraction) of 40 updates on one batch
  of prompts (one teacher prompt length: one compile of the update per
  teacher completion length). The KL is measured on one held batch of the
  agent's data: the dataset's targets, or the initial student's samples.
  """
  student, student_params = tiny_models[:2]
  t_model, t_params = teacher
  config = agents.make_config(
      agent_name, cross_tokenizer="align", divergence="forward_kl",
      max_new_tokens=8, optimizer=agents.OptimizerConfig(learning_rate=3e-3))
  agent = agents.make_agent(config, student=student, teacher=t_model,
                            tokenizer=facts_task.tokenizer,
                            teacher_tokenizer=teacher_tokenizer)
  s_ids, t_ids = cross_tokenizer.shared_ids(facts_task.tokenizer,
                                            teacher_tokenizer)
  parts = (student, t_model, s_ids, t_ids)
  task_batch = next(facts_task.batches("train", 8, fixed_shape=True))
  state = agent.init(student_params)
  probe, _ = agent.act(state, task_batch, jax.random.key(7))
  before = _aligned_kl(parts, student_params, t_params, probe)
  key = jax.random.key(0)
  for _ in range(40):
    key, act_key, update_key = jax.random.split(key, 3)
    batch, _ = agent.act(state, task_batch, act_key, teacher_params=t_params)
    state, metrics = agent.update(state, batch, t_params, update_key)
    assert np.isfinite(float(metrics["loss/divergence"]))
  after = _aligned_kl(parts, state.params, t_params, probe)
  return before, after, float(metrics["cross_tokenizer/exact_fraction"])


@pytest.mark.slow
def test_supervised_kd_across_tokenizers_lowers_the_aligned_divergence(
    facts_task, tiny_models, teacher, teacher_tokenizer):
  before, after, exact = _train("supervised_kd", facts_task, tiny_models,
                                teacher, teacher_tokenizer)
  assert 0 < exact < 1
  # Measured: 2.60 -> 1.61 (0.62 of it).
  assert after < 0.75 * before, (before, after)


@pytest.mark.slow
def test_gkd_across_tokenizers_lowers_the_aligned_divergence(
    facts_task, tiny_models, teacher, teacher_tokenizer):
  before, after, exact = _train("gkd", facts_task, tiny_models, teacher,
                                teacher_tokenizer)
  assert 0 < exact < 1
  # Measured: 2.29 -> 1.72 (0.75 of it; ULD on the other positions pulls
  # the student towards any peaked distribution, so it falls slower).
  assert after < 0.85 * before, (before, after)
