r"""A real pretrained pair: SmolLM2-135M-Instruct and a student cut from it.

    python -m experiments.real_pair                  # full setting, one GPU
    python -m experiments.real_pair --setting=cpu    # a small run for CPUs
    python -m experiments.real_pair --quick          # pipeline check (tests)

Teacher: the SmolLM2-135M-Instruct weights of the `smollm2` asset (GGUF,
`python -m gkdrl.assets fetch smollm2`), supervised fine-tuned on the task.
Student: every k-th block of that fine-tuned teacher, embeddings and head
copied (`networks.keep_every_kth_layer`, as DistilBERT and Minitron
initialise students), then supervised fine-tuned; every method starts from
that SFT student. Methods, each for the same steps and batch: SFT
continued, SeqKD, supervised KD and on-policy GKD with forward KL, reverse
KL and JSD(0.9), at every seed.

Task: the built-in `arithmetic` word problems rendered in English ("Ada has
7 apples. Ada buys 5 more apples. How many apples does Ada have now?"),
solutions in GSM8K's format, written as a GSM8K-style JSON-lines file and
read by the `gsm8k` task with the model's own tokenizer; the reward is the
exact-match oracle of the final `#### <number>` answer. Verdicts follow
docs/results.md: difference of means beyond two standard errors.

Writes <out>/real_pair/{real_pair.json, real_pair.md, data.jsonl}; training
runs live under <out>/runs/real_pair/ and are read back when finished.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import platform
import time

from absl import app
from absl import flags
import jax

from experiments import common
from experiments import english_problems
from experiments import methods as methods_study
from gkdrl import assets
from gkdrl import networks
from gkdrl import validation
from gkdrl.runners import checkpointing
from gkdrl.runners import compilation
from gkdrl.runners import train

NAME = "real_pair"
MODES = ("greedy", "sample")
# Row label -> train.run settings; None is the starting SFT student itself.
METHODS = {"SFT start": None, **methods_study.TRAINED_METHODS}
ON_POLICY = methods_study.ON_POLICY
BASELINES = ("SFT start", "SFT (as long)", "Supervised KD", "SeqKD")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairSetting:
  """The sizes of one real-pair study.

  Attributes:
    problems: English word problems generated (5% each are carved out as
      validation and test).
    teacher_sft_steps: SFT steps of the SmolLM2 teacher.
    student_sft_steps: SFT steps of the student cut from it.
    keep_every: the student keeps the teacher's blocks 0, k, 2k, ...
    steps: training steps of every method.
    batch_size: prompts per step (SFT included).
    sft_learning_rate: peak learning rate of both SFT phases.
    learning_rate: peak learning rate of every method.
    max_new_tokens: completion length of sampling and evaluation.
    eval_examples: validation prompts per evaluation.
    eval_samples_per_prompt: completions per prompt at temperature 1.
    seeds: training seeds of the methods (the SFT phases use seed 0).
    methods: the trained methods to run (labels of `METHODS`); empty: all.
      Claims whose two sides are not both run are left out.
    compute_dtype: dtype of every training forward pass ("float32" or
      "bfloat16"; parameters, optimizer, softmaxes and divergences stay
      float32). bfloat16 took 0.73x the time of float32 for a forward and
      backward pass of the teacher on the 2 CPU cores.
  """

  problems: int
  teacher_sft_steps: int
  student_sft_steps: int
  keep_every: int
  steps: int
  batch_size: int
  sft_learning_rate: float
  learning_rate: float
  max_new_tokens: int
  eval_examples: int
  eval_samples_per_prompt: int
  seeds: tuple[int, ...]
  methods: tuple[str, ...] = ()
  compute_dtype: str = "bfloat16"

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.name == "methods":
        for label in value:
          validation.check_choice("methods", label,
                                  methods_study.TRAINED_METHODS)
      elif f.name == "compute_dtype":
        validation.check_choice(f.name, value, ("float32", "bfloat16"))
      elif f.name.endswith("learning_rate"):
        validation.check_positive(f.name, value)
      elif f.name == "seeds":
        if not value or len(set(value)) != len(value):
          validation.fail(f.name, value, "distinct, at least one")
      else:
        validation.check_int(f.name, value, 1)


SETTINGS = {
    # Sized for one GPU; not run yet (see docs/results.md).
    "full": PairSetting(problems=20000, teacher_sft_steps=1000,
                        student_sft_steps=2000, keep_every=3, steps=500,
                        batch_size=32, sft_learning_rate=1e-4,
                        learning_rate=5e-5, max_new_tokens=64,
                        eval_examples=500, eval_samples_per_prompt=4,
                        seeds=(0, 1, 2)),
    # Ran on 2 CPU cores shared with other jobs (load average 6 to 30) in
    # about 50 minutes, 31 of them the teacher SFT (docs/results.md). One
    # seed: every verdict is "cannot tell".
    "cpu": PairSetting(problems=1000, teacher_sft_steps=8,
                       student_sft_steps=16, keep_every=5, steps=4,
                       batch_size=4, sft_learning_rate=2e-4,
                       learning_rate=1e-4, max_new_tokens=48,
                       eval_examples=8, eval_samples_per_prompt=1,
                       seeds=(0,)),
    # One off-policy and one on-policy method: each loads and compiles
    # the 135M teacher again, the longest part of a test run.
    "quick": PairSetting(problems=60, teacher_sft_steps=1,
                         student_sft_steps=1, keep_every=15, steps=1,
                         batch_size=1, sft_learning_rate=1e-4,
                         learning_rate=1e-4, max_new_tokens=6,
                         eval_examples=1, eval_samples_per_prompt=1,
                         seeds=(0,), methods=("Supervised KD",
                                              "GKD JSD(0.9)")),
}


class PairRunner:
  """Trains (or reads back) the runs of one study under `root`."""

  def __init__(self, root, setting: PairSetting, data: pathlib.Path):
    self.root = pathlib.Path(root)
    self.setting = setting
    self.data = str(data)
    self._shared = {}  # (teacher, student) -> train.run's cache, one pair
    compilation.use_cache(True, self.root)  # <root>/xla

  def train(self, label: str, seed: int, *, teacher: str, student: str,
            steps: int, learning_rate: float, **settings) -> dict:
    """One train.run summary (plus "workdir", "seconds"), cached."""
    s = self.setting
    values = train.default_values(
        task="gsm8k", data_files=[self.data], teacher=teacher,
        student=student, seed=seed, steps=steps, batch_size=s.batch_size,
        learning_rate=learning_rate, warmup_steps=steps // 10,
        compute_dtype=s.compute_dtype,
        max_new_tokens=s.max_new_tokens, eval_examples=s.eval_examples,
        eval_samples_per_prompt=s.eval_samples_per_prompt,
        log_every=max(1, steps // 10), save_every=steps, workdir="")
    values.update(settings)
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str)
                            .encode()).hexdigest()[:8]
    workdir = (self.root / "runs" / NAME
               / f"{common.slug(label)}-seed{seed}-{digest}")
    values["workdir"] = str(workdir)
    done = workdir / "summary.json"
    if done.exists():
      return checkpointing.read_json(done)
    start = time.time()
    if (teacher, student) not in self._shared:
      # Runs come pair by pair: the previous pair's models (a 135M model
      # is 0.5 GiB in float32) and compilations are not needed again.
      self._shared.clear()
    summary = train.run(values, progress=False,
                        shared=self._shared.setdefault((teacher, student),
                                                       {}))
    result = {"teacher": summary["teacher"], "initial": summary["initial"],
              "final": summary["final"], "workdir": str(workdir),
              "seconds": time.time() - start}
    checkpointing.write_json(done, result)
    return result


def prepare_pair(runner: PairRunner, smollm2: str) -> tuple[dict, dict]:
  """SFT teacher, student cut from it, SFT student: (runs, paths)."""
  s = runner.setting
  teacher_run = runner.train(
      "teacher SFT", 0, teacher=smollm2, student=smollm2, agent="sft",
      steps=s.teacher_sft_steps, learning_rate=s.sft_learning_rate)
  teacher = str(pathlib.Path(teacher_run["workdir"]) / "student_hf")
  cut = runner.root / "models" / NAME / (
      f"student-every{s.keep_every}-" + pathlib.Path(
          teacher_run["workdir"]).name)
  if not (cut / "config.json").exists():
    model, params = networks.from_pretrained(teacher)
    student, student_params = networks.keep_every_kth_layer(
        model, params, s.keep_every)
    networks.save_pretrained(student, student_params, cut,
                             tokenizer=networks.load_tokenizer(teacher))
  student_run = runner.train(
      "student SFT", 0, teacher=teacher, student=str(cut), agent="sft",
      steps=s.student_sft_steps, learning_rate=s.sft_learning_rate)
  student = str(pathlib.Path(student_run["workdir"]) / "student_hf")
  return ({"teacher SFT": teacher_run, "student SFT": student_run},
          {"teacher": teacher, "student_cut": str(cut), "student": student})


def selected_methods(setting: PairSetting) -> dict:
  """The setting's rows of `METHODS`: "SFT start" and the methods it runs."""
  return {label: settings for label, settings in METHODS.items()
          if settings is None or not setting.methods
          or label in setting.methods}


