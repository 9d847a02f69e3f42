"""One process of a real 2-process `jax.distributed` run on CPU.

Run by multi_process_test.py as `multi_process_script.py PROCESS_ID PORT
WORKDIR` (PORT "env": start-up from the JAX_* variables), twice at once,
each process with 2 forced host devices (4 in the run). Each process reads
only its rows of every batch, and the sharded update and checkpoint are
compared with what the same process computes alone on one local device
from the whole batch; then the training loop runs across both, evaluating
the sharded student. Prints one JSON object of results on its last stdout
line.
"""

import json
import pathlib
import sys

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from gkdrl import parallel

BATCH = 8


def main(process_id: int, port: str, workdir: str):
  if port == "env":  # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, ..._ID
    parallel.initialize_distributed()
  else:
    parallel.initialize_distributed(f"localhost:{port}", num_processes=2,
                                    process_id=process_id)
  # Imported after start-up: nothing may touch the backend before it.
  from gkdrl import agents  # pylint: disable=g-import-not-at-top
  from gkdrl import networks  # pylint: disable=g-import-not-at-top
  from gkdrl import reward_models  # pylint: disable=g-import-not-at-top
  from gkdrl.agents import acting  # pylint: disable=g-import-not-at-top
  from gkdrl import evaluation  # pylint: disable=g-import-not-at-top
  from gkdrl import tasks  # pylint: disable=g-import-not-at-top
  from gkdrl.runners import checkpointing  # pylint: disable=g-import-not-at-top
  from gkdrl.runners import loop  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
  from tests.tiny_models import tiny_config  # pylint: disable=g-import-not-at-top

  results = {"process_index": jax.process_index(),
             "process_count": jax.process_count(),
             "device_count": jax.device_count(),
             "local_device_count": jax.local_device_count()}
  task = tasks.make_task("facts", num_train=40, num_validation=8,
                         num_test=8)
  student = networks.make_model(tiny_config(task, 16, 1))
  teacher = networks.make_model(tiny_config(task, 16, 1))
  # Local, uncommitted arrays, equal on both processes (same seeds).
  s_params = student.init(jax.random.key(0))
  t_params = teacher.init(jax.random.key(1))
  agent = agents.make_agent(
      agents.make_config("supervised_kd", max_new_tokens=4),
      student=student, teacher=teacher, tokenizer=task.tokenizer)
  state = agent.init(s_params)
  key = jax.random.key(3)  # from the shared seed: the same on each host
  kwargs = dict(seed=5, num_epochs=None, drop_remainder=True)
  pad_id = tasks.base.pad_token_id(task.tokenizer)

  # Alone: the whole batch on this process's first device.
  whole = next(task.batches("train", BATCH, **kwargs))
  # Two updates: the first step's learning rate is 0 (warmup). Updates
  # donate their state: `state` is kept for the sharded run.
  ref_state = jax.tree.map(jnp.copy, state)
  for _ in range(2):
    ref_state, ref_metrics = agent.update(
        ref_state, acting.dataset_batch(whole), t_params, key)

  # Together: this process's rows only, on a mesh spanning both processes.
  mesh = parallel.make_mesh("data:2,fsdp:2")
  mine = next(task.batches("train", BATCH, **kwargs,
                           **parallel.process_split()))
  g_tb = parallel.global_task_batch(mine, mesh, pad_id)
  sh_state = parallel.shard_state(state, mesh, min_size=0)
  sh_teacher = parallel.shard_params(t_params, mesh, min_size=0)
  update = parallel.jit_update(agent.update, mesh, state, t_params,
                               min_size=0)
  batch = parallel.shard_batch(acting.dataset_batch(g_tb), mesh)
  new_state, metrics = update(sh_state, batch, sh_teacher, key)
  new_state, metrics = update(new_state, batch, sh_teacher, key)

  gathered = multihost_utils.process_allgather(new_state.params, tiled=True)
  results.update(
      my_rows=mine.sources,
      whole_rows=whole.sources,
      local_rows_equal=bool(np.array_equal(
          parallel.host_local(g_tb.prompt_tokens),
          np.asarray(whole.prompt_tokens)[
              process_id * BATCH // 2:(process_id + 1) * BATCH // 2])),
      local_prompt_length=mine.prompt_tokens.shape[1],
      global_shape=list(g_tb.prompt_tokens.shape),
      whole_shape=list(whole.prompt_tokens.shape),
      loss=float(metrics["loss/total"]),
      ref_loss=float(ref_metrics["loss/total"]),
      params_max_abs_diff=max(jax.tree.leaves(jax.tree.map(
          lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
          gathered, ref_state.params))),
      params_moved=max(jax.tree.leaves(jax.tree.map(
          lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
          ref_state.params, state.params))),
  )

  # Host values per local row (as a host reward model gives) back as rows.
  lengths = parallel.host_local(g_tb.target_mask).sum(axis=1)  # [B_local]
  rewards = parallel.from_host_local(lengths.astype(np.float32),
                                     g_tb.target_tokens)
  results["rewards_global"] = multihost_utils.process_allgather(
      rewards, tiled=True).tolist()
  results["rewards_whole"] = np.asarray(whole.target_mask).sum(1).tolist()
  results["rewards_spec"] = str(rewards.sharding.spec)

  # gkd_rl with a host reward (alpha = 0.5, two greedy samples per prompt):
  # each process repeats, decodes and scores only its rows; the rewards,
  # their mean and the update's loss are those of one process alone.
  text_length = lambda sources, completions, targets: np.array(
      [len(c) for c in completions], np.float32)
  rl = agents.make_agent(
      agents.make_config("gkd_rl", alpha=0.5, samples_per_prompt=2,
                         sample_temperature=0.0, max_new_tokens=4),
      student=student, teacher=teacher, tokenizer=task.tokenizer,
      reward=reward_models.make_python_reward(text_length, name="length"))
  rl_state = rl.init(s_params)
  ref_batch, ref_info = rl.act(rl_state, whole, key, teacher_params=t_params,
                               reward_params=())
  _, ref_metrics = rl.update(jax.tree.map(jnp.copy, rl_state), ref_batch,
                             t_params, key)
  sh_rl_state = parallel.shard_state(rl_state, mesh, min_size=0)
  g_batch, g_info = rl.act(sh_rl_state, g_tb, key,
                           teacher_params=sh_teacher, reward_params=())
  rl_update = parallel.jit_update(rl.update, mesh, rl_state, t_params,
                                  min_size=0)
  _, g_metrics = rl_update(sh_rl_state, parallel.shard_batch(g_batch, mesh),
                           sh_teacher, key)
  allgather = lambda x: multihost_utils.process_allgather(x, tiled=True)
  # A device reward model scores the global batch in one compiled call.
  penalty = reward_models.make_length_penalty(scale=0.5)
  device_rewards = [acting.score_batch(penalty, (), None, b, [], [])
                    for b in (g_batch, ref_batch)]
  results.update(
      rl_tokens_equal=bool(np.array_equal(
          allgather(g_batch.completion_tokens),
          np.asarray(ref_batch.completion_tokens))),
      rl_local_completions=len(acting.decode_completions(
          task.tokenizer, g_batch.completion_tokens,
          g_batch.completion_mask)),
      rl_rewards=allgather(g_batch.rewards).tolist(),
      rl_ref_rewards=np.asarray(ref_batch.rewards).tolist(),
      rl_rewards_spec=str(g_batch.rewards.sharding.spec),
      rl_device_rewards=allgather(device_rewards[0]).tolist(),
      rl_ref_device_rewards=np.asarray(device_rewards[1]).tolist(),
      rl_reward_mean=float(g_info["reward/mean"]),
      rl_ref_reward_mean=float(ref_info["reward/mean"]),
      rl_loss=float(g_metrics["loss/total"]),
      rl_ref_loss=float(ref_metrics["loss/total"]),
  )

  # Evaluation of a student sharded over both processes: every process
  # gets the metrics of one process evaluating the local copy alone.
  evaluate = lambda params, teacher_params: evaluation.evaluate(
      model=student, params=params, task=task, num_examples=3, batch_size=2,
      max_new_tokens=3, teacher=teacher, teacher_params=teacher_params,
      reward=reward_models.make_python_reward(text_length, name="length"),
      reward_params=(), samples_per_prompt=2, seed=7)
  results["eval_alone"] = evaluate(s_params, t_params)
  sh_student = parallel.shard_params(s_params, mesh, min_size=0)
  results["eval_sharded"] = evaluate(sh_student, sh_teacher)
  # gather: sharded leaves whole as NumPy, local leaves untouched.
  both = parallel.gather({"sharded": sh_student, "local": s_params})
  results.update(
      gather_whole=all(
          isinstance(a, np.ndarray) and np.array_equal(a, np.asarray(b))
          for a, b in zip(jax.tree.leaves(both["sharded"]),
                          jax.tree.leaves(s_params))),
      gather_keeps_local=all(a is b for a, b in zip(
          jax.tree.leaves(both["local"]), jax.tree.leaves(s_params))),
      student_sharded=not all(x.is_fully_addressable
                              for x in jax.tree.leaves(sh_student)))

  # The loop's per-step keys and GKD's student-data coin, from the seed.
  root = jax.random.key(0)
  results["coins"] = [acting.draw_student_data(
      jax.random.split(jax.random.fold_in(root, step))[0], 0.5)
                      for step in range(1, 17)]

  # A checkpoint written by both processes restores onto another mesh.
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(1, new_state)
  other = parallel.make_mesh("data:1,fsdp:4")
  restored = ckpt.restore(parallel.abstract_like(
      state, parallel.state_shardings(state, other, min_size=0)))
  ckpt.close()
  back = multihost_utils.process_allgather(restored.params, tiled=True)
  results["restore_max_abs_diff"] = max(jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
      back, gathered)))
  embed = restored.params["lm/embed"]["embeddings"]
  results["restore_embed_spec"] = str(embed.sharding.spec)

  # The training loop itself, across both processes: on-policy GKD (the
  # sampler on the mesh; lambda < 1 would compile a second batch shape).
  # It evaluates after step 1 and at the end; the files it writes are
  # recorded per process (only process 0 may write them).
  gkd = agents.make_agent(
      agents.make_config("gkd", lmbda=1.0, max_new_tokens=4),
      student=student, teacher=teacher, tokenizer=task.tokenizer)
  written, write_json = [], checkpointing.write_json
  def record_write(path, value):
    written.append(pathlib.Path(path).relative_to(workdir).as_posix())
    write_json(path, value)
  checkpointing.write_json = record_write
  loop_evals = []
  # A teacher kept whole on this process's first device, beside the
  # sharded student: jit could not mix the two without the gather.
  local_teacher = jax.device_put(t_params, jax.local_devices()[0])
  def evaluate_fn(params):
    loop_evals.append(evaluate(params, local_teacher))
    return loop_evals[-1]
  final = loop.train(agent=gkd, state=gkd.init(s_params), task=task,
                     config=loop.LoopConfig(steps=2, batch_size=BATCH,
                                            log_every=1, save_every=2,
                                            eval_every=1, progress=False),
                     workdir=f"{workdir}/loop", teacher_params=t_params,
                     evaluate_fn=evaluate_fn, mesh=mesh)
  checkpointing.write_json = write_json
  results.update(
      loop_step=int(final.step), loop_written=written, loop_evals=loop_evals,
      # Readable by every process as soon as train returns.
      loop_final_json=checkpointing.read_json(
          f"{workdir}/loop/eval/final.json"),
      loop_final_alone=evaluate(
          multihost_utils.process_allgather(final.params, tiled=True),
          t_params))

  # The whole runner: train.run with --mesh on both processes (it calls
  # initialize_distributed again, a no-op). Process 0 alone writes files.
  from gkdrl.runners import train  # pylint: disable=g-import-not-at-top
  dirs = [f"{workdir}/models/{name}" for name in ("teacher", "student")]
  if process_id == 0:
    for d, model, params in ((dirs[0], teacher, t_params),
                             (dirs[1], student, s_params)):
      networks.save_pretrained(model, params, d, tokenizer=task.tokenizer)
  multihost_utils.sync_global_devices("models saved")
  written = []  # record_write now appends here
  checkpointing.write_json = record_write
  save_pretrained = networks.save_pretrained
  networks.save_pretrained = lambda model, params, path, **kwargs: (
      written.append(pathlib.Path(path).relative_to(workdir).as_posix()),
      save_pretrained(model, params, path, **kwargs))[1]
  summary = train.run(train.default_values(
      teacher=dirs[0], student=dirs[1], workdir=f"{workdir}/train",
      agent="supervised_kd", steps=1, batch_size=4, log_every=1,
      save_every=1, eval_examples=2, eval_samples_per_prompt=1,
      max_new_tokens=3, mesh="data:2,fsdp:2"), progress=False)
  checkpointing.write_json, networks.save_pretrained = (
      write_json, save_pretrained)
  results.update(train_written=written,
                 train_summary={k: summary[k]
                                for k in ("teacher", "initial", "final")})
  print(json.dumps(results))
  return 0


if __name__ == "__main__":
  sys.exit(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
