"""The built-in model cache: one process trains an entry, others wait."""

import fcntl
import threading

import pytest

from gkdrl.runners import builtin

SPEC = builtin.BuiltinSpec(d_model=8, n_layers=1, n_heads=2, n_kv_heads=1,
                           d_ff=16, sft_steps=2, batch_size=4)


def test_a_second_preparation_waits_for_the_first_and_reuses_its_entry(
    tmp_path):
  out = builtin.builtin_model_dir("facts", "student", cache_dir=tmp_path,
                                  spec=SPEC)
  out.parent.mkdir(parents=True)
  result = {}

  def prepare():  # `task` is never read: the entry is ready by then
    result["path"] = builtin.prepare_builtin_model(
        None, "facts", "student", cache_dir=tmp_path, spec=SPEC,
        progress=False)

  with open(out.parent / f".{out.name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process is training it
    waiter = threading.Thread(target=prepare, daemon=True)
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive(), "prepare_builtin_model did not wait"
    out.mkdir()
    (out / "config.json").write_text("{}")  # the other process finished
  waiter.join(timeout=10)
  assert not waiter.is_alive()
  assert result["path"] == out
  assert not (out.parent / f".{out.name}.work").exists()  # nothing trained


def test_unknown_role_is_refused(tmp_path):
  with pytest.raises(ValueError, match="role='critic'"):
    builtin.builtin_model_dir("facts", "critic", cache_dir=tmp_path)