def collect(runner: PairRunner, paths: dict) -> tuple[dict, dict]:
  """Every method at every seed: (stats, runs) as in experiments.methods."""
  s = runner.setting
  methods = selected_methods(s)
  runs = {label: [] for label in methods}
  references = {"Teacher": [], "SFT start": []}
  for seed in s.seeds:
    for label, settings in methods.items():
      if settings is None:
        continue
      run = runner.train(label, seed, teacher=paths["teacher"],
                         student=paths["student"], steps=s.steps,
                         learning_rate=s.learning_rate, **settings)
      runs[label].append(run)
    references["Teacher"].append(run["teacher"])
    references["SFT start"].append(run["initial"])
  return common.seed_stats(runs, references, MODES), runs


def claims(stats: dict) -> list[dict]:
  """The paper's method claims, checked on the pair's accuracy."""
  out = []

  def compare(claim, better, worse, mode="greedy"):
    if better not in stats or worse not in stats:
      return  # a method this setting does not run
    a, b = stats[better][mode]["reward"], stats[worse][mode]["reward"]
    out.append({"claim": claim,
                "evidence": (f"{mode}, accuracy: {better} {common.fmt(a)} "
                             f"vs {worse} {common.fmt(b)}"),
                "verdict": common.verdict(a, b)})

  for gkd in ON_POLICY:
    for baseline in BASELINES:
      compare(f"On-policy GKD beats {baseline}", gkd, baseline)
  for better in ("GKD reverse KL", "GKD JSD(0.9)"):
    compare("With sampling at temperature 1, reverse KL / JSD(0.9) beat "
            "forward KL", better, "GKD forward KL", "sample")
  return out


