"""The fair protocol's pieces: early stopping, LR choice, settings."""

import dataclasses

import jax
import numpy as np
import pytest

from experiments import early_stopping
from experiments import protocol_lib
from gkdrl import networks
from gkdrl.runners import setup


def test_tracker_keeps_the_best_and_counts_patience():
  tracker = early_stopping.Tracker(patience=2)
  assert tracker.update(1, 3.0)
  assert tracker.update(2, 1.0)
  assert not tracker.update(3, 1.5)
  assert not tracker.exhausted
  assert not tracker.update(4, 1.0)  # equal is not better
  assert tracker.exhausted
  assert (tracker.best_step, tracker.best_loss) == (2, 1.0)
  assert tracker.curve == [(1, 3.0), (2, 1.0), (3, 1.5), (4, 1.0)]


def test_early_stopping_rejects_bad_settings():
  with pytest.raises(ValueError, match="max_steps=250 is not allowed"):
    early_stopping.EarlyStopping(eval_every=100, max_steps=250)
  with pytest.raises(ValueError, match="snapshot_steps"):
    early_stopping.EarlyStopping(eval_every=100, max_steps=300,
                                 snapshot_steps=(150,))


def _params(path):
  return jax.tree_util.tree_leaves(networks.from_pretrained(path)[1])


def test_train_sft_keeps_the_best_checkpoint_not_the_last(tmp_path,
                                                          monkeypatch):
  # Scripted validation losses: best at step 2, no better at 3 and 4, so
  # with patience 2 training stops at step 4 and keeps step 2's weights.
  losses = iter([3.0, 1.0, 2.0, 2.5, 0.5, 0.5])
  monkeypatch.setattr(early_stopping, "validation_loss_fn",
                      lambda *a, **k: lambda params: next(losses))
  task, _ = setup.make_task("facts", seed=0)
  spec = protocol_lib.QUICK.student
  stopping = early_stopping.EarlyStopping(
      eval_every=1, patience=2, max_steps=6, val_examples=4,
      snapshot_steps=(2, 4))
  record = early_stopping.train_sft(task, "facts", "student", spec,
                                    tmp_path, stopping)
  assert (record["best_step"], record["best_loss"]) == (2, 1.0)
  assert record["stopped_step"] == 4
  assert [s for s, _ in record["curves"]["validation"]] == [1, 2, 3, 4]
  assert record["curves"]["train"][-1][0] == 4
  kept = _params(record["path"])
  for a, b in zip(kept, _params(record["snapshots"]["2"])):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in
             zip(kept, _params(record["snapshots"]["4"])))
  # Cached: a second call reads the record back without training.
  monkeypatch.setattr(early_stopping, "validation_loss_fn", None)
  assert early_stopping.train_sft(task, "facts", "student", spec, tmp_path,
                                  stopping) == record


def test_validation_loss_is_the_mean_token_nll(tmp_path):
  task, _ = setup.make_task("facts", seed=0)
  spec = protocol_lib.QUICK.student
  from gkdrl.runners import builtin  # pylint: disable=g-import-not-at-top
  model = networks.make_model(builtin.model_config(task, spec))
  params = model.init(jax.random.key(0))
  loss = early_stopping.validation_loss_fn(model, task, 8, batch_size=4)
  # A random model's per-token NLL is near log(vocabulary size).
  np.testing.assert_allclose(loss(params), np.log(len(task.tokenizer)),
                             rtol=0.1)


def _run(validation, test):
  return {"final": {"greedy": {"reward": validation}},
          "test": {"greedy": {"reward": test}}}


def test_learning_rate_is_chosen_on_validation_never_test():
  runs = {3e-4: _run(0.30, 0.90), 1e-3: _run(0.50, 0.10),
          3e-3: _run(0.40, 0.95)}
  assert protocol_lib.choose_learning_rate(runs) == 1e-3
  # Ties go to the first rate of the grid.
  tied = {3e-4: _run(0.5, 0.0), 1e-3: _run(0.5, 1.0)}
  assert protocol_lib.choose_learning_rate(tied) == 3e-4


def test_method_seeds_can_give_sampling_methods_fewer():
  p = dataclasses.replace(protocol_lib.FULL, sampling_seeds=3)
  assert protocol_lib.method_seeds(p, {"agent": "supervised_kd"}) == p.seeds
  assert protocol_lib.method_seeds(p, {"agent": "gkd"}) == p.seeds[:3]
  # The full protocol runs every method at 5 seeds.
  full = protocol_lib.FULL
  assert len(protocol_lib.method_seeds(full, {"agent": "gkd"})) == 5


def test_protocol_rejects_bad_seeds():
  with pytest.raises(ValueError, match="ablation_seeds"):
    dataclasses.replace(protocol_lib.FULL, ablation_seeds=(1, 2))
  with pytest.raises(ValueError, match="learning_rates"):
    dataclasses.replace(protocol_lib.FULL, learning_rates=())


def test_full_pair_student_has_two_layers_teacher_larger():
  p = protocol_lib.FULL
  assert p.student.n_layers >= 2 and p.small_student.n_layers == 1
  assert p.teacher.d_model * p.teacher.n_layers > (
      p.student.d_model * p.student.n_layers)
