"""Multi-device checks, run by multi_device_test.py in a subprocess.

JAX fixes the CPU device count at start-up, so this script runs with
XLA_FLAGS=--xla_force_host_platform_device_count=8 in its own process and
prints one JSON object of results on its last stdout line.
"""

import json
import pathlib
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import agents
from gkdrl import networks
from gkdrl import parallel
from gkdrl import reward_models
from gkdrl import sampling
from gkdrl import types
from gkdrl.agents import base
from gkdrl import tasks
from gkdrl.runners import checkpointing

# Run as a script: the repository root makes the shared test helpers
# importable.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from tests.tiny_models import tiny_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.tiny_models import tiny_t5_config  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCH = 8
# The updates read the batch's rewards; this model is never called.
UNUSED_REWARD = reward_models.make_python_reward(
    lambda sources, completions, targets: np.zeros(len(completions)),
    name="unused")


def rel_err(a, b):
  """max over leaves of ||a - b|| / ||b|| (float64)."""
  errs = jax.tree.map(
      lambda x, y: float(np.linalg.norm(np.asarray(x, np.float64)
                                        - np.asarray(y, np.float64))
                         / max(np.linalg.norm(np.asarray(y, np.float64)),
                               1e-30)), a, b)
  return max(jax.tree.leaves(errs))


def max_abs_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64)
                                       - np.asarray(y, np.float64)),
                                initial=0.0)), a, b)))


T5_MESH = "data:2,fsdp:2,model:2"


def t5_update(task, batch):
  """Two gkd updates of a T5 student (T5 teacher), sharded versus not."""
  student = networks.make_t5(tiny_t5_config(task, 16, 2))
  teacher = networks.make_t5(tiny_t5_config(task, 24, 1, gated=True))
  s_params = student.init(jax.random.key(0))
  t_params = teacher.init(jax.random.key(1))
  agent = agents.make_agent(
      agents.make_config("gkd", lmbda=0.0, max_new_tokens=8),
      student=student, teacher=teacher, tokenizer=task.tokenizer)
  state = agent.init(s_params)
  key = jax.random.key(3)

  def two_updates(state, batch, t_params):
    state = jax.tree.map(jnp.copy, state)
    state, _ = agent.update(state, batch, t_params, key)
    return agent.update(state, batch, t_params, key)

  ref_state, ref_metrics = two_updates(state, batch, t_params)
  mesh = parallel.make_mesh(T5_MESH)
  sh_state = parallel.shard_state(state, mesh, min_size=0)
  new_state, metrics = two_updates(
      sh_state, parallel.shard_batch(batch, mesh),
      parallel.shard_params(t_params, mesh, min_size=0))
  return {
      "loss": float(metrics["loss/total"]),
      "ref_loss": float(ref_metrics["loss/total"]),
      "params_rel_err": rel_err(new_state.params, ref_state.params),
      "update_rel_err": rel_err(
          jax.tree.map(jnp.subtract, new_state.params, state.params),
          jax.tree.map(jnp.subtract, ref_state.params, state.params)),
      "params_moved": max_abs_diff(ref_state.params, state.params),
      "opt_rel_err": rel_err(new_state.opt_state, ref_state.opt_state),
      "step": int(new_state.step),
      "ref_step": int(ref_state.step),
      "same_out_sharding": all(jax.tree.leaves(jax.tree.map(
          lambda new, old: new.sharding.is_equivalent_to(old.sharding,
                                                         old.ndim),
          new_state, sh_state))),
      "model_specs": {
          k: str(v["w"].sharding.spec) for k, v in sh_state.params.items()
          if "w" in v},
  }


