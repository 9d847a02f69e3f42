"""Damaged orbax checkpoints: skipped, moved aside, never deleted."""

import gc
import logging
import shutil
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl.agents import base
from gkdrl.runners import checkpointing


def state(value: float) -> base.TrainingState:
  return base.TrainingState(params={"w": jnp.full(3, value)}, opt_state=(),
                            step=jnp.array(int(value), jnp.int32))


def other_state() -> base.TrainingState:
  """A state of other shapes than `state`'s: no checkpoint here fits it."""
  return base.TrainingState(params={"w": jnp.zeros(5)}, opt_state=(),
                            step=jnp.zeros((), jnp.int32))


@pytest.fixture
def workdir(tmp_path):
  """A workdir with intact checkpoints of steps 2 and 4 (w = step)."""
  checkpointer = checkpointing.Checkpointer(tmp_path)
  for step in (2, 4):
    checkpointer.save(step, state(float(step)))
  checkpointer.close()
  return tmp_path


def _truncate_data(step_dir):
  """Halves every array-data file of the checkpoint (a cut copy)."""
  files = [p for p in (step_dir / "default" / "d").iterdir() if p.is_file()]
  assert files
  for path in files:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _damage_metadata(step_dir):
  path = step_dir / "_CHECKPOINT_METADATA"
  path.write_text(path.read_text()[:40])


def _damage_item_metadata(step_dir):
  path = step_dir / "default" / "_METADATA"
  path.write_text(path.read_text()[:100])


def _empty(step_dir):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


@pytest.mark.parametrize("damage,reason", [
    (_truncate_data, "OUT_OF_RANGE"),
    (_damage_metadata, "_CHECKPOINT_METADATA is not valid JSON"),
    (_damage_item_metadata, "Unterminated string"),
    (_empty, "_CHECKPOINT_METADATA is missing"),
])
def test_resume_skips_a_damaged_newest_checkpoint(workdir, damage, reason,
                                                  caplog):
  damage(workdir / "checkpoints" / "4")
  checkpointer = checkpointing.Checkpointer(workdir)
  with caplog.at_level(logging.WARNING):
    step, restored = checkpointer.restore_newest_intact(state(0.0))
  assert step == 2
  np.testing.assert_array_equal(restored.params["w"], 2.0)
  warning = "\n".join(r.getMessage() for r in caplog.records
                      if "Skipped checkpoint 4" in r.getMessage())
  assert reason in warning
  # Moved aside, not deleted; step 4 can be saved again, and is then used.
  aside = workdir / "checkpoints" / "4.corrupt-0"
  assert aside.is_dir() and str(aside) in warning
  checkpointer.save(4, state(40.0))
  assert checkpointer.all_steps() == [2, 4]
  checkpointer.close()
  step, restored = checkpointing.Checkpointer(
      workdir).restore_newest_intact(state(0.0))
  assert step == 4
  np.testing.assert_array_equal(restored.params["w"], 40.0)
  assert aside.is_dir()


def test_a_second_damage_of_one_step_gets_the_next_name(workdir):
  for n in range(2):
    _empty(workdir / "checkpoints" / "4")
    checkpointer = checkpointing.Checkpointer(workdir)
    assert checkpointer.restore_newest_intact(state(0.0))[0] == 2
    assert (workdir / "checkpoints" / f"4.corrupt-{n}").is_dir()
    checkpointer.save(4, state(4.0))
    checkpointer.close()


def test_every_checkpoint_damaged_starts_from_the_initial_state(workdir):
  for step in (2, 4):
    _truncate_data(workdir / "checkpoints" / str(step))
  checkpointer = checkpointing.Checkpointer(workdir)
  initial = state(0.0)
  step, restored = checkpointer.restore_newest_intact(initial)
  assert step == 0 and restored is initial
  assert checkpointer.all_steps() == []
  assert {p.name for p in (workdir / "checkpoints").iterdir()} == {
      "2.corrupt-0", "4.corrupt-0"}


def test_an_intact_checkpoint_of_another_state_is_not_moved(workdir):
  checkpointer = checkpointing.Checkpointer(workdir)
  with pytest.raises(checkpointing.CheckpointMismatchError,
                     match="Checkpoint 4 .* does not fit"):
    checkpointer.restore_newest_intact(other_state())
  assert checkpointer.all_steps() == [2, 4]


def test_a_failed_restore_leaves_no_reports_of_its_reads(workdir,
                                                        monkeypatch):
  # A restore into other shapes fails on one array and leaves orbax's
  # other reads unfinished; collected later, each would print a traceback.
  reported = []
  monkeypatch.setattr(sys, "unraisablehook",
                      lambda u: reported.append(u.exc_value))
  for _ in range(3):
    checkpointer = checkpointing.Checkpointer(workdir)
    with pytest.raises(checkpointing.CheckpointMismatchError):
      checkpointer.restore_newest_intact(other_state())
    checkpointer.close()
    gc.collect()
  assert reported == []


def test_restore_params_of_a_missing_step_names_the_saved_ones(workdir):
  checkpointer = checkpointing.Checkpointer(workdir)
  with pytest.raises(FileNotFoundError,
                     match=r"No checkpoint of step 3 .*saved steps: 2, 4\."):
    checkpointer.restore_params(3)
  np.testing.assert_array_equal(checkpointer.restore_params(2)["w"], 2.0)


def test_restore_params_skips_a_damaged_newest_without_moving_it(workdir):
  _truncate_data(workdir / "checkpoints" / "4")
  checkpointer = checkpointing.Checkpointer(workdir)
  np.testing.assert_array_equal(checkpointer.restore_params()["w"], 2.0)
  with pytest.raises(ValueError, match="Checkpoint 4 .* is damaged"):
    checkpointer.restore_params(4)
  assert checkpointer.all_steps() == [2, 4]  # evaluation only reads



def test_only_the_abandoned_reads_reports_are_dropped(monkeypatch):
  # Which reads of a damaged checkpoint report is a matter of timing, so
  # the filter is tested directly: it drops exactly orbax's closed-loop
  # report and a collected read's report, and passes every other
  # unraisable exception on.
  reported = []
  monkeypatch.setattr(sys, "unraisablehook",
                      lambda u: reported.append(u.exc_value))
  checkpointing._quiet_abandoned_reads()
  checkpointing._quiet_abandoned_reads()  # installed once

  def raised_from(cause, message):
    error = Exception(message)  # what `raise ... from cause` leaves
    error.__cause__ = cause
    return error

  read = "Encountered error while reading array index: (). See full details"
  dropped = [RuntimeError("Event loop is closed"),
             raised_from(GeneratorExit(), read)]
  kept = [RuntimeError("x"), KeyError("Event loop is closed"),
          raised_from(ValueError("bad"), read),  # a read that failed
          raised_from(GeneratorExit(), "another coroutine's error"),
          None]  # exc_value may be None
  for error in dropped + kept:
    sys.unraisablehook(types.SimpleNamespace(exc_value=error))
  assert reported == kept
