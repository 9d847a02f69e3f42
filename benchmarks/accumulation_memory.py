"""Memory of one GKD update with and without gradient accumulation.

    python benchmarks/accumulation_memory.py                  # reduced, CPU
    python benchmarks/accumulation_memory.py --size=smollm2_360m \
        --batch=32 --prompt=512 --completion=512 --run         # on a GPU

Compiles the jitted update of a `gkd` agent (student and teacher of the
same SmolLM2-360M shape, random weights, forward KL, float32) for each
`--steps` value of grad_accum_steps, and prints XLA's memory analysis:
`temp` is the scratch memory of the update (activations, logits,
gradients), `args` its inputs (state, batch, teacher). With `--run` it
also runs one update per setting and reports the device's peak memory
(`memory_stats()["peak_bytes_in_use"]`, where the backend has it), each
setting in its own process so that peaks do not mix.
"""

import argparse
import json
import subprocess
import sys

import jax
import jax.numpy as jnp

from gkdrl import agents
from gkdrl import networks
from gkdrl import types

# (d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab).
SIZES = {
    "reduced": (256, 8, 4, 2, 704, 49152),
    "smollm2_360m": (960, 32, 15, 5, 2560, 49152),
}
GIB = 1 << 30


def make_model(size: str):
  d, n, h, kv, ff, vocab = SIZES[size]
  return networks.make_model(networks.ModelConfig(
      vocab_size=vocab, d_model=d, n_layers=n, n_heads=h, n_kv_heads=kv,
      d_ff=ff, max_positions=4096, eos_token_id=2, pad_token_id=0,
      bos_token_id=1))


def inputs(args, steps: int):
  model = make_model(args.size)
  config = agents.GKDConfig(divergence="forward_kl", max_new_tokens=8,
                            grad_accum_steps=steps, remat=args.remat,
                            loss_chunk_size=0 if args.no_chunks else None)
  agent = agents.make_agent(config, student=model, teacher=model)
  batch = types.Batch(
      prompt_tokens=jnp.ones((args.batch, args.prompt), jnp.int32),
      prompt_mask=jnp.ones((args.batch, args.prompt), bool),
      completion_tokens=jnp.ones((args.batch, args.completion), jnp.int32),
      completion_mask=jnp.ones((args.batch, args.completion), bool))
  return model, agent, batch


def one(args, steps: int) -> dict:
  model, agent, batch = inputs(args, steps)
  params = jax.eval_shape(model.init, jax.random.key(0))
  state = jax.eval_shape(agent.init, params)
  key = jax.eval_shape(lambda: jax.random.key(0))
  analysis = agent.update.lower(state, batch, params,
                                key).compile().memory_analysis()
  row = {"grad_accum_steps": steps,
         "temp_gib": analysis.temp_size_in_bytes / GIB,
         "args_gib": analysis.argument_size_in_bytes / GIB}
  if args.run:
    real = model.init(jax.random.key(0))
    state = agent.init(real)
    state, metrics = agent.update(state, batch, real, jax.random.key(1))
    jax.block_until_ready(metrics)
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      row["peak_gib"] = stats["peak_bytes_in_use"] / GIB
    row["loss"] = float(metrics["loss/total"])
  return row


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", default="reduced", choices=sorted(SIZES))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=64)
  parser.add_argument("--completion", type=int, default=192)
  parser.add_argument("--steps", default="1,4")
  parser.add_argument("--remat", default="none")
  parser.add_argument("--no_chunks", action="store_true",
                      help="the plain (unchunked) distillation loss")
  parser.add_argument("--run", action="store_true")
  parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
  args, _ = parser.parse_known_args()
  if args.one is not None:
    print(json.dumps(one(args, args.one)))
    return
  print(f"{args.size}: batch {args.batch} x ({args.prompt} + "
        f"{args.completion}) tokens, remat={args.remat}, "
        f"{'plain' if args.no_chunks else 'default'} loss, "
        f"{jax.devices()[0].platform}")
  print("| grad_accum_steps | temp GiB | args GiB | peak GiB | loss |")
  print("| ---: | ---: | ---: | ---: | ---: |")
  for steps in map(int, args.steps.split(",")):
    out = subprocess.run([sys.executable, __file__, *sys.argv[1:],
                          f"--one={steps}"], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    row = json.loads(out)
    print(f"| {steps} | {row['temp_gib']:.2f} | {row['args_gib']:.2f} | "
          f"{row.get('peak_gib', float('nan')):.2f} | "
          f"{row.get('loss', float('nan')):.4f} |")


if __name__ == "__main__":
  main()
