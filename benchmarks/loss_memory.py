r"""Distillation loss, forward + backward: time and peak memory, side by side.

    python benchmarks/loss_memory.py                  # the issue's sizes
    python benchmarks/loss_memory.py --quick          # small sizes
    python benchmarks/loss_memory.py --configs=49152:2:512

Three implementations start from the same inputs, the final hidden states
`[B, T, D]` and unembedding matrices `[D, V]` of a student and a teacher
(D = 896, Qwen2-0.5B's width), and compute the JSD(0.5) loss and its
gradient with respect to the student's hidden states and unembedding:

  gkdrl          logits = hidden @ unembedding, then `losses.distillation_loss`
  gkdrl_chunked  `losses.chunked_distillation_loss` (chunks of 32 positions)
  trl            logits in PyTorch, then TRL's `GKDTrainer.generalized_jsd_loss`

  gkdrl_top_k    the teacher's top-k (K = 64) taken right after its
                 unembedding, then `losses.top_k_distillation_loss`: the
                 loss's teacher side is [B, T, K], not [B, T, V]

and three more start from the logits themselves, `[B, T, V]` standard normal
draws for both sides (the same distribution as the logits above), with the
gradient taken with respect to the student's logits: the loss alone.

  gkdrl_logits   `losses.distillation_loss` on the logits
  trl_logits     `GKDTrainer.generalized_jsd_loss` on the logits
  gkdrl_logits_top_k  `losses.top_k_distillation_loss` on the student's
                 logits and the teacher's top-k (drawn outside the step)

Each (implementation, size) runs in its own process, so the peak resident
memory (`ru_maxrss`) is that of one computation, and "XLA MB" is what XLA's
memory analysis of the compiled step reports (arguments + outputs + temps,
JAX rows only); a process killed for
memory is reported as "OOM". Times are the median of 3 runs after a warm-up
(JAX compiles there). Needs `pip install trl` (not a gkdrl dependency).
"""

import argparse
import json
import os
import resource
import subprocess
import sys

import timing  # benchmarks/timing.py, beside this script

D = 896
CHUNK = 32  # positions per chunk; --chunk_size changes it
FULL = ["151936:2:512", "151936:4:1024", "49152:2:512", "49152:4:1024"]
QUICK = ["8192:2:128"]
TOP_K = 64
IMPLS = ["gkdrl", "gkdrl_chunked", "gkdrl_top_k", "trl", "gkdrl_logits",
         "gkdrl_logits_top_k", "trl_logits"]
# What each row is compared with: the same inputs on TRL's side.
REFERENCE = {"gkdrl": "trl", "gkdrl_chunked": "trl", "gkdrl_top_k": "trl",
             "trl": "trl", "gkdrl_logits": "trl_logits",
             "gkdrl_logits_top_k": "trl_logits", "trl_logits": "trl_logits"}


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024




