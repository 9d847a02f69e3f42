r"""Device memory of one GKD update: full student, accumulation, LoRA.

    python benchmarks/memory_real_pairs.py               # SmolLM2-360M, 32 x 1024
    python benchmarks/memory_real_pairs.py --quick       # reduced size (CPU)
    python benchmarks/memory_real_pairs.py --run         # also run one step

A Llama with SmolLM2-360M's shapes (vocabulary 49,152, width 960, 32
layers, 15 heads, 5 KV heads, MLP 2,560, tied embeddings) and random
weights is the student; a second random model of the same shapes is the
teacher. One GKD update (`agents.make_agent(GKDConfig)`.update: student
forward and backward, teacher forward, JSD(0.5) from hidden states in
chunks, AdamW) on `--batch` rows of `--prompt_length` + `--new_tokens`
tokens is compiled for each row of the table:

  full        every student parameter trained
  accum N     `grad_accum_steps=N` (only where the agent config has it)
  lora r      `lora_rank=r` adapters on a float32 frozen base
  lora r bf16 the same, the frozen base stored in bfloat16

XLA's `compiled.memory_analysis()` gives the bytes of the update's
arguments (state, teacher, batch), its outputs, the outputs aliased onto
donated arguments, and its scratch (temp) buffers; "peak" is arguments +
outputs - aliased + temp, what the step needs on the device at once. With
`--run` one step executes, and where the backend reports it
(`device.memory_stats()`, GPUs) the measured peak is printed too. Nothing
is executed otherwise, so the full size compiles on a CPU host as well.
"""

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import agents
from gkdrl import networks
from gkdrl import types

SMOLLM2_360M = networks.ModelConfig(
    model_type="llama", vocab_size=49152, d_model=960, n_layers=32,
    n_heads=15, n_kv_heads=5, d_ff=2560, max_positions=8192,
    rope_theta=100000.0, tie_embeddings=True, bos_token_id=1,
    eos_token_id=2, pad_token_id=0)
# The same family at a size a CPU compiles and runs in seconds.
REDUCED = dataclasses.replace(SMOLLM2_360M, vocab_size=8192, d_model=240,
                              n_layers=4, d_ff=640)
GIB = 2.0 ** 30


def rows(args) -> list[tuple[str, dict]]:
  """(name, agent config overrides) of the table's rows."""
  out = [("full", {})]
  fields = {f.name for f in dataclasses.fields(agents.GKDConfig)}
  if "grad_accum_steps" in fields:
    out.append((f"accum {args.accum}", {"grad_accum_steps": args.accum}))
  else:
    print(f"(no accum {args.accum} row: this gkdrl has no grad_accum_steps)")
  out.append((f"lora {args.rank}", {"lora_rank": args.rank,
                                    "lora_alpha": 2.0 * args.rank}))
  out.append((f"lora {args.rank} bf16", {"lora_rank": args.rank,
                                         "lora_alpha": 2.0 * args.rank,
                                         "lora_base_dtype": "bfloat16"}))
  return out


def make_batch(args, vocab: int) -> types.Batch:
  rng = np.random.default_rng(0)
  b, p, t = args.batch, args.prompt_length, args.new_tokens
  return types.Batch(
      prompt_tokens=jnp.asarray(rng.integers(3, vocab, (b, p)), jnp.int32),
      prompt_mask=jnp.ones((b, p), bool),
      completion_tokens=jnp.asarray(rng.integers(3, vocab, (b, t)),
                                    jnp.int32),
      completion_mask=jnp.ones((b, t), bool))


def measure(model, overrides: dict, args) -> dict:
  """Compiled memory of one update, and with --run the measured peak."""
  config = agents.make_config(
      "gkd", lmbda=1.0, beta=0.5, max_new_tokens=args.new_tokens,
      compute_dtype=args.compute_dtype, remat=args.remat,
      optimizer=agents.OptimizerConfig(learning_rate=1e-5, warmup_steps=0),
      **overrides)
  agent = agents.make_agent(config, student=model, teacher=model,
                            eos_token_id=model.config.vocab_size,
                            pad_token_id=0)
  params = jax.eval_shape(model.init, jax.random.key(0))
  state = jax.eval_shape(agent.init, params)
  batch = make_batch(args, model.config.vocab_size)
  key = jax.random.key(0)
  compiled = agent.update.lower(state, batch, params, key).compile()
  memory = compiled.memory_analysis()
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize
                            for x in jax.tree.leaves(tree))
  result = dict(
      trainable=sum(x.size for x in jax.tree.leaves(state.params)),
      state_gib=nbytes(state) / GIB,
      optimizer_gib=nbytes(state.opt_state) / GIB,
      arguments_gib=memory.argument_size_in_bytes / GIB,
      outputs_gib=memory.output_size_in_bytes / GIB,
      aliased_gib=memory.alias_size_in_bytes / GIB,
      temp_gib=memory.temp_size_in_bytes / GIB)
  result["peak_gib"] = (result["arguments_gib"] + result["outputs_gib"]
                        - result["aliased_gib"] + result["temp_gib"])
  if args.run:
    real = jax.jit(model.init)(jax.random.key(0))
    teacher = jax.jit(model.init)(jax.random.key(1))
    live = agent.init(real)
    del real
    live, metrics = agent.update(live, batch, teacher, key)
    assert np.isfinite(float(metrics["loss/total"]))
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      result["measured_peak_gib"] = stats["peak_bytes_in_use"] / GIB
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="reduced model and batch (8 x 256 tokens)")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--prompt_length", type=int, default=None)
  parser.add_argument("--new_tokens", type=int, default=None)
  parser.add_argument("--rank", type=int, default=16)
  parser.add_argument("--accum", type=int, default=4)
  parser.add_argument("--remat", default="full")
  parser.add_argument("--compute_dtype", default="bfloat16")
  parser.add_argument("--run", action="store_true")
  parser.add_argument("--json", default=None, help="write the rows here")
  args = parser.parse_args()
  size = (8, 128, 128) if args.quick else (32, 512, 512)
  args.batch = args.batch or size[0]
  args.prompt_length = args.prompt_length or size[1]
  args.new_tokens = args.new_tokens or size[2]
  config = REDUCED if args.quick else SMOLLM2_360M
  model = networks.make_model(config)
  device = jax.devices()[0]
  print(f"{device.platform} ({device.device_kind}); student {config.d_model}"
        f" wide, {config.n_layers} layers, V={config.vocab_size}; batch "
        f"{args.batch} x {args.prompt_length + args.new_tokens} tokens; "
        f"compute {args.compute_dtype}, remat {args.remat}")
  table_rows = rows(args)
  header = ("| row | trainable | state GiB | optimizer GiB | arguments GiB "
            "| temp GiB | peak GiB | measured peak GiB |")
  print(header)
  print("|" + " --- |" * 8)
  table = {}
  for name, overrides in table_rows:
    r = measure(model, overrides, args)
    table[name] = r
    measured = r.get("measured_peak_gib")
    print(f"| {name} | {r['trainable']:,} | {r['state_gib']:.3f} | "
          f"{r['optimizer_gib']:.3f} | {r['arguments_gib']:.3f} | "
          f"{r['temp_gib']:.3f} | {r['peak_gib']:.3f} | "
          f"{'-' if measured is None else f'{measured:.3f}'} |", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(device=device.device_kind, args=vars(args),
                     rows=table), f, indent=2)


if __name__ == "__main__":
  main()
