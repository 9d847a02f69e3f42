"""gkdrl.evaluation re-exports its public names."""

import inspect

from gkdrl import evaluation


def test_all_exports_resolve():
  for name in evaluation.__all__:
    assert hasattr(evaluation, name), name


def test_evaluate_signature_is_keyword_only():
  parameters = inspect.signature(evaluation.evaluate).parameters
  assert all(p.kind is inspect.Parameter.KEYWORD_ONLY
             for p in parameters.values())
  assert list(parameters) == [
      "model", "params", "task", "split", "num_examples", "batch_size",
      "max_new_tokens", "teacher", "teacher_params", "reward",
      "reward_params", "samples_per_prompt", "seed", "modes"]
  assert parameters["modes"].default == (("greedy", 0.0), ("sample", 1.0))
