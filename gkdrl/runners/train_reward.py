r"""Trains a preference reward model with the Bradley-Terry loss.

    python -m gkdrl.runners.train_reward --base_model=builtin \
        --steps=300 --workdir=runs/reward          # offline, built-in data
    python -m gkdrl.runners.train_reward --base_model=path/to/causal_lm \
        --data_files=prefs.jsonl --workdir=runs/reward

A decoder backbone is initialised from a causal LM (a local HF directory or
GGUF file, or `builtin`: the `facts` task's built-in teacher) with a zero
score head and trained on preference pairs, `prompt`, `chosen`, `rejected`
columns: `--data=builtin` (the oracle-labelled `facts` set,
`tasks.facts_preference_pairs`), a `datasets` dataset name, or local
json/jsonl/csv/parquet files (`--data_files`). A fraction of the pairs is
held out; the pairwise accuracy on them (r_chosen > r_rejected) is reported.

Writes into --workdir: config.json, metrics.jsonl (`loss/bradley_terry`,
`reward/accuracy`, `reward/margin`, `grad/norm`, and `eval/accuracy` at
evaluations), checkpoints/, eval.json and reward_model/, a directory that
`transformers.AutoModelForSequenceClassification` loads with the same scores
(and `reward_models.make_preference_reward` reads). Rerunning with the same
--workdir resumes from the last checkpoint.
"""

import dataclasses
import pathlib
from typing import Any

from absl import app
from absl import flags
import jax
import numpy as np
import optax

from gkdrl import networks
from gkdrl import tasks
from gkdrl import validation
from gkdrl.reward_models import preference_training as pt
from gkdrl.runners import builtin
from gkdrl.runners import checkpointing

BUILTIN = "builtin"
COLUMNS = ("prompt", "chosen", "rejected")
_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv",
            ".parquet": "parquet"}


def _field(default, help_text: str):
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainRewardConfig:
  """Settings of `run`; each field is also a flag (its help is below)."""

  base_model: str = _field(BUILTIN, "Causal LM to start from: a local HF "
                           "directory, a .gguf file, or 'builtin' (the facts "
                           "task's built-in teacher, the larger of its "
                           "two built-in models).")
  data: str = _field(BUILTIN, "'builtin' (oracle-labelled facts pairs) or a "
                     "datasets name with prompt/chosen/rejected columns.")
  data_files: tuple[str, ...] = _field((), "Local json/jsonl/csv/parquet "
                                       "files (instead of --data).")
  num_pairs: int = _field(20000, "Pairs of the built-in set (fresh pairs "
                          "generalise; a few thousand seen again and again "
                          "get memorised).")
  eval_fraction: float = _field(0.1, "Fraction of pairs held out.")
  steps: int = _field(300, "Optimizer steps.")
  batch_size: int = _field(16, "Pairs per step.")
  learning_rate: float = _field(1e-4, "Peak AdamW learning rate.")
  warmup_steps: int = _field(20, "Linear warmup steps.")
  margin: float = _field(0.0, "Bradley-Terry margin.")
  max_length: int = _field(256, "Tokens kept per text (the last ones).")
  seed: int = _field(0, "Seed of the data split, order and head.")
  log_every: int = _field(20, "Steps between metric lines.")
  eval_every: int = _field(100, "Steps between held-out evaluations.")
  save_every: int = _field(100, "Steps between checkpoints.")
  workdir: str = _field("runs/train_reward", "Directory of this run.")

  def __post_init__(self):
    for name in ("num_pairs", "steps", "batch_size", "max_length",
                 "log_every", "eval_every", "save_every"):
      validation.check_int(name, getattr(self, name), minimum=1)
    validation.check_int("warmup_steps", self.warmup_steps, minimum=0)
    validation.check_int("seed", self.seed, minimum=0)
    validation.check_range("eval_fraction", self.eval_fraction, 0.0, 1.0)
    if not self.eval_fraction > 0:
      validation.fail("eval_fraction", self.eval_fraction,
                      "it must lie in (0, 1)")
    validation.check_positive("learning_rate", self.learning_rate)
    validation.check_finite("margin", self.margin)
    if self.base_model == BUILTIN and (self.data != BUILTIN
                                       or self.data_files):
      validation.fail("base_model", self.base_model,
                      "the built-in model reads only --data=builtin")
    for path in self.data_files:
      validation.check_choice("data_files suffix", pathlib.Path(path).suffix,
                              _FORMATS)


def load_rows(config: TrainRewardConfig) -> list[dict[str, str]]:
  """The preference pairs, each a dict with `COLUMNS`."""
  if config.data == BUILTIN and not config.data_files:
    return tasks.facts_preference_pairs(config.num_pairs, seed=config.seed)
  import datasets  # pylint: disable=g-import-not-at-top
  if config.data_files:
    kind = {_FORMATS[pathlib.Path(p).suffix] for p in config.data_files}
    if len(kind) != 1:
      validation.fail("data_files", config.data_files, "use one format")
    ds = datasets.load_dataset(kind.pop(), data_files=list(config.data_files),
                               split="train")
  else:
    ds = datasets.load_dataset(config.data, split="train")
  missing = [c for c in COLUMNS if c not in ds.column_names]
  if missing:
    raise ValueError(f"The preference data lacks columns {missing}; it has "
                     f"{ds.column_names}.")
  return [{c: str(row[c]) for c in COLUMNS} for row in ds]


