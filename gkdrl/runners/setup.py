"""Resolving a run's names into objects: task, teacher, student, reward.

Shared by the runners so that `train`, `evaluate` and `sweep_alpha` read
their flags the same way. Everything here validates before any training.
"""

import dataclasses
import os
import pathlib
from typing import Any

from absl import logging
import jax

from gkdrl import agents
from gkdrl import networks
from gkdrl import reward_models
from gkdrl import tasks
from gkdrl import validation
from gkdrl.runners import builtin

GENERATED_TASKS = ("facts", "arithmetic")
HUB_TASKS = ("xsum", "gsm8k")
# Rewards by name; "default" is the task's own first reward function.
TEXT_REWARDS = ("rouge1", "rouge2", "rougeL", "exact_match")
ENTAILMENT = "entailment"


@dataclasses.dataclass(frozen=True)
class Models:
  """The teacher and the student with their parameters and where from."""

  student: Any
  student_params: Any
  teacher: Any
  teacher_params: Any
  student_path: str
  teacher_path: str
  # The teacher's own tokenizer, loaded for cross-tokenizer distillation.
  teacher_tokenizer: Any = None


def make_task(name: str, *, data_files=None, model_path: str | None = None,
              seed: int = 0, skip_bad_rows: bool = False):
  """Builds the task; hub tasks take the tokenizer of `model_path`.

  Hub tasks check their data as they load (`gkdrl.tasks.data_checks`):
  bad rows are refused, or dropped with a warning with `skip_bad_rows`.
  """
  if name not in tasks.TASKS:
    raise ValueError(f"--task={name!r} is not recognised; allowed values: "
                     f"{', '.join(sorted(tasks.TASKS))}.")
  if name in GENERATED_TASKS:
    if data_files:
      raise ValueError(f"--data_files is for the hub tasks {HUB_TASKS}; "
                       f"task {name!r} generates its own data.")
    if skip_bad_rows:
      raise ValueError(f"--skip_bad_rows is for the hub tasks {HUB_TASKS}; "
                       f"task {name!r} generates its own data.")
    return tasks.make_task(name, seed=seed), {"seed": seed}
  if model_path in (None, builtin.BUILTIN):
    raise ValueError(
        f"task {name!r} needs a real model for its tokenizer: pass "
        "--student (and --teacher) as a Hugging Face directory or GGUF file.")
  tokenizer = networks.load_tokenizer(_check_path(model_path, "--student"))
  return tasks.make_task(name, tokenizer=tokenizer, data_files=data_files,
                         skip_bad_rows=skip_bad_rows), {}


def _check_path(path: str, flag: str) -> pathlib.Path:
  p = pathlib.Path(os.path.expanduser(path))
  if not p.exists():
    raise FileNotFoundError(
        f"{flag}={path!r}: no such file or directory. Pass a local Hugging "
        "Face model directory (config.json + *.safetensors), a .gguf file, "
        f"or {builtin.BUILTIN!r} for the built-in model of a built-in task.")
  return p


def resolve_model_path(spec: str, role: str, task, task_name: str,
                       task_kwargs: dict, cache_dir=None,
                       progress: bool = True) -> pathlib.Path:
  """A model directory or file for `--teacher` / `--student`."""
  if spec == builtin.BUILTIN:
    if task_name not in GENERATED_TASKS:
      raise ValueError(
          f"--{role}=builtin exists only for the built-in tasks "
          f"{GENERATED_TASKS}; task {task_name!r} needs a model path.")
    return builtin.prepare_builtin_model(task, task_name, role,
                                         task_kwargs=task_kwargs,
                                         cache_dir=cache_dir,
                                         progress=progress)
  return _check_path(spec, f"--{role}")


def _describe(tokenizer, origin: str) -> str:
  where = getattr(tokenizer, "name_or_path", "") or origin
  return f"{len(tokenizer.get_vocab())} tokens, from {where}"


# How a model's tokenizer differs from the task's (one definition, shared
# with the agents' check of teacher against student and the reward
# directories').
tokenizer_difference = networks.tokenizer_difference


def check_tokenizer(role: str, path, task, task_name: str) -> None:
  """Refuses a model whose tokenizer is not the one the task encodes with.

  A model directory without tokenizer files cannot be compared; that is
  logged and only the vocabulary size is checked (by `load_models`).
  """
  try:
    tokenizer = networks.load_tokenizer(path)
  except FileNotFoundError:
    logging.warning("--%s=%s has no tokenizer files: cannot check that it "
                    "uses task %r's tokenizer.", role, path, task_name)
    return
  difference = tokenizer_difference(tokenizer, task.tokenizer)
  if difference:
    origin = ("the task's built-in word tokenizer"
              if task_name in GENERATED_TASKS else "the student")
    raise ValueError(
        f"--{role}={str(path)!r} uses another tokenizer than task "
        f"{task_name!r}: the model's has {_describe(tokenizer, str(path))}; "
        f"the task's has {_describe(task.tokenizer, origin)} ({difference})."
        " Teacher, student and task must share one tokenizer"
        + (", or, for a teacher with its own, set --cross_tokenizer=align "
           "or uld (agents supervised_kd and gkd)." if role == "teacher"
           else "."))


def check_completion_length(models: "Models", task,
                            max_new_tokens: int) -> None:
  """The longest prompt plus `max_new_tokens` must fit every model.

  Encoder-decoder models (relative positions) have no such limit.
  """
  for path, model in ((models.student_path, models.student),
                      (models.teacher_path, models.teacher)):
    if model is not None and not model.is_encoder_decoder:
      validation.check_completion_length(
          max_new_tokens, prompt_tokens=task.max_prompt_tokens,
          max_positions=model.config.max_positions, model=path)


