r"""Host costs of a GKD update and `act` on a CPU, per process environment.

    python benchmarks/host_memory.py
    python benchmarks/host_memory.py --env GLIBC_TUNABLES=glibc.malloc.hugetlb=1
    python benchmarks/host_memory.py --quick   # tiny size, 3 calls

The agent is `gkd_step.py`'s (`--size`, random weights written once by
gkdrl, float32, JSD(0.5), 64 + 64 tokens for 8 rows). Every setting runs in
a process of its own, since glibc and others read such variables when a
process starts: the default environment first, then the default
environment with `gkdrl.runners.cpu_memory.keep_scratch_memory()` called
first (as the runners do unless `--cpu_scratch_reuse=false`), then one
process per `--env` (space-separated `NAME=VALUE` pairs added to the
environment).
After two warm-up steps each process times `--calls` updates and then
`--calls` calls of `act`, and prints per call: wall time, the process's
user and system CPU time and its minor page faults (`resource.getrusage`),
and the process's peak resident memory at the end.

On Linux, XLA takes a compiled program's scratch buffer from glibc on every
call, and glibc maps one larger than 32 MB afresh each time: the kernel
zero-fills it page by page, which shows here as system time and page
faults (benchmarks/README.md, "Fresh scratch memory every call");
`keep_scratch_memory` has the block reused instead.
"""

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # pylint: disable=g-import-not-at-top

from gkdrl import networks
from gkdrl.runners import cpu_memory
import gkd_step  # benchmarks/gkd_step.py, beside this script
import timing  # benchmarks/timing.py, beside this script

# The row of the default environment with keep_scratch_memory() called.
KEPT = "keep_scratch_memory()"
COLUMNS = ("update_wall_ms", "update_user_ms", "update_system_ms",
           "update_faults", "act_wall_ms", "act_user_ms", "act_system_ms",
           "act_faults", "peak_rss_mib")


def write_models(size: str, directory: str) -> tuple[str, str]:
  """gkd_step.py's student and teacher shapes, random, as HF directories."""
  spec = gkd_step.SIZES[size]
  paths = []
  for seed, role in enumerate(("student", "teacher")):
    d, n, h, kv, ff = spec[role]
    config = networks.ModelConfig(
        vocab_size=spec["vocab"], d_model=d, n_layers=n, n_heads=h,
        n_kv_heads=kv, d_ff=ff, max_positions=1024,
        tie_embeddings=spec["tie"], bos_token_id=1, eos_token_id=2,
        pad_token_id=0)
    model = networks.make_model(config)
    path = os.path.join(directory, role)
    networks.save_pretrained(model, model.init(jax.random.key(seed)), path)
    paths.append(path)
  return paths[0], paths[1]


def _per_call(fn, calls: int) -> dict:
  """Wall ms, user and system CPU ms and minor faults per call of `fn`."""
  before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  for _ in range(calls):
    jax.block_until_ready(fn())
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_SELF)
  return dict(wall_ms=1e3 * wall / calls,
              user_ms=1e3 * (after.ru_utime - before.ru_utime) / calls,
              system_ms=1e3 * (after.ru_stime - before.ru_stime) / calls,
              faults=(after.ru_minflt - before.ru_minflt) / calls)


def worker(args) -> dict:
  """Times `args.calls` updates and acts of gkd_step.py's agent."""
  if args.keep_scratch and not cpu_memory.keep_scratch_memory():
    raise SystemExit(f"error: {cpu_memory.summary()}")
  ours = gkd_step.Ours(os.path.join(args.model_dir, "student"),
                       os.path.join(args.model_dir, "teacher"),
                       gkd_step.prompts_of(args), args)
  for _ in range(2):  # compiles act and update
    ours.step()
  key = jax.random.key(1)

  def act():
    return ours.agent.act(ours.state, ours.task_batch, key,
                          teacher_params=ours.teacher_params)[0]

  batch = act()

  def update():
    # The update donates the state it is given: keep the new one.
    ours.state, metrics = ours.agent.update(ours.state, batch,
                                            ours.teacher_params, key)
    return metrics["loss/total"]

  row = {f"update_{k}": v for k, v in _per_call(update, args.calls).items()}
  row.update({f"act_{k}": v for k, v in _per_call(act, args.calls).items()})
  # ru_maxrss is in KiB on Linux.
  row["peak_rss_mib"] = resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss / 1024
  return row


def parse_env(setting: str) -> dict[str, str]:
  """'A=1 B=2' -> {'A': '1', 'B': '2'}; a word without '=' is refused."""
  pairs = {}
  for word in shlex.split(setting):
    name, sep, value = word.partition("=")
    if not sep or not name:
      raise SystemExit(f"error: --env={setting!r}: {word!r} is not "
                       "NAME=VALUE; pass space-separated NAME=VALUE pairs")
    pairs[name] = value
  return pairs


def measure(setting: str, args, model_dir: str, keep: bool = False) -> dict:
  """Runs the worker in a fresh process with `setting` added (and
  `keep_scratch_memory()` called first with `keep`)."""
  argv = [sys.executable, __file__, "--worker", f"--model_dir={model_dir}",
          f"--size={args.size}", f"--calls={args.calls}"]
  if keep:
    argv.append("--keep_scratch")
  env = {**os.environ, **parse_env(setting)}
  result = subprocess.run(argv, capture_output=True, text=True, env=env)
  if result.returncode != 0:
    return {"error": timing.error_line(result.stderr)}
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small",
                      choices=sorted(gkd_step.SIZES))
  parser.add_argument("--calls", type=int, default=20)
  parser.add_argument("--env", action="append", default=[],
                      help="space-separated NAME=VALUE pairs; repeatable")
  parser.add_argument("--quick", action="store_true",
                      help="--size=tiny --calls=3")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--model_dir", help=argparse.SUPPRESS)
  parser.add_argument("--keep_scratch", action="store_true",
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  # gkd_step.Ours and prompts_of read these; the step is gkd_step's default.
  args.batch_size, args.prompt_length, args.new_tokens = 8, 64, 64
  args.beta, args.compute_dtype = 0.5, "float32"
  if args.quick:
    args.size, args.calls = "tiny", 3
  if args.calls < 1:
    parser.error(f"--calls={args.calls}: at least 1")
  for setting in args.env:
    parse_env(setting)  # refuse a malformed one before any work
  if args.worker:
    print(json.dumps(worker(args)))
    return

  print(f"# {os.uname().sysname} {os.uname().machine}, {os.cpu_count()} "
        f"CPUs; jax {jax.__version__} ({jax.default_backend()}); size "
        f"{args.size}, {args.calls} calls each after 2 warm-up steps")
  header = ("environment",) + COLUMNS
  rows = []
  with tempfile.TemporaryDirectory() as model_dir:
    write_models(args.size, model_dir)
    runs = [("(default)", "", False), (KEPT, "", True)]
    runs += [(setting, setting, False) for setting in args.env]
    for name, setting, keep in runs:
      result = measure(setting, args, model_dir, keep)
      if "error" in result:
        rows.append((name, f"error: {result['error']}")
                    + ("",) * (len(COLUMNS) - 1))
        continue
      rows.append((name,) + tuple(
          f"{result[c]:.0f}" if c.endswith("faults") else f"{result[c]:.1f}"
          for c in COLUMNS))
  widths = [max(len(str(r[i])) for r in rows + [header])
            for i in range(len(header))]
  for row in [header] + rows:
    print("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                    for i, (v, w) in enumerate(zip(row, widths))))


if __name__ == "__main__":
  main()
