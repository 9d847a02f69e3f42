"""The built-in `arithmetic` problems rendered in English, as GSM8K lines.

    path = write_problems("data.jsonl", 1000)
    task = tasks.make_task("gsm8k", tokenizer=tokenizer, data_files=[path])

The `arithmetic` generator writes space-separated words for its word-level
tokenizer ("Ada has 7 apples . how many apples does Ada have now ?");
`english` turns them into sentences, and `write_problems` writes distinct
problems as {"question", "answer"} JSON lines, the answer's worked steps
followed by "\\n#### <number>", which the `gsm8k` task reads with any
model's tokenizer and scores by exact match of the final number.
"""

import json
import os
import pathlib
import re

from gkdrl.tasks import arithmetic
from gkdrl.tasks import generated


def english(text: str) -> str:
  """The arithmetic task's spaced words as English sentences.

  "Ada has 7 apples . how many apples does Ada have now ?" -> "Ada has 7
  apples. How many apples does Ada have now?"
  """
  text = re.sub(r" ([.?])", r"\1", text)
  return re.sub(r"(^|[.?] )([a-z])",
                lambda m: m.group(1) + m.group(2).upper(), text)


def write_problems(path, count: int, seed: int = 0) -> pathlib.Path:
  """Writes `count` distinct English problems as GSM8K JSON lines.

  Each line is {"question", "answer"}, the answer's worked steps followed
  by "\\n#### <number>" (the `gsm8k` task's format).
  """
  config = arithmetic.ArithmeticConfig()
  splits = generated.generate_splits(
      "arithmetic_en", lambda rng: arithmetic.sample_example(rng, config),
      {"train": count, "validation": 1, "test": 1}, seed=seed,
      prompt_template="{source}")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = []
  for row in splits["train"]:
    work, _, answer = row["target"].rpartition("####")
    lines.append(json.dumps({
        "question": english(row["source"]),
        "answer": f"{english(work.strip())}\n#### {answer.strip()}"}))
  tmp = path.with_suffix(".tmp")
  tmp.write_text("\n".join(lines) + "\n")
  os.replace(tmp, path)
  return path
