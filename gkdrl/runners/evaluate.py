r"""Evaluates a student (checkpoint or Hugging Face directory) on a task.

    python -m gkdrl.runners.evaluate --workdir=runs/train
    python -m gkdrl.runners.evaluate --model=runs/train/student_hf \
        --output=eval.json

Reports, for greedy decoding and temperature-1 sampling: the reward, the
task's own rewards (factuality for `facts`, accuracy for `arithmetic`),
ROUGE-1/2/L, reverse KL to the teacher on the student's samples, Self-BLEU
and mean length. Writes JSON and prints a table.
"""

import pathlib
import sys

from absl import app
from absl import flags

from gkdrl import evaluation
from gkdrl import networks
from gkdrl.runners import checkpointing
from gkdrl.runners import flags_lib
from gkdrl.runners import setup

flags_lib.define_model_flags()
flags.DEFINE_string("model", None,
                    "A Hugging Face directory or .gguf file to evaluate; "
                    "default: <workdir>/student_hf.")
flags.DEFINE_string("workdir", None,
                    "A training run: evaluates its student_hf (or, with "
                    "--step, or before student_hf exists, an orbax "
                    "checkpoint) with its config's task and teacher unless "
                    "flags say otherwise.")
flags.DEFINE_integer("step", None,
                     "With --workdir: evaluate this checkpoint step (-1: the "
                     "latest) instead of student_hf.")
flags.DEFINE_string("reward", "default", "Reward, as in train.")
flags.DEFINE_string("entailment_model", None,
                    "Local NLI checkpoint for --reward=entailment.")
flags.DEFINE_string("split", "validation", "validation or test.")
flags.DEFINE_integer("max_new_tokens", None,
                     "Most tokens per completion (default: the task's "
                     "longest target).")
flags.DEFINE_string("output", None,
                    "JSON output (default <workdir>/eval/evaluate.json or "
                    "./evaluate.json).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  flags_lib.quiet_logs()
  run_config = {}
  if FLAGS.workdir:
    config_path = pathlib.Path(FLAGS.workdir) / "config.json"
    if config_path.exists():
      run_config = checkpointing.read_json(config_path)
  model_path = FLAGS.model or (
      str(pathlib.Path(FLAGS.workdir) / "student_hf") if FLAGS.workdir
      else None)
  if model_path is None:
    print("error: pass --model or --workdir.", file=sys.stderr)
    return 1
  use_checkpoint = bool(FLAGS.workdir) and not FLAGS.model and (
      FLAGS.step is not None or not pathlib.Path(model_path).exists())
  if use_checkpoint and "student_path" not in run_config:
    print(f"error: {FLAGS.workdir} has no config.json with student_path.",
          file=sys.stderr)
    return 1
  pick = lambda name: (run_config.get(name, FLAGS[name].value)
                       if not FLAGS[name].present else FLAGS[name].value)
  task_name, teacher = pick("task"), pick("teacher")
  try:
    task, task_kwargs = setup.make_task(
        task_name, data_files=pick("data_files"),
        model_path=(run_config["student_path"] if use_checkpoint
                    else model_path),
        seed=pick("seed"), skip_bad_rows=pick("skip_bad_rows"))
    if use_checkpoint:
      # The checkpoint holds parameters; the architecture comes from the
      # run's starting student.
      model, _ = networks.from_pretrained(run_config["student_path"])
      checkpointer = checkpointing.Checkpointer(FLAGS.workdir)
      params = checkpointer.restore_params(
          None if FLAGS.step in (None, -1) else FLAGS.step,
          lora_alpha=run_config.get("agent_config", {}).get("lora_alpha"))
      checkpointer.close()
      model_path = f"{FLAGS.workdir} checkpoint {FLAGS.step}"
    else:
      model, params = networks.from_pretrained(
          setup.resolve_model_path(model_path, "model", task, task_name,
                                   task_kwargs))
    t_model = t_params = None
    if teacher:
      t_model, t_params = networks.from_pretrained(setup.resolve_model_path(
          teacher, "teacher", task, task_name, task_kwargs,
          cache_dir=pick("cache_dir")))
    reward = setup.make_reward(FLAGS.reward, task,
                               entailment_model=FLAGS.entailment_model)
    results = evaluation.evaluate(
        model=model, params=params, task=task, split=FLAGS.split,
        num_examples=FLAGS.eval_examples,
        max_new_tokens=FLAGS.max_new_tokens or task.max_target_tokens,
        teacher=t_model, teacher_params=t_params, reward=reward,
        samples_per_prompt=FLAGS.eval_samples_per_prompt, seed=FLAGS.seed)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  output = FLAGS.output or (
      pathlib.Path(FLAGS.workdir) / "eval" / "evaluate.json"
      if FLAGS.workdir else "evaluate.json")
  checkpointing.write_json(output, {"model": str(model_path),
                                    "split": FLAGS.split, **results})
  print(evaluation.format_table({str(model_path): results}))
  print(f"\nwrote {output}")
  return 0


if __name__ == "__main__":
  app.run(main)