def load_models(*, task, task_name: str, task_kwargs: dict, teacher: str,
                student: str, cache_dir=None, need_teacher: bool = True,
                progress: bool = True,
                cross_tokenizer: bool = False) -> Models:
  """Loads (preparing built-in ones first) the student and the teacher.

  Refuses a model whose tokenizer is not the task's (`check_tokenizer`),
  except, with `cross_tokenizer`, the teacher: its own tokenizer is then
  loaded (`Models.teacher_tokenizer`) and its logits cover its vocabulary.
  """
  paths = {}
  for role, spec in (("student", student), ("teacher", teacher)):
    if role == "teacher" and not need_teacher:
      continue
    paths[role] = resolve_model_path(spec, role, task, task_name,
                                     task_kwargs, cache_dir, progress)
    if not (role == "teacher" and cross_tokenizer):
      check_tokenizer(role, paths[role], task, task_name)
  s_model, s_params = networks.from_pretrained(paths["student"])
  t_model = t_params = t_tokenizer = None
  if need_teacher and cross_tokenizer:
    t_model, t_params = networks.from_pretrained(paths["teacher"])
    t_tokenizer = networks.load_tokenizer(paths["teacher"])
  elif need_teacher:
    t_model, t_params = networks.from_pretrained(paths["teacher"])
    # Embeddings padded to different sizes are fine: the agents slice
    # logits to the task tokenizer's vocabulary.
    agents.check_vocabularies(t_model, s_model,
                              vocab_size=len(task.tokenizer),
                              teacher_path=str(paths["teacher"]),
                              student_path=str(paths["student"]))
  vocab = len(task.tokenizer)
  if s_model.config.vocab_size < vocab:
    raise ValueError(
        f"Student vocab_size={s_model.config.vocab_size} is smaller than "
        f"the task tokenizer's {vocab} tokens.")
  # Embedding rows beyond the tokenizer are padding: no model of the run
  # (training, sampling, evaluation) gives them a logit.
  s_model = agents.restrict_vocabulary(s_model, vocab)
  if t_model is not None:
    t_model = agents.restrict_vocabulary(
        t_model, vocab if t_tokenizer is None else len(t_tokenizer))
  return Models(student=s_model, student_params=s_params, teacher=t_model,
                teacher_params=t_params, student_path=str(paths["student"]),
                teacher_path=str(paths.get("teacher", "")),
                teacher_tokenizer=t_tokenizer)


def reward_names(task) -> list[str]:
  """Every valid `--reward` for a task."""
  return (["default"] + sorted(task.reward_fns) + list(TEXT_REWARDS)
          + [ENTAILMENT])


def _is_directory(name: str) -> bool:
  return os.sep in name or pathlib.Path(os.path.expanduser(name)).is_dir()


def make_reward(name: str, task, *, entailment_model: str | None = None,
                length_penalty: float = 0.0,
                mesh: jax.sharding.Mesh | None = None):
  """The reward model `--reward=name` (plus an optional length penalty).

  `name` may also be a local checkpoint directory (config.json picks the
  reward, see `reward_models.directories`): a one-label preference model
  (on device from the policy's tokens when its tokenizer is the task's),
  an NLI classifier or a T5 judge. With the training `mesh`, a model's
  forward runs on it (`reward_models.placement`).
  """
  valid = reward_names(task)
  if name not in valid and _is_directory(name):
    rm = reward_models.make_directory_reward(
        _check_reward_path(name, "--reward"),
        policy_tokenizer=task.tokenizer, flag="--reward", mesh=mesh,
        format_prompt=task.format_prompt)
    return _with_length_penalty(rm, length_penalty)
  if name not in valid:
    raise ValueError(f"--reward={name!r} is not recognised for task "
                     f"{task.name!r}; allowed values: {', '.join(valid)}.")
  if name == "default":
    if not task.reward_fns:
      name = "rouge2"
    else:
      name = next(iter(task.reward_fns))
  if name in task.reward_fns:
    rm = reward_models.task_reward(task, name)
  elif name == "exact_match":
    rm = reward_models.make_exact_match_reward()
  elif name == ENTAILMENT:
    if not entailment_model:
      raise ValueError("--reward=entailment needs --entailment_model, a "
                       "local Hugging Face NLI checkpoint directory.")
    rm = reward_models.make_directory_reward(
        _check_reward_path(entailment_model, "--entailment_model"),
        flag="--entailment_model", kinds=("entailment", "t5_judge"),
        mesh=mesh)
  else:
    rm = reward_models.make_rouge_reward(name)
  return _with_length_penalty(rm, length_penalty)


def _check_reward_path(path: str, flag: str) -> pathlib.Path:
  p = pathlib.Path(os.path.expanduser(path))
  if not p.is_dir():
    raise FileNotFoundError(
        f"{flag}={path!r}: no such directory. Pass a local Hugging Face "
        "checkpoint directory (config.json + *.safetensors + tokenizer).")
  return p


def _with_length_penalty(rm, length_penalty: float):
  validation.check_non_negative("length_penalty", length_penalty)
  if length_penalty > 0:
    rm = reward_models.weighted_sum([
        (1.0, rm), (1.0, reward_models.make_length_penalty(
            scale=length_penalty))])
  return rm


def init_reward_params(reward, seed: int):
  return reward.init(jax.random.key(seed)) if reward is not None else None