def _normal(jax, seed: int, shape, scale: float = 1.0, rows: int = 32):
  """A float32 normal array built in place, a block of rows at a time.

  `jax.random.normal(key, (D, V)) * scale` holds its random bits, the draw
  and the scaled copy at once (three [D, V] arrays): at V = 151,936 that
  transient, not the loss, would set the process's peak memory.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  put = jax.jit(lambda out, x, i: jax.lax.dynamic_update_slice_in_dim(
      out, x, i, axis=0), donate_argnums=0)
  rng = np.random.default_rng(seed)
  out = jax.numpy.zeros(shape, jax.numpy.float32)
  for start in range(0, shape[0], rows):
    block = rng.standard_normal((min(rows, shape[0] - start),) + shape[1:],
                                dtype=np.float32)
    block *= scale
    out = put(out, block, start)
  return out


def worker(impl: str, v: int, b: int, t: int) -> dict:
  # Each side draws its inputs natively, so the process holds one copy.
  if impl == "trl_logits":
    import torch  # pylint: disable=g-import-not-at-top
    from trl.experimental.gkd import GKDTrainer  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    s_logits = torch.randn(b, t, v).requires_grad_()
    t_logits = torch.randn(b, t, v)

    def run():
      s_logits.grad = None
      loss = GKDTrainer.generalized_jsd_loss(s_logits, t_logits, beta=0.5)
      loss.backward()
      return float(loss)
  elif impl == "trl":
    import torch  # pylint: disable=g-import-not-at-top
    from trl.experimental.gkd import GKDTrainer  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    hs_t = torch.randn(b, t, D).requires_grad_()
    ws_t = torch.randn(D, v).mul_(D**-0.5).requires_grad_()
    ht_t, wt_t = torch.randn(b, t, D), torch.randn(D, v).mul_(D**-0.5)

    def run():
      hs_t.grad = ws_t.grad = None
      with torch.no_grad():
        teacher_logits = ht_t @ wt_t
      loss = GKDTrainer.generalized_jsd_loss(hs_t @ ws_t, teacher_logits,
                                             beta=0.5)
      loss.backward()
      return float(loss)
  else:
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from gkdrl import losses  # pylint: disable=g-import-not-at-top
    if impl == "gkdrl":
      def loss_fn(hs, ws, ht, wt, mask):
        return losses.distillation_loss(hs @ ws, ht @ wt, mask,
                                        divergence="jsd", beta=0.5)[0]
    elif impl == "gkdrl_top_k":
      def loss_fn(hs, ws, ht, wt, mask):
        teacher = losses.top_k_teacher(ht @ wt, TOP_K)  # [B, T, K]
        return losses.top_k_distillation_loss(hs @ ws, teacher, mask,
                                              divergence="jsd", beta=0.5)[0]
    else:
      def loss_fn(hs, ws, ht, wt, mask):
        return losses.chunked_distillation_loss(
            hs, ws, ht, wt, mask, divergence="jsd", beta=0.5,
            chunk_size=CHUNK)[0]
    if impl == "gkdrl_logits":
      # Logits drawn as [B * T, V] rows (a block at a time) and viewed as
      # [B, T, V] inside the jitted function, where the reshape is free.
      def loss_fn(s_rows, t_rows, mask):
        shape = (b, t, v)
        return losses.distillation_loss(
            s_rows.reshape(shape), t_rows.reshape(shape), mask,
            divergence="jsd", beta=0.5)[0]
      grad_fn = jax.jit(jax.value_and_grad(loss_fn))
      args = (_normal(jax, 0, (b * t, v)), _normal(jax, 1, (b * t, v)),
              jnp.ones((b, t), bool))
    elif impl == "gkdrl_logits_top_k":
      def loss_fn(s_rows, teacher, mask):
        return losses.top_k_distillation_loss(
            s_rows.reshape((b, t, v)), teacher, mask, divergence="jsd",
            beta=0.5)[0]
      grad_fn = jax.jit(jax.value_and_grad(loss_fn))
      teacher = jax.jit(lambda x: jax.tree.map(
          lambda a: a.reshape((b, t) + a.shape[1:]),
          losses.top_k_teacher(x, TOP_K)))(_normal(jax, 1, (b * t, v)))
      args = (_normal(jax, 0, (b * t, v)), teacher, jnp.ones((b, t), bool))
    else:
      grad_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
      args = (_normal(jax, 0, (b, t, D)), _normal(jax, 1, (D, v), D**-0.5),
              _normal(jax, 2, (b, t, D)), _normal(jax, 3, (D, v), D**-0.5),
              jnp.ones((b, t), bool))

    def run():
      loss, grads = grad_fn(*args)
      jax.block_until_ready(grads)
      return float(loss)
  seconds = timing.median_seconds(run)
  row = {"impl": impl, "V": v, "B": b, "T": t, "seconds": seconds,
         "peak_mb": _peak_mb(), "loss": run()}
  if impl.startswith("gkdrl"):
    row["xla_mb"] = _xla_mb(grad_fn.lower(*args).compile())
  return row


def _xla_mb(compiled) -> float:
  """Arguments + outputs + temporaries of a compiled step, in MB."""
  stats = compiled.memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes - stats.alias_size_in_bytes) / 2**20


def measure(impl: str, v: int, b: int, t: int) -> dict:
  env = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1",
             TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, __file__, "--worker", impl, str(v), str(b), str(t),
       f"--chunk_size={CHUNK}"],
      capture_output=True, text=True, env=env)
  if result.returncode != 0:
    killed = result.returncode in (-9, 137) or "MemoryError" in result.stderr
    return {"impl": impl, "V": v, "B": b, "T": t,
            "error": "OOM" if killed else timing.error_line(result.stderr)}
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  global CHUNK
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--worker", nargs=4)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--configs", default=None,
                      help="comma-separated V:B:T entries")
  parser.add_argument("--impls", default=",".join(IMPLS))
  parser.add_argument("--chunk_size", type=int, default=CHUNK,
                      help="positions per chunk of gkdrl_chunked")
  args = parser.parse_args()
  CHUNK = args.chunk_size
  if args.worker:
    impl, v, b, t = args.worker
    print(json.dumps(worker(impl, int(v), int(b), int(t))))
    return
  configs = (args.configs.split(",") if args.configs
             else QUICK if args.quick else FULL)
  print(f"{'V':>7} {'B':>2} {'T':>5} {'impl':>14} {'time s':>8} "
        f"{'peak MB':>8} {'XLA MB':>8} {'mem vs trl':>10} "
        f"{'speed vs trl':>12}")
  for config in configs:
    v, b, t = (int(x) for x in config.split(":"))
    rows = {impl: measure(impl, v, b, t) for impl in args.impls.split(",")}
    for impl, row in rows.items():
      if "error" in row:
        print(f"{v:>7} {b:>2} {t:>5} {impl:>14}   failed: {row['error']}")
        continue
      trl = rows.get(REFERENCE[impl], {})
      mem = speed = "-"
      if "peak_mb" in trl and impl != REFERENCE[impl]:
        mem = f"{row['peak_mb'] / trl['peak_mb']:.2f}x"
        speed = f"{trl['seconds'] / row['seconds']:.2f}x"
      xla = f"{row['xla_mb']:8.0f}" if "xla_mb" in row else f"{'-':>8}"
      print(f"{v:>7} {b:>2} {t:>5} {impl:>14} {row['seconds']:8.2f} "
            f"{row['peak_mb']:8.0f} {xla} {mem:>10} {speed:>12}", flush=True)


if __name__ == "__main__":
  main()