def main(only_t5: bool = False):
  results = {"device_count": jax.device_count()}
  task = tasks.make_task("facts", num_train=64, num_validation=16,
                         num_test=16)
  student = networks.make_model(tiny_config(task, 16, 2))
  teacher = networks.make_model(tiny_config(task, 24, 1))
  s_params = student.init(jax.random.key(0))
  t_params = teacher.init(jax.random.key(1))
  tb = next(task.batches("train", BATCH, fixed_shape=True))
  batch = types.Batch(
      prompt_tokens=jnp.asarray(tb.prompt_tokens),
      prompt_mask=jnp.asarray(tb.prompt_mask),
      completion_tokens=jnp.asarray(tb.target_tokens),
      completion_mask=jnp.asarray(tb.target_mask))
  logits = base.completion_logits(student, s_params, batch)
  batch = batch._replace(
      behaviour_logp_a=base.token_log_probs(logits, batch.completion_tokens),
      rewards=jax.random.normal(jax.random.key(2), (BATCH,)))
  results["t5"] = t5_update(task, batch)
  if only_t5:  # `multi_device_script.py t5`: the T5 check alone
    print(json.dumps(results))
    return 0

  config = agents.make_config("gkd_rl", alpha=0.5, max_new_tokens=8)
  agent = agents.make_agent(config, student=student, teacher=teacher,
                            tokenizer=task.tokenizer,
                            reward=UNUSED_REWARD)
  state = agent.init(s_params)
  key = jax.random.key(3)

  def two_updates(state, batch, t_params, update=agent.update):
    # The first step's learning rate is 0 (warmup); the second moves. An
    # update may donate its state: the caller's stays intact.
    state = jax.tree.map(jnp.copy, state)
    state, _ = update(state, batch, t_params, key)
    return update(state, batch, t_params, key)

  ref_state, ref_metrics = two_updates(state, batch, t_params)

  for spec in ("data:4,fsdp:2", "data:2,fsdp:2,model:2"):
    mesh = parallel.make_mesh(spec)
    sh_state = parallel.shard_state(state, mesh, min_size=0)
    new_state, metrics = two_updates(
        sh_state, parallel.shard_batch(batch, mesh),
        parallel.shard_params(t_params, mesh, min_size=0))
    results[spec] = {
        "loss": float(metrics["loss/total"]),
        "ref_loss": float(ref_metrics["loss/total"]),
        "params_rel_err": rel_err(new_state.params, ref_state.params),
        "update_rel_err": rel_err(
            jax.tree.map(jnp.subtract, new_state.params, state.params),
            jax.tree.map(jnp.subtract, ref_state.params, state.params)),
        "params_moved": max_abs_diff(ref_state.params, state.params),
        "opt_rel_err": rel_err(new_state.opt_state, ref_state.opt_state),
        "step": int(new_state.step),
        "ref_step": int(ref_state.step),
        # Outputs keep the inputs' layout (XLA propagation).
        "same_out_sharding": all(jax.tree.leaves(jax.tree.map(
            lambda new, old: new.sharding.is_equivalent_to(old.sharding,
                                                           old.ndim),
            new_state, sh_state))),
        "model_specs": {
            k: str(v["w"].sharding.spec) for k, v in sh_state.params.items()
            if k.endswith(("/query", "/out", "/up", "/down"))},
    }

  # Placement: shard shapes on a 4x2 mesh.
  mesh42 = parallel.make_mesh("data:4,fsdp:2")
  sh_state = parallel.shard_state(state, mesh42, min_size=0)

  # The update with pinned input and output shardings (what the loop runs).
  sh_teacher = parallel.shard_params(t_params, mesh42, min_size=0)
  update = parallel.jit_update(agent.update, mesh42, state, t_params,
                               min_size=0)
  new_state, metrics = two_updates(sh_state,
                                   parallel.shard_batch(batch, mesh42),
                                   sh_teacher, update)
  pinned = parallel.state_shardings(state, mesh42, min_size=0)
  results["jit_update"] = {
      "loss": float(metrics["loss/total"]),
      "ref_loss": float(ref_metrics["loss/total"]),
      "params_rel_err": rel_err(new_state.params, ref_state.params),
      "state_sharding_pinned": all(jax.tree.leaves(jax.tree.map(
          lambda x, s: x.sharding.is_equivalent_to(s, x.ndim), new_state,
          pinned))),
      "metrics_replicated": all(v.sharding.is_fully_replicated
                                for v in metrics.values()),
  }
  # Gradient accumulation on the mesh: 2 micro-batches of the row-sharded
  # batch give the one-device, one-big-batch update.
  accum = agents.make_agent(
      agents.make_config("gkd_rl", alpha=0.5, max_new_tokens=8,
                         grad_accum_steps=2),
      student=student, teacher=teacher, tokenizer=task.tokenizer,
      reward=UNUSED_REWARD)
  accum_update = parallel.jit_update(accum.update, mesh42, state, t_params,
                                     min_size=0)
  new_state, metrics = two_updates(
      parallel.shard_state(state, mesh42, min_size=0),
      parallel.shard_batch(batch, mesh42), sh_teacher, accum_update)
  results["accumulation"] = {
      "loss": float(metrics["loss/total"]),
      "ref_loss": float(ref_metrics["loss/total"]),
      "params_rel_err": rel_err(new_state.params, ref_state.params),
      "step": int(new_state.step),
  }

  shards = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(sh_state)[0]:
    shards[jax.tree_util.keystr(path)] = {
        "shape": list(leaf.shape),
        "spec": str(leaf.sharding.spec),
        "shard_shapes": [list(s.data.shape) for s in leaf.addressable_shards],
        "devices": len(leaf.addressable_shards),
    }
  results["shards"] = shards

  # Checkpoint: save on 4x2, restore on 2x4 and on one device.
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = checkpointing.Checkpointer(tmp)
    ckpt.save(1, sh_state)
    restored = {}
    mesh24 = parallel.make_mesh("data:2,fsdp:4")
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    targets = {
        "2x4": parallel.state_shardings(state, mesh24, min_size=0),
        "one": jax.tree.map(lambda _: one, state),
    }
    for name, shardings in targets.items():
      out = ckpt.restore(parallel.abstract_like(state, shardings))
      same_sharding = all(jax.tree.leaves(jax.tree.map(
          lambda x, s: x.sharding.is_equivalent_to(s, x.ndim), out,
          shardings)))
      restored[name] = {
          "max_abs_diff": max_abs_diff(out, state),
          "same_sharding": bool(same_sharding),
          "embed_shard_shape": list(out.params["lm/embed"]["embeddings"]
                                    .addressable_shards[0].data.shape),
      }
    ckpt.close()
  results["restore"] = restored

  # Sampler: greedy tokens with sharded params and prompts.
  kwargs = dict(max_new_tokens=6, temperature=0.0,
                eos_token_id=task.tokenizer.eos_token_id)
  ref = sampling.sample(student, s_params, key, batch.prompt_tokens,
                        batch.prompt_mask, **kwargs)
  sh_batch = parallel.shard_batch(batch, mesh42)
  out = sampling.sample(student, sh_state.params, key,
                        sh_batch.prompt_tokens, sh_batch.prompt_mask,
                        **kwargs)
  results["sample"] = {
      "same_tokens": bool(np.array_equal(np.asarray(out.tokens),
                                         np.asarray(ref.tokens))),
      "same_mask": bool(np.array_equal(np.asarray(out.mask),
                                       np.asarray(ref.mask))),
      "logp_max_abs_diff": max_abs_diff(out.logp_a, ref.logp_a),
      "num_tokens": int(np.asarray(ref.mask).sum()),
  }

  # The loop's path: row-sharded task batch -> agent.act (the sampler) ->
  # shard_batch. Greedy on-policy GKD must sample the unsharded tokens.
  gkd = agents.make_agent(
      agents.make_config("gkd", lmbda=1.0, max_new_tokens=6,
                         sample_temperature=0.0),
      student=student, teacher=teacher, tokenizer=task.tokenizer)
  g_tb = parallel.global_task_batch(
      tb, mesh42, tasks.base.pad_token_id(task.tokenizer))
  acted, _ = gkd.act(gkd.init(s_params)._replace(params=sh_state.params),
                     g_tb, key, teacher_params=sh_teacher)
  acted = parallel.shard_batch(acted, mesh42)
  rows = parallel.batch_sharding(mesh42)
  results["act"] = {
      "prompts_row_sharded": g_tb.prompt_tokens.sharding.is_equivalent_to(
          rows, 2),
      "batch_row_sharded": all(
          x.sharding.is_equivalent_to(rows, x.ndim)
          for x in jax.tree.leaves(acted)),
      "same_tokens": bool(np.array_equal(np.asarray(acted.completion_tokens),
                                         np.asarray(ref.tokens))),
  }
  print(json.dumps(results))
  return 0


if __name__ == "__main__":
  sys.exit(main(only_t5=sys.argv[1:] == ["t5"]))
