"""The offline teacher cache: equal training, checksums, resume, identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import agents
from gkdrl import losses
from gkdrl.agents import cached_teacher
from gkdrl.tasks import teacher_cache

TOP_K = 8
SHARD = 24  # 64 train examples: shards of 24, 24 and 16


def _optimizer():
  return agents.OptimizerConfig(learning_rate=3e-2, warmup_steps=0)


def _identity(task, mode="top_k"):
  return {"mode": mode, "task": "facts", "task_seed": 0,
          "tokenizer": teacher_cache.tokenizer_fingerprint(task.tokenizer),
          "teacher": "tiny", "top_k": TOP_K, "teacher_temperature": 1.0}


class Counting:
  """`compute` of the top-k cache that counts the batches it computes."""

  def __init__(self, teacher, teacher_params):
    self.fn = cached_teacher.teacher_top_k(teacher, TOP_K)
    self.params = teacher_params
    self.calls = 0

  def __call__(self, task_batch):
    self.calls += 1
    return cached_teacher.top_k_rows(self.fn, self.params, task_batch)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, tiny_models, facts_task):
  _, _, teacher, teacher_params = tiny_models
  out = tmp_path_factory.mktemp("cache")
  teacher_cache.build(Counting(teacher, teacher_params), facts_task, out,
                      identity=_identity(facts_task), shard_size=SHARD,
                      batch_size=5)
  return out


def test_training_from_the_cache_equals_the_live_teacher_at_the_same_k(
    cache_dir, tiny_models, facts_task):
  student, student_params, teacher, teacher_params = tiny_models
  config = agents.SupervisedKDConfig(optimizer=_optimizer(),
                                     teacher_cache=str(cache_dir))
  cached = agents.make_agent(config, student=student,
                             tokenizer=facts_task.tokenizer)
  assert not cached.uses_teacher
  # The live teacher_top_k option: its own act and loss, the same top-k
  # implementation (`gkdrl.losses.top_k`).
  live = agents.make_agent(
      agents.SupervisedKDConfig(optimizer=_optimizer(), teacher_top_k=TOP_K),
      student=student, teacher=teacher, tokenizer=facts_task.tokenizer)
  states = {}
  for name, agent in (("cached", cached), ("live", live)):
    state = agent.init(student_params)
    # Shuffled batches of another size and padding than the cache's.
    for step, task_batch in enumerate(
        facts_task.batches("train", 8, seed=3, num_epochs=None)):
      if step == 4:
        break
      batch, _ = agent.act(state, task_batch, jax.random.key(step),
                           teacher_params=teacher_params)
      state, metrics = agent.update(state, batch, teacher_params,
                                    jax.random.key(step))
    states[name] = (state, float(metrics["loss/divergence"]))
  moved = jax.tree.leaves(jax.tree.map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), states["cached"][0].params,
      student_params))
  # Adam moves each parameter ~lr = 3e-2 per step: a wrong cache entry
  # would differ by that much, float noise of the teacher by ~1e-5.
  assert max(moved) > 1e-2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
               states["cached"][0].params, states["live"][0].params)
  # The cache's teacher tail is 1 - the sum of its k probabilities, the
  # live one a logsumexp of the rest: equal up to float32 rounding (~1e-7).
  np.testing.assert_allclose(states["cached"][1], states["live"][1],
                             rtol=1e-5, atol=1e-7)


def test_bucketed_forward_kl_is_exact_at_full_k_and_a_lower_bound_below():
  rng = np.random.default_rng(0)
  student = rng.normal(size=(2, 3, 11)).astype(np.float32) * 2
  teacher = rng.normal(size=(2, 3, 11)).astype(np.float32) * 2
  log_p = np.log(np.exp(teacher) / np.exp(teacher).sum(-1, keepdims=True))
  full = losses.forward_kl(jnp.asarray(student), jnp.asarray(teacher))
  for k in (11, 6, 2):
    logp, ids = jax.lax.top_k(jnp.asarray(log_p), k)
    log_q, log_pb = cached_teacher.bucket_log_probs(jnp.asarray(student),
                                                    ids, logp)
    # Float64 NumPy reference of KL over the k + 1 buckets.
    q = np.exp(np.asarray(log_q, np.float64))
    p = np.exp(np.asarray(log_pb, np.float64))
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    bucketed = losses.forward_kl(log_q, log_pb)
    if k == 11:
      np.testing.assert_allclose(bucketed, full, atol=1e-5)
    else:
      assert np.all(np.asarray(bucketed) <= np.asarray(full) + 1e-6)
      ref = np.sum(np.where(p > 0, p * (np.log(np.maximum(p, 1e-300))
                                        - np.log(q)), 0.0), -1)
      np.testing.assert_allclose(bucketed, ref, atol=1e-5)
    grad = jax.grad(lambda s: jnp.sum(losses.forward_kl(
        *cached_teacher.bucket_log_probs(s, ids, logp))))(jnp.asarray(student))
    assert np.all(np.isfinite(grad))


def test_a_corrupt_shard_is_named_at_load_and_redone_on_resume(
    tmp_path, tiny_models, facts_task):
  _, _, teacher, teacher_params = tiny_models
  compute = Counting(teacher, teacher_params)
  build = lambda: teacher_cache.build(  # noqa: E731
      compute, facts_task, tmp_path, identity=_identity(facts_task),
      shard_size=SHARD, batch_size=SHARD)
  build()
  assert compute.calls == 3
  shard = tmp_path / "shard_00001.npz"
  data = bytearray(shard.read_bytes())
  data[len(data) // 2] ^= 0xFF
  shard.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="shard_00001.npz is corrupt"):
    teacher_cache.open_cache(tmp_path)
  (tmp_path / "shard_00002.npz").unlink()  # as if cut short while writing
  build()
  assert compute.calls == 5  # shards 1 and 2 again; shard 0 kept
  cache = teacher_cache.open_cache(tmp_path)
  assert len(cache) == 64


def test_a_cache_of_another_task_tokenizer_or_teacher_is_refused(cache_dir):
  with pytest.raises(ValueError, match="task: cache has 'facts', expected "
                     "'arithmetic'"):
    teacher_cache.open_cache(cache_dir, expected={"task": "arithmetic"})
  with pytest.raises(ValueError, match="tokenizer: cache has"):
    teacher_cache.open_cache(cache_dir, expected={"tokenizer": "other"})
  with pytest.raises(ValueError, match="teacher: cache has 'tiny'"):
    teacher_cache.open_cache(cache_dir, expected={"teacher": "big"})


def test_supervised_kd_refuses_a_cache_of_another_temperature_or_mode(
    cache_dir, tiny_models, facts_task):
  student = tiny_models[0]
  config = agents.SupervisedKDConfig(teacher_cache=str(cache_dir),
                                     teacher_temperature=0.5)
  with pytest.raises(ValueError, match="teacher_temperature: cache has 1.0"):
    agents.make_agent(config, student=student, tokenizer=facts_task.tokenizer)
  config = agents.SeqKDConfig(teacher_cache=str(cache_dir))
  with pytest.raises(ValueError, match="mode: cache has 'top_k', expected "
                     "'samples'"):
    agents.make_agent(config, student=student, tokenizer=facts_task.tokenizer)


def test_seqkd_trains_on_the_cached_teacher_samples(
    tmp_path, tiny_models, facts_task):
  student, student_params, teacher, teacher_params = tiny_models
  settings = agents.SeqKDConfig(max_new_tokens=8, sample_temperature=1.0)
  eos, pad = agents.special_token_ids(facts_task.tokenizer, teacher)
  samples = {}

  def compute(task_batch):
    rows = cached_teacher.sample_rows(
        teacher, teacher_params, task_batch, jax.random.key(0),
        config=settings, eos_token_id=eos, pad_token_id=pad)
    samples.update(zip(task_batch.sources, (r["tokens"] for r in rows)))
    return rows

  teacher_cache.build(compute, facts_task, tmp_path,
                      identity={**_identity(facts_task, "samples"),
                                "max_new_tokens": 8},
                      shard_size=SHARD, batch_size=8)
  config = agents.SeqKDConfig(teacher_cache=str(tmp_path),
                              optimizer=_optimizer())
  agent = agents.make_agent(config, student=student,
                            tokenizer=facts_task.tokenizer)
  assert not agent.uses_teacher
  task_batch = next(facts_task.batches("train", 4, seed=1))
  batch, _ = agent.act(None, task_batch, jax.random.key(0))
  for row, source in enumerate(task_batch.sources):
    n = len(samples[source])
    np.testing.assert_array_equal(batch.completion_tokens[row, :n],
                                  samples[source])
    assert int(batch.completion_mask[row].sum()) == n
  longest = max(len(samples[s]) for s in task_batch.sources)
  assert longest <= 8 == batch.completion_tokens.shape[1]  # one bucket
  state = agent.init(student_params)
  nll = []
  for step in range(3):  # the same batch: its NLL must fall
    state, metrics = agent.update(state, batch, None, jax.random.key(step))
    nll.append(float(metrics["loss/nll"]))
  assert nll[-1] < nll[0]


def test_teacher_top_k_takes_the_cache_k_or_refuses_another(
    cache_dir, tiny_models, facts_task):
  student = tiny_models[0]
  for k in (0, TOP_K):
    agents.make_agent(agents.SupervisedKDConfig(
        teacher_cache=str(cache_dir), teacher_top_k=k), student=student,
                      tokenizer=facts_task.tokenizer)
  with pytest.raises(ValueError, match=(
      rf"teacher_top_k=4 is not allowed; teacher cache .* holds the "
      rf"teacher's top-{TOP_K}: 0 \(take the cache's k\) or {TOP_K}\.")):
    agents.make_agent(agents.SupervisedKDConfig(
        teacher_cache=str(cache_dir), teacher_top_k=4), student=student,
                      tokenizer=facts_task.tokenizer)
