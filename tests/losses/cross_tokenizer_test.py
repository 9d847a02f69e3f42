"""ULD, the shared-token KL and the alignment of two tokenizations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tokenizers
from tokenizers import models
from tokenizers import pre_tokenizers

from gkdrl import losses
from gkdrl.losses import cross_tokenizer
from gkdrl.tasks import token_alignment

TEXT = "the capital of a is b"


def _softmax64(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_uld_matches_a_float64_reference_across_vocabulary_sizes():
  rng = np.random.default_rng(0)
  student = rng.normal(size=(2, 3, 7)) * 2
  teacher = rng.normal(size=(2, 3, 12)) * 2
  q = -np.sort(-_softmax64(student / 1.5), -1)
  p = -np.sort(-_softmax64(teacher / 0.7), -1)
  ref = np.abs(p - np.pad(q, [(0, 0), (0, 0), (0, 5)])).sum(-1)
  got = cross_tokenizer.uld(jnp.asarray(student, jnp.float32),
                            jnp.asarray(teacher, jnp.float32),
                            student_temperature=1.5, teacher_temperature=0.7)
  np.testing.assert_allclose(got, ref, atol=1e-6)


def test_uld_ignores_which_token_carries_the_mass():
  logits = jnp.asarray([[3.0, 1.0, 0.0, -2.0]])
  assert float(cross_tokenizer.uld(logits, logits[:, ::-1])[0]) < 1e-6
  assert float(cross_tokenizer.uld(logits, jnp.zeros((1, 4)))[0]) > 0.1


def test_uld_checks_its_arguments():
  with pytest.raises(AssertionError):
    cross_tokenizer.uld(jnp.zeros((2, 5)), jnp.zeros((3, 5)))
  with pytest.raises(ValueError, match="student_temperature=0"):
    cross_tokenizer.uld(jnp.zeros((2, 5)), jnp.zeros((2, 5)),
                        student_temperature=0)


def test_shared_bucket_kl_is_the_forward_kl_when_all_tokens_are_shared():
  rng = np.random.default_rng(1)
  student = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  perm = np.asarray([3, 0, 5, 1, 4, 2], np.int32)  # teacher id of each
  ids = np.arange(6, dtype=np.int32)
  got = cross_tokenizer.shared_bucket_kl(student, teacher, ids, ids)
  np.testing.assert_allclose(got, losses.forward_kl(student, teacher),
                             atol=1e-5)
  # Same distributions under a relabelled teacher vocabulary.
  relabelled = jnp.zeros_like(teacher).at[:, perm].set(teacher)
  got = cross_tokenizer.shared_bucket_kl(student, relabelled,
                                         np.arange(6, dtype=np.int32), perm)
  np.testing.assert_allclose(got, losses.forward_kl(student, teacher),
                             atol=1e-5)


def _tokenizer(words: bool):
  vocab = {"[UNK]": 0}
  pieces = TEXT.split() if words else sorted(set(TEXT) - {" "})
  vocab.update({p: i + 1 for i, p in enumerate(pieces)})
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  split = [pre_tokenizers.Whitespace()]
  if not words:
    split.append(pre_tokenizers.Split(tokenizers.Regex("."), "isolated"))
  tok.pre_tokenizer = pre_tokenizers.Sequence(split)
  return tok


def test_two_tokenizers_align_exactly_on_the_tokens_they_share():
  chars, words = _tokenizer(False), _tokenizer(True)
  s_enc, t_enc = chars.encode(TEXT), words.encode(TEXT)
  assert len(s_enc.ids) == len(TEXT.replace(" ", ""))
  assert len(t_enc.ids) == 6
  index, exact = token_alignment.align_offsets(s_enc.offsets, t_enc.offsets)
  # Exact only on the one-letter words "a" and "b".
  assert [s_enc.tokens[i] for i in np.flatnonzero(exact)] == ["a", "b"]
  for i, j in enumerate(index):  # each char lies in its teacher word
    start, end = t_enc.offsets[j]
    assert start <= s_enc.offsets[i][0] < end
  s_ids, t_ids = token_alignment.shared_vocabulary(chars.get_vocab(),
                                                   words.get_vocab())
  shared = {chars.id_to_token(int(i)) for i in s_ids}
  assert shared == {"[UNK]", "a", "b"}
  assert all(chars.id_to_token(int(s)) == words.id_to_token(int(t))
             for s, t in zip(s_ids, t_ids))


def test_a_short_run_across_tokenizers_lowers_the_aligned_divergence():
  chars, words = _tokenizer(False), _tokenizer(True)
  s_enc, t_enc = chars.encode(TEXT), words.encode(TEXT)
  index, exact = token_alignment.align_offsets(s_enc.offsets, t_enc.offsets)
  s_ids, t_ids = token_alignment.shared_vocabulary(chars.get_vocab(),
                                                   words.get_vocab())
  rng = np.random.default_rng(2)
  teacher = jnp.asarray(rng.normal(size=(1, len(t_enc.ids),
                                         words.get_vocab_size())) * 3,
                        jnp.float32)[:, index]  # [1, T_s, V_t] aligned
  student = jnp.zeros((1, len(s_enc.ids), chars.get_vocab_size()))
  exact = jnp.asarray(exact)[None]

  def loss(s):
    return jnp.mean(cross_tokenizer.aligned_divergence(
        s, teacher, exact, s_ids, t_ids))

  opt = optax.adam(0.1)
  state = opt.init(student)
  first = float(loss(student))
  for _ in range(50):
    grads = jax.grad(loss)(student)
    assert np.all(np.isfinite(grads))
    updates, state = opt.update(grads, state)
    student = optax.apply_updates(student, updates)
  assert float(loss(student)) < 0.5 * first


def test_cross_tokenizer_loss_mixes_the_divergence_and_uld_by_position():
  rng = np.random.default_rng(3)
  student = jnp.asarray(rng.normal(size=(2, 4, 6)) * 2, jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(2, 4, 6)) * 2, jnp.float32)
  exact = jnp.asarray([[True, False, True, False], [False, True, True, True]])
  mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1]], jnp.float32)
  ids = np.arange(6, dtype=np.int32)  # every token shared, same ids
  loss, metrics = losses.cross_tokenizer_loss(
      student, teacher, exact, mask, ids, ids, mode="align",
      divergence="forward_kl", reduction="token", teacher_temperature=0.5)
  # Float64 reference: forward KL of the full distributions where exact
  # (the tail buckets are empty), ULD elsewhere.
  p = _softmax64(np.asarray(teacher) / 0.5)
  q = _softmax64(np.asarray(student))
  kl = np.sum(p * (np.log(p) - np.log(q)), -1)
  uld = np.abs(-np.sort(-p, -1) - -np.sort(-q, -1)).sum(-1)
  values = np.where(np.asarray(exact), kl, uld)
  m = np.asarray(mask)
  np.testing.assert_allclose(loss, (values * m).sum() / m.sum(), rtol=1e-5)
  both = np.asarray(exact) & (m > 0)
  np.testing.assert_allclose(metrics["loss/aligned_divergence"],
                             kl[both].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["cross_tokenizer/exact_fraction"],
                             both.sum() / m.sum(), rtol=1e-6)
  loss, _ = losses.cross_tokenizer_loss(
      student, teacher, exact, mask, ids, ids, mode="uld",
      reduction="token", teacher_temperature=0.5)
  np.testing.assert_allclose(loss, (uld * m).sum() / m.sum(), rtol=1e-5)
  grads = jax.grad(lambda s: losses.cross_tokenizer_loss(
      s, teacher, exact, mask, ids, ids)[0])(student)
  assert np.all(np.isfinite(grads)) and np.any(grads != 0)
  with pytest.raises(ValueError, match="mode='exact' is not allowed"):
    losses.cross_tokenizer_loss(student, teacher, exact, mask, ids, ids,
                                mode="exact")
