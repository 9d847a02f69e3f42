"""evaluate() and score_texts() on the facts task with a tiny random model.

One task, one model object and one full evaluation are shared by the whole
module, so the sampler compiles once per mode and the teacher KL once.
Independent references: greedy completions sampled here batch by batch (the
last batch overlapping instead of padded), the task's own oracle on the
reference targets, and a float64 NumPy reverse KL.
"""

import jax
import numpy as np
import pytest

from gkdrl import evaluation
from gkdrl import networks
from gkdrl import reward_models
from gkdrl import sampling
from gkdrl import tasks

NUM_EXAMPLES = 10  # of a 12-row split: the last batch of 4 has 2 real rows
BATCH_SIZE = 4
MAX_NEW_TOKENS = 12
COMMON = dict(num_examples=NUM_EXAMPLES, batch_size=BATCH_SIZE,
              max_new_tokens=MAX_NEW_TOKENS)
MODES = ("greedy", "sample")


class Setup:
  """The shared task, model and parameters."""

  def __init__(self):
    self.task = tasks.make_task("facts", num_train=8, num_validation=12,
                                num_test=8)
    self.model = networks.make_model(networks.ModelConfig(
        vocab_size=len(self.task.tokenizer), d_model=32, n_layers=1,
        n_heads=2, d_ff=64))
    self.params = self.model.init(jax.random.key(2))
    self.teacher_params = self.model.init(jax.random.key(3))

  def evaluate(self, **kwargs):
    kwargs = {"model": self.model, "task": self.task, **COMMON, **kwargs}
    return evaluation.evaluate(**kwargs)


@pytest.fixture(scope="module")
def setup():
  return Setup()


@pytest.fixture(scope="module")
def results(setup):
  return setup.evaluate(params=setup.params, teacher=setup.model,
                        teacher_params=setup.params)


