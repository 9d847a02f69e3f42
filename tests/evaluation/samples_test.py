"""evaluate_with_samples(): the completions shown beside the metrics.

References: greedy completions sampled independently (evaluator_test's
`greedy_reference`), the task's own oracle per row and a float64 NumPy
reverse KL per row.
"""

import jax
import numpy as np
import pytest

from gkdrl import evaluation
from gkdrl import reward_models
from gkdrl.evaluation import samples as samples_lib
# Shared fixtures: one task, model and greedy reference per module.
from tests.evaluation.evaluator_test import COMMON
from tests.evaluation.evaluator_test import greedy_reference  # pylint: disable=unused-import
from tests.evaluation.evaluator_test import setup  # pylint: disable=unused-import
from tests.evaluation.evaluator_test import _log_softmax64


def _with_samples(setup, **kwargs):
  kwargs = {"model": setup.model, "task": setup.task, **COMMON, **kwargs}
  return evaluation.evaluate_with_samples(**kwargs)


@pytest.fixture(scope="module")
def evaluated(setup):
  return _with_samples(setup, params=setup.params, teacher=setup.model,
                       teacher_params=setup.teacher_params, num_samples=6)


def test_metrics_are_those_of_evaluate(setup, evaluated):
  metrics, _ = evaluated
  assert metrics == setup.evaluate(params=setup.params, teacher=setup.model,
                                   teacher_params=setup.teacher_params)


def test_records_hold_the_first_prompts_across_batches(setup, evaluated,
                                                       greedy_reference):
  _, samples = evaluated
  ref = greedy_reference
  assert list(samples) == ["greedy", "sample"]
  for mode, records in samples.items():
    # 6 rows span the first two batches of 4.
    assert len(records) == 6, mode
    for i, record in enumerate(records):
      assert set(record) == set(evaluation.SAMPLE_KEYS), mode
      assert record["reference"] == ref["targets"][i]
      assert record["prompt"] == setup.task.tokenizer.decode(
          ref["prompt_tokens"][i][ref["prompt_mask"][i]].tolist(),
          skip_special_tokens=True)
  greedy = samples["greedy"]
  assert [r["completion"] for r in greedy] == ref["completions"][:6]
  assert [r["length"] for r in greedy] == ref["mask"].sum(axis=1)[:6].tolist()
  # No reward model: the reward is the task's first reward fn of the row.
  factuality = setup.task.reward_fns["factuality"]
  expected = factuality(ref["sources"][:6], ref["completions"][:6],
                        ref["targets"][:6])
  np.testing.assert_allclose([r["reward"] for r in greedy], expected)
  assert len(set(r["completion"] for r in greedy)) > 1


def test_teacher_kl_per_row_matches_float64_reference(setup, evaluated,
                                                      greedy_reference):
  _, samples = evaluated
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
  np.testing.assert_allclose(
      [r["teacher_kl"] for r in samples["greedy"]], per_row[:6], rtol=1e-4)


def test_reward_model_scores_and_no_teacher(setup):
  penalty = reward_models.make_length_penalty(scale=0.5, unit="tokens")
  _, samples = _with_samples(setup, params=setup.params, num_samples=30,
                             reward=penalty, reward_params=(),
                             modes=(("greedy", 0.0),))
  records = samples["greedy"]
  assert len(records) == COMMON["num_examples"]  # capped at the prompts
  assert all("teacher_kl" not in r for r in records)
  assert [r["reward"] for r in records] == [-0.5 * r["length"]
                                            for r in records]
  _, none = _with_samples(setup, params=setup.params, num_samples=0,
                          modes=(("greedy", 0.0),))
  assert none == {"greedy": []}


@pytest.mark.parametrize("num_samples", [-1, 1.5, True])
def test_bad_num_samples(setup, num_samples):
  with pytest.raises(ValueError, match="num_samples=.* is not allowed"):
    _with_samples(setup, params=setup.params, num_samples=num_samples)


def test_jsonl_round_trip_and_markdown(tmp_path):
  samples = {"greedy": [{"prompt": "p|1", "completion": "a\nb",
                         "reference": "r", "reward": 0.5, "length": 3}],
             "sample": []}
  path = tmp_path / "eval" / "samples_step_3.jsonl"
  samples_lib.write_jsonl(path, samples)
  lines = path.read_text().splitlines()
  assert len(lines) == 1 and '"mode": "greedy"' in lines[0]
  assert samples_lib.read_jsonl(path) == {"greedy": samples["greedy"]}
  table = samples_lib.to_markdown(samples["greedy"])
  assert table.splitlines()[0] == (
      "| prompt | completion | reference | reward | length |")
  assert "p\\|1 | a b | r | 0.5 | 3" in table