def machine() -> dict:
  return {"platform": platform.platform(), "processor": platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__,
          "devices": [d.device_kind for d in jax.devices()]}


def table(stats: dict, mode: str) -> str:
  metrics = [m for m in common.METRICS if m in stats["Teacher"][mode]]
  rows = [[label] + [common.fmt(stats[label][mode].get(m)) for m in metrics]
          for label in stats]
  return common.markdown_table(["method"] + metrics, rows)


def sft_table(pair_runs: dict) -> str:
  rows = []
  for label, run in pair_runs.items():
    for when in ("initial", "final"):
      greedy = run[when]["greedy"]
      rows.append([f"{label}, {'before' if when == 'initial' else 'after'}",
                   f"{greedy['reward']:.3f}", f"{greedy['rouge2']:.2f}",
                   f"{run['seconds']:.0f}" if when == "final" else ""])
  return common.markdown_table(
      ["model", "greedy accuracy", "rouge2", "run seconds"], rows)


def run_study(out, setting: PairSetting, setting_name: str) -> dict:
  """Runs the study; writes and returns its results."""
  out = pathlib.Path(out)
  start, load_start = time.time(), os.getloadavg()
  smollm2 = str(assets.locate("smollm2"))
  data = english_problems.write_problems(out / NAME / "data.jsonl", setting.problems)
  runner = PairRunner(out, setting, data)
  pair_runs, paths = prepare_pair(runner, smollm2)
  stats, runs = collect(runner, paths)
  results = {
      "name": NAME, "setting_name": setting_name,
      "setting": dataclasses.asdict(setting),
      "methods": selected_methods(setting),
      "paths": paths, "machine": machine(), "stats": stats,
      "pair_runs": {k: {"initial": v["initial"], "final": v["final"],
                        "seconds": v["seconds"]}
                    for k, v in pair_runs.items()},
      "run_seconds": {k: [r["seconds"] for r in rs]
                      for k, rs in runs.items() if rs},
      "claims": claims(stats), "seconds": time.time() - start,
      "load_average": {"start": load_start, "end": os.getloadavg()}}
  sections = [
      f"# A real pretrained pair ({setting_name} setting)",
      "Settings:\n" + "\n".join(
          f"- {k}: {', '.join(map(str, v)) if k == 'seeds' else v}"
          for k, v in results["setting"].items()),
      "Machine: {cpu_count} CPU cores ({processor}, {platform}), jax {jax},"
      " devices {devices}".format(**results["machine"])
      + f"; wall time {results['seconds']:.0f} s;"
      f" load average {load_start[0]:.1f} at the start, "
      f"{results['load_average']['end'][0]:.1f} at the end.",
      "## Supervised fine-tuning\n\n" + sft_table(pair_runs)]
  for mode in MODES:
    sections.append(f"## {mode} decoding\n\n" + table(stats, mode))
  sections.append("## Claims\n\n" + common.claims_markdown(results["claims"]))
  results["markdown"] = "\n\n".join(sections)
  common.write_results(out / NAME, NAME, results, results["markdown"])
  return results


common.define_flags()
flags.DEFINE_enum("setting", "full", sorted(SETTINGS),
                  "Sizes: full (one GPU), cpu (a small run: about 50 "
                  "minutes on 2 shared CPU cores); "
                  "--quick is --setting=quick.")


def setting_from_flags() -> tuple[str, PairSetting]:
  values = flags.FLAGS
  name = "quick" if values.quick else values.setting
  setting = SETTINGS[name]
  changes = {}
  if values.seeds:
    try:
      changes["seeds"] = tuple(int(s) for s in values.seeds)
    except ValueError:
      validation.fail("--seeds", values.seeds, "comma-separated integers")
  if values.train_steps is not None:
    changes["steps"] = values.train_steps
  return name, dataclasses.replace(setting, **changes)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  common.flags_lib.quiet_logs()
  name, setting = setting_from_flags()
  results = run_study(flags.FLAGS.out, setting, name)
  print(results["markdown"])
  print(f"\n{NAME} took {results['seconds']:.0f} s; results in "
        f"{flags.FLAGS.out}/{NAME}/")
  return 0


if __name__ == "__main__":
  app.run(main)