def _base_model(config: TrainRewardConfig) -> str:
  if config.base_model != BUILTIN:
    if not pathlib.Path(config.base_model).exists():
      validation.fail("base_model", config.base_model,
                      "it must be an existing directory or .gguf file")
    return config.base_model
  task = tasks.make_task("facts", seed=config.seed)
  return str(builtin.prepare_builtin_model(task, "facts", "teacher",
                                           task_kwargs={"seed": config.seed}))


def _encode(rows, tokenizer, config, pad_id):
  return pt.encode_pairs(
      tokenizer, [r["prompt"] for r in rows], [r["chosen"] for r in rows],
      [r["rejected"] for r in rows], max_length=config.max_length,
      pad_id=pad_id)


def held_out_accuracy(model, params, rows, tokenizer, config, pad_id):
  """Fraction of held-out pairs with r_chosen > r_rejected (ties lose)."""
  loss = jax.jit(lambda p, b: pt.pair_loss(model, p, b)[1]["reward/accuracy"])
  correct = 0.0
  for start in range(0, len(rows), config.batch_size):
    chunk = rows[start:start + config.batch_size]
    correct += float(loss(params, _encode(chunk, tokenizer, config, pad_id))
                     ) * len(chunk)
  return correct / len(rows)


def run(config: TrainRewardConfig) -> dict[str, Any]:
  """Trains (or resumes) a reward model; returns {"config", "eval"}."""
  workdir = pathlib.Path(config.workdir)
  rows = load_rows(config)
  order = np.random.default_rng(config.seed).permutation(len(rows))
  num_eval = max(1, int(round(config.eval_fraction * len(rows))))
  if num_eval >= len(rows):
    validation.fail("eval_fraction", config.eval_fraction,
                    f"it leaves no training pairs out of {len(rows)}")
  held_out = [rows[i] for i in order[:num_eval]]
  train = [rows[i] for i in order[num_eval:]]
  path = _base_model(config)
  tokenizer = networks.load_tokenizer(path)
  model = pt.init_from_causal_lm(path, jax.random.key(config.seed))
  pad_id = model.config.pad_token_id or 0
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, config.warmup_steps,
      max(config.steps, config.warmup_steps + 1))
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, weight_decay=0.0))
  update = pt.make_preference_update(model, optimizer, margin=config.margin)
  state = {"params": model.params,
           "opt_state": optimizer.init(model.params),
           "step": np.zeros((), np.int32)}
  checkpointer = checkpointing.Checkpointer(workdir)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
  start = int(state["step"])
  checkpointing.write_json(workdir / "config.json", dataclasses.asdict(config))
  writer = checkpointing.MetricsWriter(workdir, resume_step=start)
  params, opt_state = state["params"], state["opt_state"]
  for step in range(start + 1, config.steps + 1):
    # Batches depend on (seed, step) only, so a resumed run sees the same.
    picks = np.random.default_rng([config.seed, step]).choice(
        len(train), config.batch_size, replace=len(train) < config.batch_size)
    batch = _encode([train[i] for i in picks], tokenizer, config, pad_id)
    params, opt_state, metrics = update(params, opt_state, batch)
    record = {}
    if step % config.log_every == 0 or step == config.steps:
      record.update(checkpointing.to_python(metrics))
    if step % config.eval_every == 0 or step == config.steps:
      record["eval/accuracy"] = held_out_accuracy(
          model, params, held_out, tokenizer, config, pad_id)
    if record:
      writer.write(step, record)
    if step % config.save_every == 0 or step == config.steps:
      checkpointer.save(step, {"params": params, "opt_state": opt_state,
                               "step": np.asarray(step, np.int32)})
  checkpointer.close()
  accuracy = held_out_accuracy(model, params, held_out, tokenizer, config,
                               pad_id)
  summary = {"accuracy": accuracy, "pairs": len(held_out),
             "step": config.steps}
  pt.save_preference_model(model._replace(params=jax.device_get(params)),
                           workdir / "reward_model", tokenizer)
  checkpointing.write_json(workdir / "eval.json", summary)
  return {"config": dataclasses.asdict(config), "eval": summary}


def define_flags() -> None:
  """One flag per `TrainRewardConfig` field, its default and help."""
  define = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
            float: flags.DEFINE_float}
  for field in dataclasses.fields(TrainRewardConfig):
    if field.name == "data_files":
      flags.DEFINE_list(field.name, None, field.metadata["help"])
    else:
      define[type(field.default)](field.name, field.default,
                                  field.metadata["help"])


def main(argv):
  del argv
  values = {f.name: flags.FLAGS[f.name].value
            for f in dataclasses.fields(TrainRewardConfig)}
  values["data_files"] = tuple(values["data_files"] or ())
  summary = run(TrainRewardConfig(**values))
  print(f"held-out pairwise accuracy {summary['eval']['accuracy']:.3f} on "
        f"{summary['eval']['pairs']} pairs; reward model in "
        f"{pathlib.Path(values['workdir']) / 'reward_model'}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
