"""A real 2-process `jax.distributed` run on CPU (2 devices per process).

Both processes of multi_process_script.py start at once and meet at a
coordinator on a free local port; each prints its results as JSON. Checked:
each process reads only its half of every batch, the sharded update on the
4-device mesh spanning both equals what one process computes alone from the
whole batch, host values of local rows go back as global rows, the
student-data coins agree, and a checkpoint written by both restores onto
another mesh shape, and the training loop runs across both (on-policy
GKD: the sampler on the mesh), and gkd_rl with a host reward model scores
each process's rows on that process. `evaluate` of a student sharded over
both gives every process the metrics of one process alone, also inside the
loop, which only process 0 writes to files; `train.run --mesh` on both
writes config, evaluations and student_hf/ once, from process 0. Process 1
starts from the JAX_* environment variables.
"""

import json
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import shared_programs

SCRIPT = pathlib.Path(__file__).with_name("multi_process_script.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_processes(workdir: pathlib.Path) -> list[dict]:
  env = shared_programs.subprocess_env(
      "--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
      HF_HUB_OFFLINE="1")
  port = str(_free_port())
  # Process 0 gets the coordinator as arguments, process 1 from the
  # environment, as a cluster launcher would set it.
  env1 = dict(env, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
              JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1")
  procs = [subprocess.Popen(
      [sys.executable, str(SCRIPT), str(i), arg, str(workdir / "ckpt")],
      env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i, arg, e in ((0, port, env), (1, "env", env1))]
  outputs = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=300)
      assert proc.returncode == 0, (
          f"{SCRIPT.name} failed:\n{out[-2000:]}\n{err[-5000:]}")
      outputs.append(json.loads(out.strip().splitlines()[-1]))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  return outputs


@pytest.mark.slow
def test_two_processes(tmp_path):
  results = run_processes(tmp_path)
  for i, r in enumerate(results):
    assert (r["process_index"], r["process_count"]) == (i, 2)
    assert (r["device_count"], r["local_device_count"]) == (4, 2)
  check_each_process_reads_its_half(results)
  for r in results:
    check_sharded_update_matches_one_process(r)
    check_checkpoint_restores_onto_another_mesh(r)
  for r in results:  # host values of local rows, back as global rows
    assert r["rewards_global"] == r["rewards_whole"]
    assert r["rewards_spec"] == "P(('data', 'fsdp'),)"
  # Every random choice comes from the shared seed: the hosts agree.
  assert results[0]["coins"] == results[1]["coins"]
  assert 0 < sum(results[0]["coins"]) < 16
  check_training_loop_ran_across_both(results, tmp_path / "ckpt" / "loop")
  for r in results:
    check_host_rewards_score_local_rows(r)
  check_sharded_evaluation_matches_one_process(results)
  check_loop_evaluates_and_process_0_writes(results, tmp_path / "ckpt")
  check_train_run_writes_from_process_0(results, tmp_path / "ckpt" / "train")


def _assert_same_metrics(actual, expected):
  assert list(actual) == list(expected)  # the modes, in order
  for mode in expected:
    assert sorted(actual[mode]) == sorted(expected[mode])
    for name, value in expected[mode].items():
      np.testing.assert_allclose(actual[mode][name], value, rtol=1e-6,
                                 atol=1e-7, err_msg=f"{mode}/{name}")


def check_sharded_evaluation_matches_one_process(results):
  """evaluate() of a student sharded over both: every process, all rows."""
  for r in results:
    assert r["student_sharded"]
    assert r["gather_whole"] and r["gather_keeps_local"]
    alone = r["eval_alone"]
    assert list(alone) == ["greedy", "sample"]
    for mode in alone.values():
      assert mode["num_examples"] == 3.0
      assert {"reward", "teacher_kl", "self_bleu", "length"} <= set(mode)
      assert 0 < mode["length"] <= 3
    _assert_same_metrics(r["eval_sharded"], alone)
  _assert_same_metrics(results[1]["eval_sharded"], results[0]["eval_sharded"])


def check_loop_evaluates_and_process_0_writes(results, workdir):
  assert results[0]["loop_written"] == ["loop/eval/step_1.json",
                                        "loop/eval/final.json"]
  assert results[1]["loop_written"] == []
  final = json.loads((workdir / "loop" / "eval" / "final.json").read_text())
  step_1 = json.loads((workdir / "loop" / "eval" / "step_1.json").read_text())
  assert (final["step"], step_1["step"]) == (2, 1)
  for r in results:
    assert len(r["loop_evals"]) == 2
    assert r["loop_final_json"] == final
    _assert_same_metrics(r["loop_evals"][0],
                         {k: v for k, v in step_1.items() if k != "step"})
    _assert_same_metrics(r["loop_evals"][1],
                         {k: v for k, v in final.items() if k != "step"})
    # The loop's sharded final student, evaluated as one process would.
    _assert_same_metrics(r["loop_evals"][1], r["loop_final_alone"])


def check_host_rewards_score_local_rows(r):
  """gkd_rl with a host reward, across both processes, as on one."""
  assert r["rl_tokens_equal"]
  assert r["rl_local_completions"] == 8  # 4 local prompts, 2 samples each
  assert r["rl_rewards"] == r["rl_ref_rewards"]
  assert len(r["rl_rewards"]) == 16 and len(set(r["rl_rewards"])) > 1
  assert r["rl_rewards_spec"] == "P(('data', 'fsdp'),)"
  assert r["rl_device_rewards"] == r["rl_ref_device_rewards"]
  assert len(r["rl_device_rewards"]) == 16
  np.testing.assert_allclose(r["rl_reward_mean"], r["rl_ref_reward_mean"],
                             rtol=1e-6)
  np.testing.assert_allclose(r["rl_loss"], r["rl_ref_loss"], rtol=1e-5)


def check_each_process_reads_its_half(results):
  whole = results[0]["whole_rows"]
  assert results[1]["whole_rows"] == whole and len(whole) == 8
  assert results[0]["my_rows"] == whole[:4]
  assert results[1]["my_rows"] == whole[4:]
  for r in results:
    assert r["local_rows_equal"]
    # One global batch, padded alike on both, as one process would pad it.
    assert r["global_shape"] == r["whole_shape"]
    assert r["local_prompt_length"] <= r["whole_shape"][1]


def check_sharded_update_matches_one_process(r):
  np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=1e-5)
  assert r["params_moved"] > 1e-6
  assert r["params_max_abs_diff"] < 1e-5 * max(r["params_moved"], 1.0)


def check_checkpoint_restores_onto_another_mesh(r):
  assert r["restore_max_abs_diff"] == 0.0
  assert r["restore_embed_spec"] == "P('fsdp', None)"


def check_training_loop_ran_across_both(results, workdir):
  assert [r["loop_step"] for r in results] == [2, 2]
  lines = [json.loads(line) for line in
           (workdir / "metrics.jsonl").read_text().splitlines()]
  # Written by process 0 alone: each step once, from student samples.
  assert [r["step"] for r in lines] == [1, 2]
  assert all(r["rollout/student_data"] == 1.0 for r in lines)
  assert all(0 < r["rollout/length"] <= 4 for r in lines)
  assert all(np.isfinite(r["loss/total"]) for r in lines)
  assert (workdir / "checkpoints" / "2").is_dir()


def check_train_run_writes_from_process_0(results, workdir):
  """train.run --mesh on both: one set of files, the same summary."""
  assert results[0]["train_written"] == [
      "train/config.json", "train/eval/teacher.json",
      "train/eval/initial.json", "train/eval/final.json", "train/student_hf"]
  assert results[1]["train_written"] == []
  assert (workdir / "student_hf" / "config.json").is_file()
  for name in ("teacher", "initial", "final"):
    on_disk = json.loads((workdir / "eval" / f"{name}.json").read_text())
    for r in results:
      _assert_same_metrics(r["train_summary"][name],
                           {k: v for k, v in on_disk.items() if k != "step"})
