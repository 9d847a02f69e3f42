"""A handful of an evaluation's completions, to read beside its metrics.

People judge a summariser by reading its summaries: `evaluate_with_samples`
returns, next to the metrics, the first few completions of every decoding
mode as records

    {"prompt": str, "completion": str, "reference": str, "reward": float,
     "teacher_kl": float, "length": int}

(`teacher_kl`, the reverse KL to the teacher per completion token, only
with a teacher), and `write_jsonl` writes them one JSON object per line with
a "mode" key.
"""

from collections.abc import Mapping, Sequence
import json
import os
import pathlib

import numpy as np

from gkdrl import validation
from gkdrl.evaluation import rouge

SAMPLE_KEYS = ("prompt", "completion", "reference", "reward", "teacher_kl",
               "length")

Samples = Mapping[str, Sequence[dict]]  # mode -> records


def check_num_samples(num_samples) -> int:
  """`num_samples` as an int >= 0, or the validation module's ValueError."""
  return validation.check_int("num_samples", num_samples, minimum=0)


def row_rewards(task, sources: Sequence[str], completions: Sequence[str],
                targets: Sequence[str]) -> np.ndarray:
  """[N] per-row rewards when the evaluation has no reward model.

  The same fallback as the evaluation's "reward" metric: the task's first
  reward fn, or ROUGE-2 / 100 when the task has none.
  """
  if task.reward_fns:
    reward_fn = next(iter(task.reward_fns.values()))
    return np.asarray(reward_fn(list(sources), list(completions),
                                list(targets)), np.float64)
  return np.asarray([rouge.rouge_scores([c], [t])["rouge2"] / 100.0
                     for c, t in zip(completions, targets)], np.float64)


def make_records(*, prompts: Sequence[str], completions: Sequence[str],
                 references: Sequence[str], rewards: Sequence[float],
                 lengths: Sequence[int],
                 teacher_kls: Sequence[float] | None) -> list[dict]:
  """One record per row (see the module docstring); all inputs of length N."""
  records = []
  for i, prompt in enumerate(prompts):
    record = {"prompt": prompt, "completion": completions[i],
              "reference": references[i], "reward": float(rewards[i]),
              "length": int(lengths[i])}
    if teacher_kls is not None:
      record["teacher_kl"] = float(teacher_kls[i])
    records.append(record)
  return records


def write_jsonl(path: str | os.PathLike, samples: Samples) -> None:
  """Writes every mode's records, one JSON object per line, atomically."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [json.dumps({"mode": mode, **record}, ensure_ascii=False)
           for mode, records in samples.items() for record in records]
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
  os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> dict[str, list[dict]]:
  """The records `write_jsonl` wrote, by mode."""
  samples = {}
  for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
    record = json.loads(line)
    samples.setdefault(record.pop("mode"), []).append(record)
  return samples


def to_markdown(records: Sequence[dict]) -> str:
  """A Markdown table of records (TensorBoard renders it as a table)."""
  columns = [k for k in SAMPLE_KEYS if records and k in records[0]]
  cell = lambda v: (f"{v:.4g}" if isinstance(v, float) else str(v)).replace(
      "|", "\\|").replace("\n", " ")
  lines = ["| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |"
            for r in records]
  return "\n".join(lines)
