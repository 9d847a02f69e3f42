"""Data-parallel and fully sharded training on an 8-device CPU mesh.

JAX fixes the CPU device count at start-up, so every multi-device check runs
in one subprocess (multi_device_script.py) with 8 forced host devices; this
module asserts on the JSON it prints. The rest of the suite keeps 1 device.
One test runs the script once, so pytest-xdist never starts it on two
workers; the checks are separate functions for readable failures.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests import shared_programs

SCRIPT = pathlib.Path(__file__).with_name("multi_device_script.py")


def run_script():
  env = shared_programs.subprocess_env(
      "--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
      HF_HUB_OFFLINE="1")
  proc = subprocess.run([sys.executable, str(SCRIPT)], env=env,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, (
      f"{SCRIPT.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_multi_device():
  results = run_script()
  assert results["device_count"] == 8
  for mesh in ("data:4,fsdp:2", "data:2,fsdp:2,model:2"):
    check_sharded_update_matches_one_device(results[mesh])
  check_sharded_update_matches_one_device(results["t5"], same_layout=False)
  check_t5_model_axis_splits_heads_and_mlp_width(results["t5"])
  check_model_axis_splits_heads_and_mlp_width(results)
  check_each_device_holds_its_fsdp_slice(results)
  for target in ("2x4", "one"):
    check_checkpoint_restores_onto_another_mesh(results, target)
  check_sampler_greedy_tokens_match(results)
  check_pinned_update_matches_one_device(results["jit_update"])
  check_act_samples_from_row_sharded_prompts(results["act"])
  check_accumulated_update_matches_one_device(results["accumulation"])


def check_sharded_update_matches_one_device(r, same_layout=True):
  assert r["step"] == r["ref_step"] == 2
  # The loss mixes a REINFORCE term and a divergence of opposite signs, so
  # its float32 sum carries a small absolute error as well.
  np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=1e-5, atol=1e-7)
  assert r["params_moved"] > 1e-6  # the compared update is not a no-op
  assert r["params_rel_err"] < 1e-5
  assert r["update_rel_err"] < 1e-3  # the parameter change itself agrees
  assert r["opt_rel_err"] < 1e-5
  if same_layout:  # the T5 update's outputs may change some layouts
    assert r["same_out_sharding"]


def check_model_axis_splits_heads_and_mlp_width(results):
  specs = results["data:2,fsdp:2,model:2"]["model_specs"]
  assert specs["lm/layers/attention/query"] == "P(None, 'fsdp', 'model')"
  assert specs["lm/layers/mlp/up"] == "P(None, 'fsdp', 'model')"
  assert specs["lm/layers/attention/out"] == "P(None, 'model', 'fsdp')"
  assert specs["lm/layers/mlp/down"] == "P(None, 'model', 'fsdp')"


def check_t5_model_axis_splits_heads_and_mlp_width(r):
  specs = r["model_specs"]
  for stack in ("encoder/layers/self_attention",
                "decoder/layers/self_attention",
                "decoder/layers/cross_attention"):
    assert specs[f"t5/{stack}/query"] == "P(None, 'fsdp', 'model')", stack
    assert specs[f"t5/{stack}/out"] == "P(None, 'model', 'fsdp')", stack
  for stack in ("encoder", "decoder"):
    assert specs[f"t5/{stack}/layers/mlp/up"] == "P(None, 'fsdp', 'model')"
    assert specs[f"t5/{stack}/layers/mlp/down"] == "P(None, 'model', 'fsdp')"


def check_each_device_holds_its_fsdp_slice(results):
  shards = results["shards"]
  fsdp = 2
  sharded = 0
  for path, info in shards.items():
    assert info["devices"] == 8, path
    shape = info["shape"]
    for shard_shape in info["shard_shapes"]:
      if "fsdp" in info["spec"]:
        assert np.prod(shard_shape) * fsdp == np.prod(shape), path
      else:
        assert shard_shape == shape, path
    sharded += "fsdp" in info["spec"]
  embed = shards[".params['lm/embed']['embeddings']"]
  assert embed["spec"] == "P('fsdp', None)"
  assert embed["shard_shapes"] == [[embed["shape"][0] // 2,
                                    embed["shape"][1]]] * 8
  # Adam's moments follow their parameters; the step count is replicated.
  mu = [k for k in shards if ".mu['lm/embed']['embeddings']" in k]
  assert len(mu) == 1 and shards[mu[0]]["spec"] == embed["spec"]
  assert shards[".step"]["spec"] == "P()"
  assert sharded >= 30  # params and both Adam moments


def check_checkpoint_restores_onto_another_mesh(results, target):
  r = results["restore"][target]
  assert r["max_abs_diff"] == 0.0
  assert r["same_sharding"]
  rows, cols = results["shards"][".params['lm/embed']['embeddings']"]["shape"]
  # fsdp=4 divides the vocabulary rows of the tiny model.
  expected = [rows // 4, cols] if target == "2x4" else [rows, cols]
  assert r["embed_shard_shape"] == expected


def check_sampler_greedy_tokens_match(results):
  r = results["sample"]
  assert r["num_tokens"] > 0
  assert r["same_tokens"] and r["same_mask"]
  assert r["logp_max_abs_diff"] < 1e-5


def check_pinned_update_matches_one_device(r):
  np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=1e-5, atol=1e-7)
  assert r["params_rel_err"] < 1e-5
  assert r["state_sharding_pinned"]
  assert r["metrics_replicated"]


def check_act_samples_from_row_sharded_prompts(r):
  assert r["prompts_row_sharded"]
  assert r["batch_row_sharded"]
  assert r["same_tokens"]


def check_accumulated_update_matches_one_device(r):
  assert r["step"] == 2
  np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=1e-5, atol=1e-6)
  assert r["params_rel_err"] < 1e-4