@pytest.fixture(scope="module")
def greedy_reference(setup):
  """Greedy completions of the first rows, sampled without evaluate()."""
  data = setup.task.splits["validation"][:NUM_EXAMPLES]
  tokenizer = setup.task.tokenizer
  rows = {"completions": [], "tokens": [], "mask": [], "prompt_tokens": [],
          "prompt_mask": []}
  # Full batches of 4 rows; the last covers rows 6..9 and keeps 8 and 9.
  for start, keep in ((0, 0), (4, 0), (NUM_EXAMPLES - BATCH_SIZE, 2)):
    examples = {k: v[start:start + BATCH_SIZE] for k, v in data.items()}
    batch = setup.task.collate(examples, fixed_shape=True)
    samples = sampling.sample(
        setup.model, setup.params, jax.random.key(123), batch.prompt_tokens,
        batch.prompt_mask, max_new_tokens=MAX_NEW_TOKENS, temperature=0.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    tokens, mask = np.asarray(samples.tokens), np.asarray(samples.mask)
    texts = [tokenizer.decode(t[m].tolist(), skip_special_tokens=True)
             for t, m in zip(tokens, mask)]
    rows["completions"] += texts[keep:]
    for name, value in (("tokens", tokens), ("mask", mask),
                        ("prompt_tokens", batch.prompt_tokens),
                        ("prompt_mask", batch.prompt_mask)):
      rows[name].append(np.asarray(value)[keep:])
  reference = {k: np.concatenate(v) if k != "completions" else v
               for k, v in rows.items()}
  reference["sources"] = list(data["source"])
  reference["targets"] = list(data["target"])
  return reference


def test_all_keys_present_and_finite(results):
  expected = {"reward", "factuality", "coverage", "rouge1", "rouge2",
              "rougeL", "teacher_kl", "self_bleu", "length", "num_examples",
              *evaluation.FACT_COUNT_KEYS}
  assert list(results) == list(MODES)
  for mode in MODES:
    metrics = results[mode]
    assert set(metrics) == expected, mode
    for name, value in metrics.items():
      assert isinstance(value, float) and np.isfinite(value), (mode, name)
    assert metrics["num_examples"] == NUM_EXAMPLES
    assert 1 <= metrics["length"] <= MAX_NEW_TOKENS
    assert 0 <= metrics["self_bleu"] <= 100


def test_greedy_metrics_match_score_texts_of_independent_completions(
    results, greedy_reference, setup):
  ref = greedy_reference
  expected = evaluation.score_texts(setup.task, ref["sources"],
                                    ref["completions"], ref["targets"])
  greedy = results["greedy"]
  for name, value in expected.items():
    assert greedy[name] == pytest.approx(value, abs=1e-9), name
  assert greedy["reward"] == greedy["factuality"]  # no reward model given
  assert greedy["length"] == pytest.approx(ref["mask"].sum(axis=1).mean())
  # Greedy Self-BLEU is computed across the prompts' completions.
  assert greedy["self_bleu"] == pytest.approx(
      evaluation.self_bleu(ref["completions"]))
  assert expected["rouge1"] > 0  # the comparison is not between zeros


def test_deterministic_for_a_seed(setup, results):
  again = setup.evaluate(params=setup.params, teacher=setup.model,
                         teacher_params=setup.params)
  assert again == results
  other_seed = setup.evaluate(params=setup.params, teacher=setup.model,
                              teacher_params=setup.params, seed=1)
  assert other_seed["greedy"] == results["greedy"]
  assert other_seed["sample"] != results["sample"]


def test_teacher_kl_is_zero_for_the_same_model(results):
  for mode in MODES:
    assert abs(results[mode]["teacher_kl"]) < 1e-6


def _log_softmax64(logits):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_teacher_kl_matches_float64_reference(setup, greedy_reference):
  results = setup.evaluate(params=setup.params, teacher=setup.model,
                           teacher_params=setup.teacher_params,
                           modes=(("greedy", 0.0),))
  ref = greedy_reference
  tokens = np.concatenate([ref["prompt_tokens"], ref["tokens"]], axis=1)
  mask = np.concatenate([ref["prompt_mask"], ref["mask"]], axis=1)
  p, t = ref["prompt_tokens"].shape[1], ref["tokens"].shape[1]
  apply = jax.jit(setup.model.apply)
  log_q, log_p = (
      _log_softmax64(apply(params, tokens, mask))[:, p - 1:p - 1 + t]
      for params in (setup.params, setup.teacher_params))  # [N, T, V]
  kl = (np.exp(log_q) * (log_q - log_p)).sum(axis=-1)  # [N, T]
  per_row = (kl * ref["mask"]).sum(axis=1) / ref["mask"].sum(axis=1)
  assert per_row.min() > 0
  assert results["greedy"]["teacher_kl"] == pytest.approx(per_row.mean(),
                                                          rel=1e-4)


def test_sampling_self_bleu_is_within_each_prompt(setup):
  # Sharp logits make temperature-1 sampling pick the greedy tokens: the
  # samples of a prompt are identical (Self-BLEU 100), while greedy
  # Self-BLEU, taken across different prompts, is not. (These parameters
  # never end a completion within 4 words, which would lower Self-BLEU.)
  sharp = jax.tree.map(lambda p: p * 100.0,
                       setup.model.init(jax.random.key(0)))
  results = setup.evaluate(params=sharp)
  greedy, sample = results["greedy"], results["sample"]
  assert sample["self_bleu"] == pytest.approx(100.0)
  assert greedy["self_bleu"] < 50.0
  for name in ("rouge1", "rougeL", "length", "unparsed"):
    assert sample[name] == pytest.approx(greedy[name]), name
  # With one sample per prompt the sampling mode also compares prompts.
  single = setup.evaluate(params=sharp, samples_per_prompt=1)
  assert single["sample"]["self_bleu"] == pytest.approx(greedy["self_bleu"])


def test_reward_models_host_and_device(setup, results):
  coverage = reward_models.make_python_reward(tasks.coverage_reward)
  host = setup.evaluate(params=setup.params, reward=coverage)
  penalty = reward_models.make_length_penalty(scale=0.5, unit="tokens")
  device = setup.evaluate(params=setup.params, reward=penalty,
                          reward_params=())
  for mode in MODES:
    assert host[mode]["reward"] == pytest.approx(host[mode]["coverage"])
    assert device[mode]["reward"] == pytest.approx(
        -0.5 * device[mode]["length"])
    # The reward model does not change what is sampled.
    for name in ("rouge1", "self_bleu", "length"):
      assert host[mode][name] == results[mode][name]
      assert device[mode][name] == results[mode][name]
    assert "teacher_kl" not in host[mode]


def test_score_texts_of_the_targets_is_perfect(setup):
  data = setup.task.splits["validation"][:]
  scores = evaluation.score_texts(setup.task, data["source"], data["target"],
                                  data["target"])
  direct = setup.task.reward_fns["factuality"](data["source"], data["target"],
                                               data["target"])
  assert scores["factuality"] == pytest.approx(float(np.mean(direct)))
  assert scores["factuality"] == scores["coverage"] == 1.0
  assert scores["contradicted"] == scores["unsupported"] == 0.0
  assert scores["unparsed"] == 0.0
  assert scores["supported"] == scores["claims"] >= 3.0
  for key in evaluation.ROUGE_KEYS:
    assert scores[key] == pytest.approx(100.0)
  # A wrong summary: the sources themselves are no claims at all.
  wrong = evaluation.score_texts(setup.task, data["source"], data["source"],
                                 data["target"])
  assert wrong["factuality"] == pytest.approx(float(np.mean(
      setup.task.reward_fns["factuality"](data["source"], data["source"],
                                          data["target"]))))
  assert wrong["factuality"] < 1.0


def test_caps_num_examples_and_task_without_rewards(setup):
  plain = setup.task._replace(name="plain", reward_fns={})
  results = setup.evaluate(params=setup.params, task=plain,
                           num_examples=1000, modes={"greedy": 0.0})
  greedy = results["greedy"]
  assert greedy["num_examples"] == len(setup.task.splits["validation"])
  assert greedy["reward"] == pytest.approx(greedy["rouge2"] / 100.0)
  assert not {"factuality", "claims"} & set(greedy)


@pytest.mark.parametrize("kwargs,match", [
    (dict(split="dev"), "split"),
    (dict(num_examples=0), "num_examples"),
    (dict(batch_size=0), "batch_size"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(samples_per_prompt=0), "samples_per_prompt"),
    (dict(seed="0"), "seed"),
    (dict(modes=()), "modes"),
    (dict(modes=(("hot", -1.0),)), "temperature"),
    (dict(modes=(("cold", 1e-30),)), r"modes\[0\] temperature=1e-30 .*"
     r"\[0\.001, 1000\] or are 0 \(greedy\)"),
    (dict(modes=(("hot", 1e6),)), r"temperature=1000000\.0 is not allowed"),
    (dict(modes=(("greedy", 0.0), ("greedy", 1.0))), "unique"),
    (dict(modes=(("greedy",),)), "pair"),
    (dict(teacher_params={}), "teacher"),
])
def test_bad_arguments_raise(setup, kwargs, match):
  with pytest.raises(ValueError, match=match):
    setup.evaluate(params=setup.params, **kwargs)


def test_teacher_vocabulary_must_match(setup):
  other = networks.make_model(networks.ModelConfig(
      vocab_size=len(setup.task.tokenizer) + 1, d_model=32, n_layers=1,
      n_heads=2, d_ff=64))
  with pytest.raises(ValueError, match="vocab_size"):
    setup.evaluate(params=setup.params, teacher=other,
                   teacher_params=setup.params)
  with pytest.raises(ValueError, match="teacher"):
    setup.evaluate(params=setup.params, teacher=setup.model)
