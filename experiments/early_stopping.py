"""Supervised fine-tuning until the validation loss stops improving.

    result = early_stopping.train_sft(task, "facts", "student", spec,
                                      cache_dir, EarlyStopping())

The GKD paper starts every method from SFT checkpoints trained to
convergence. Here the per-token negative log-likelihood of the validation
split's references is measured every `eval_every` steps; training stops
once `patience` evaluations in a row have not improved on the best, and the
parameters of the best evaluation are the ones kept (not the last ones).
Both curves (training loss and validation loss against steps) are written
beside the model, in `sft.json`, for the report.

The model directory is cached under `<cache_dir>/<task>-<role>-<hash>`, the
hash covering the spec and the stopping rule, and appears atomically.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp

from gkdrl import agents
from gkdrl import networks
from gkdrl import validation
from gkdrl.agents import acting
from gkdrl.agents import base as agent_base
from gkdrl.runners import builtin
from gkdrl.runners import checkpointing
from gkdrl.runners import loop


@dataclasses.dataclass(frozen=True, kw_only=True)
class EarlyStopping:
  """When SFT stops.

  Attributes:
    eval_every: steps between validation losses, >= 1.
    patience: evaluations without a new best before stopping, >= 1.
    max_steps: the most steps; a multiple of `eval_every`. The learning
      rate decays by cosine over them, whenever training stops.
    val_examples: validation references the loss averages over, >= 1.
    snapshot_steps: steps whose parameters are also kept (unconverged
      starts for the ablation); each a multiple of `eval_every`.
  """

  eval_every: int = 100
  patience: int = 3
  max_steps: int = 3000
  val_examples: int = 256
  snapshot_steps: tuple[int, ...] = ()

  def __post_init__(self):
    validation.check_int("eval_every", self.eval_every, 1)
    validation.check_int("patience", self.patience, 1)
    validation.check_int("max_steps", self.max_steps, 1)
    validation.check_int("val_examples", self.val_examples, 1)
    if self.max_steps % self.eval_every:
      validation.fail("max_steps", self.max_steps,
                      f"a multiple of eval_every={self.eval_every}")
    for step in self.snapshot_steps:
      if step % self.eval_every or not 0 < step <= self.max_steps:
        validation.fail("snapshot_steps", self.snapshot_steps,
                        f"multiples of eval_every={self.eval_every} up to "
                        f"max_steps={self.max_steps}")


class Tracker:
  """The best validation loss so far and whether patience has run out."""

  def __init__(self, patience: int):
    self.patience = patience
    self.best_step, self.best_loss = None, float("inf")
    self.bad_evals = 0
    self.curve = []  # [(step, loss)]

  def update(self, step: int, loss: float) -> bool:
    """Records an evaluation; True when it is a new best."""
    self.curve.append((int(step), float(loss)))
    if loss < self.best_loss:
      self.best_step, self.best_loss, self.bad_evals = step, loss, 0
      return True
    self.bad_evals += 1
    return False

  @property
  def exhausted(self) -> bool:
    return self.bad_evals >= self.patience


class _Stop(Exception):
  """Raised from the evaluation hook once patience has run out."""


def validation_loss_fn(model, task, num_examples: int, batch_size: int = 64):
  """`loss(params) -> float`: mean NLL per reference token (validation)."""

  @jax.jit
  def batch_sums(params, batch):
    logits = agent_base.student_logits(model, params, batch,
                                       agents.SFTConfig())  # [B, T, V]
    logp_a = agent_base.token_log_probs(logits,
                                        batch.completion_tokens)  # [B, T]
    mask = batch.completion_mask  # [B, T]
    return -jnp.sum(jnp.where(mask, logp_a, 0.0)), jnp.sum(mask)

  batches = []
  for task_batch in task.batches("validation", batch_size, seed=None,
                                 fixed_shape=True):
    batches.append(acting.dataset_batch(task_batch))
    if len(batches) * batch_size >= num_examples:
      break

  def loss(params) -> float:
    total, count = 0.0, 0.0
    for batch in batches:
      nll, tokens = batch_sums(params, batch)
      total, count = total + float(nll), count + float(tokens)
    return total / count

  return loss


def _key(task_name: str, role: str, spec: builtin.BuiltinSpec,
         stopping: EarlyStopping) -> str:
  payload = json.dumps({"task": task_name, "role": role,
                        "spec": dataclasses.asdict(spec),
                        "stopping": dataclasses.asdict(stopping)},
                       sort_keys=True)
  return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _save(model, params, task, path: pathlib.Path) -> None:
  tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
  networks.save_pretrained(model, jax.device_get(params), tmp,
                           tokenizer=task.tokenizer)
  if path.exists():
    shutil.rmtree(path)
  os.replace(tmp, path)


def train_sft(task, task_name: str, role: str, spec: builtin.BuiltinSpec,
              cache_dir, stopping: EarlyStopping) -> dict[str, Any]:
  """SFT with early stopping, cached; returns its record (see `sft.json`).

  Returns:
    {"path": best model directory, "best_step", "best_loss",
    "stopped_step", "curves": {"train": [[step, loss]], "validation":
    [[step, loss]]}, "snapshots": {step: directory}}.
  """
  cache_dir = pathlib.Path(cache_dir)
  name = f"{task_name}-{role}-{_key(task_name, role, spec, stopping)}"
  out = cache_dir / name
  if (out / "sft.json").exists():
    return checkpointing.read_json(out / "sft.json")
  cache_dir.mkdir(parents=True, exist_ok=True)
  model = networks.make_model(builtin.model_config(task, spec))
  agent = agents.make_agent(agents.SFTConfig(
      optimizer=agents.OptimizerConfig(
          learning_rate=spec.learning_rate, warmup_steps=50,
          decay_steps=stopping.max_steps)),
      student=model, tokenizer=task.tokenizer)
  val_loss = validation_loss_fn(model, task, stopping.val_examples)
  tracker = Tracker(stopping.patience)
  best = {}
  snapshots = {}

  def evaluate(params):
    step = (len(tracker.curve) + 1) * stopping.eval_every
    loss = val_loss(params)
    if tracker.update(step, loss):
      best["params"] = jax.device_get(params)
    if step in stopping.snapshot_steps:
      path = cache_dir / f"{name}-step{step}"
      _save(model, params, task, path)
      snapshots[str(step)] = str(path)
    if tracker.exhausted:
      raise _Stop()
    return {"validation": {"loss": loss}}

  # A fresh run every time: the step count above assumes no resume.
  workdir = cache_dir / f".{name}.work"
  shutil.rmtree(workdir, ignore_errors=True)
  try:
    loop.train(agent=agent, state=agent.init(model.init(
        jax.random.key(spec.seed))), task=task, workdir=workdir,
               config=loop.LoopConfig(
                   steps=stopping.max_steps, batch_size=spec.batch_size,
                   seed=spec.seed, log_every=stopping.eval_every // 4 or 1,
                   eval_every=stopping.eval_every,
                   save_every=stopping.max_steps, progress=False),
               evaluate_fn=evaluate)
  except _Stop:
    pass
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  train_curve = [[r["step"], r["loss/total"]] for r in map(json.loads, lines)
                 if "loss/total" in r]
  _save(model, best["params"], task, out)
  record = {"path": str(out), "best_step": tracker.best_step,
            "best_loss": tracker.best_loss,
            "stopped_step": tracker.curve[-1][0],
            "curves": {"train": train_curve,
                       "validation": [list(p) for p in tracker.curve]},
            "snapshots": snapshots, "spec": dataclasses.asdict(spec)}
  checkpointing.write_json(out / "sft.json", record)
  shutil.rmtree(workdir, ignore_errors=True)
  return record
