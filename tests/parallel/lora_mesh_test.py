"""A LoRA state on a mesh: the frozen base sharded like the parameters."""

import subprocess
import sys
import textwrap

from tests import shared_programs

_SCRIPT = textwrap.dedent("""
    import jax
    import numpy as np
    from gkdrl import agents, networks, parallel, tasks
    from tests.tiny_models import tiny_config

    task = tasks.make_task("facts", num_train=16, num_validation=4,
                           num_test=4)
    student = networks.make_model(tiny_config(task, 32, 2))
    teacher = networks.make_model(tiny_config(task, 32, 1))
    sp, tp = student.init(jax.random.key(0)), teacher.init(jax.random.key(1))
    config = agents.GKDConfig(lmbda=0.0, max_new_tokens=4, lora_rank=2,
                              optimizer=agents.OptimizerConfig(
                                  learning_rate=1e-2, warmup_steps=0))
    agent = agents.make_agent(config, student=student, teacher=teacher,
                              tokenizer=task.tokenizer)
    batch, _ = agent.act(agent.init(sp),
                         next(task.batches("train", 8, fixed_shape=True)),
                         jax.random.key(0))
    key = jax.random.key(3)
    one, _ = agent.update(agent.init(sp), batch, tp, key)

    mesh = parallel.make_mesh("data:2,fsdp:4")
    state = parallel.shard_state(agent.init(sp), mesh, min_size=1)
    full = parallel.param_shardings(sp, mesh, min_size=1)
    up = "lm/layers/mlp/up"
    assert "fsdp" in state.frozen[up]["w"].sharding.spec
    assert state.frozen[up]["w"].sharding == full[up]["w"]
    update = parallel.jit_update(agent.update, mesh, state, tp, min_size=1)
    state, _ = update(state, parallel.shard_batch(batch, mesh),
                      parallel.shard_params(tp, mesh, min_size=1), key)
    # Adam's first step is lr * sign(g) where |g| >> eps, so compare the
    # step to 1% of the learning rate (near-zero gradients amplify float
    # reordering), and check the step happened.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
                 jax.device_get(state.params), jax.device_get(one.params))
    assert np.abs(np.asarray(one.params["lm/layers/mlp/up"]["b"])).max() > 5e-3
    print("OK")
""")


def test_lora_update_on_a_mesh_matches_one_device():
  env = shared_programs.subprocess_env(
      "--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _SCRIPT],
                          capture_output=True, text=True, env=env,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout
