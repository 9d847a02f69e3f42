r"""Throughput, model FLOP utilisation and HBM-bound share of a SmolLM2-sized
student.

    python benchmarks/gpu_throughput.py                 # on whatever JAX finds
    python benchmarks/gpu_throughput.py --quick         # tiny sizes (CPU check)
    python benchmarks/gpu_throughput.py --size=360m --dtypes=bfloat16 \
        --what=update                                   # the 360M MFU target
    python benchmarks/gpu_throughput.py --peak_tflops=989 --peak_gbps=3350
    python benchmarks/gpu_throughput.py --remat=full   # every update row

Two measurements on a Llama with SmolLM2-135M's shapes (`--size=135m`:
vocabulary 49,152, width 576, 30 layers, 9 heads, 3 KV heads, MLP 1536, tied
embeddings) or SmolLM2-360M's (`--size=360m`: width 960, 32 layers, 15
heads, 5 KV heads, MLP 2560) and random weights, in the compute dtypes of
`--dtypes`:

  sample  `gkdrl.sampling.sample`: `--sample_batch` rows of `--prompt_length`
          random prompt tokens, `--new_tokens` generated tokens each
          (temperature 1, EOS disabled). tokens/s counts generated tokens;
          its MFU counts 2 N FLOPs per token (a forward pass). "of HBM" is
          the HBM-bandwidth bound's time over the measured time: the bound
          reads, at the peak bandwidth, the least a sampler must read: the
          weights once per generated token (the prompt's pass and T - 1
          decode steps) and, at decode step j = 1 .. T - 1, every row's
          keys and values of the P + j tokens so far, all in the compute
          dtype (`sample_bytes`). gkdrl's decode step reads all P + T cache
          slots, so at long generations it cannot reach 100%.
  update  one GKD update (`agents.make_agent(GKDConfig)`.update): student
          forward and backward, teacher forward (a second random model of
          the same shape), JSD(0.5) loss (chunked: V >= 32,768), AdamW on
          given sequences of `--train_batch` rows of P + T tokens, in
          `--grad_accum` micro-batches (`AgentConfig.grad_accum_steps`; by
          default 64 rows of 64 + 448 tokens in 4 micro-batches: 32,768
          tokens a step). tokens/s counts all B (P + T) tokens; MFU = 6 N
          tokens/s / peak (the student's training FLOPs; the teacher's 2 N
          per token is shown separately as "MFU incl. teacher"). The
          student's layers are rematerialised as `--remat` says
          (`AgentConfig.remat`); by default not in bfloat16 and "full" in
          float32, whose update otherwise needs 27 GiB of scratch memory at
          16 rows of 512 tokens (2 GiB with "full", at the same speed on an
          H200). MFU still counts 6 N: recomputed FLOPs are not useful work.

N is the student's parameter count (tied embedding counted once, as the
unembedding's matrix product). Attention score FLOPs are not counted. The
peak comes from `--peak_tflops` or a table by `device_kind` (dense bf16 figures
of the vendor; both dtypes are divided by the same peak) and is printed; the
peak memory bandwidth likewise from `--peak_gbps` or a table of the vendors'
figures (none for a CPU: "of HBM" is then "-"). With
`--hf` (and torch with CUDA) a row times Hugging Face `generate` on the same
weights for comparison. Times: median of `--repeats` after a compiling
warm-up.
"""

import argparse
import dataclasses
import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Leave GPU memory to torch for the Hugging Face row.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from gkdrl import agents
from gkdrl import networks
from gkdrl import sampling
from gkdrl import types
from gkdrl.agents import base as agents_base
import memory_real_pairs  # beside this script: its SmolLM2-360M config
import timing  # benchmarks/timing.py, beside this script

SMOLLM2_135M = networks.ModelConfig(
    model_type="llama", vocab_size=49152, d_model=576, n_layers=30,
    n_heads=9, n_kv_heads=3, d_ff=1536, max_positions=2048,
    rope_theta=100000.0, tie_embeddings=True, bos_token_id=1,
    eos_token_id=2, pad_token_id=0)
SIZES = {"135m": SMOLLM2_135M, "360m": memory_real_pairs.SMOLLM2_360M}
TINY = networks.ModelConfig(
    model_type="llama", vocab_size=8192, d_model=128, n_layers=2, n_heads=4,
    n_kv_heads=2, d_ff=256, max_positions=512, tie_embeddings=True,
    eos_token_id=2, pad_token_id=0)

# Dense bf16 peak FLOP/s by the start of `device_kind` (vendor figures).
PEAKS = {
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H100": 989e12,  # SXM
    "NVIDIA H200": 989e12,
    "NVIDIA GH200": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
}


# Peak memory bandwidth in bytes/s by the start of `device_kind` (vendor
# figures; the more specific names first).
BANDWIDTHS = {
    "NVIDIA H100 PCIe": 2.0e12,
    "NVIDIA H100 NVL": 3.9e12,
    "NVIDIA H100": 3.35e12,  # SXM
    "NVIDIA H200": 4.8e12,
    "NVIDIA GH200": 4.0e12,  # 96 GB HBM3
    "NVIDIA A100-SXM4-80GB": 2.039e12,
    "NVIDIA A100 80GB PCIe": 1.935e12,
    "NVIDIA A100": 1.555e12,  # 40 GB
    "NVIDIA L4": 300e9,
    "TPU v4": 1.2e12,
    "TPU v5 lite": 819e9,
    "TPU v5e": 819e9,
    "TPU v5p": 2.765e12,
}


def device_peak(device, table: dict[str, float], override: float,
                scale: float, flag: str,
                figures: str = "") -> tuple[float | None, str]:
  """(peak or None, where it came from): `override * scale` if given, else
  the entry of `table` (of `figures`, named in the source) that
  `device.device_kind` starts with."""
  if override:
    return override * scale, flag
  kind = device.device_kind
  for prefix, value in table.items():
    if kind.startswith(prefix):
      return value, f"table entry {prefix!r}" + (f" ({figures})" if figures
                                                 else "")
  return None, f"unknown device_kind {kind!r}: pass {flag}"


def sample_bytes(config: networks.ModelConfig, n_params: int, dtype: str,
                 batch: int, prompt_length: int, new_tokens: int) -> int:
  """The least memory traffic of sampling `new_tokens` tokens per row.

  The weights are read once per generated token (the prompt's forward pass
  gives the first token's logits, then T - 1 decode steps), and decode step
  j = 1 .. T - 1 reads every row's keys and values of its P + j tokens, in
  every layer; weights and cache in `dtype`. Activations and writes are
  left out (small next to these at any real size).
  """
  itemsize = jnp.dtype(dtype).itemsize
  slot = 2 * config.n_layers * config.n_kv_heads * config.head_dim * itemsize
  slots_read = sum(prompt_length + j for j in range(1, new_tokens))
  return new_tokens * n_params * itemsize + batch * slots_read * slot


# The update's remat mode per compute dtype, unless --remat is given.
UPDATE_REMAT = {"bfloat16": "none", "float32": "full"}


def param_count(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))




def bench_sample(model, params, dtype, args) -> float:
  """Seconds per `sampling.sample` call."""
  params = agents_base.cast_params(params, dtype)
  vocab = model.config.vocab_size
  rng = np.random.default_rng(0)
  prompt = jnp.asarray(rng.integers(
      3, vocab, (args.sample_batch, args.prompt_length)), jnp.int32)
  mask = jnp.ones(prompt.shape, bool)
  keys = iter(jax.random.split(jax.random.key(0), args.repeats + 1))

  def run():
    samples = sampling.sample(
        model, params, next(keys), prompt, mask,
        max_new_tokens=args.new_tokens, temperature=1.0,
        eos_token_id=vocab, pad_token_id=0)
    lengths = np.asarray(samples.lengths)
    assert (lengths == args.new_tokens).all(), lengths

  return timing.median_seconds(run, args.repeats)


def bench_update(model, params, teacher_params, dtype, remat, args) -> float:
  """Seconds per GKD update on fixed sequences."""
  config = agents.make_config(
      "gkd", lmbda=1.0, beta=0.5, max_new_tokens=args.train_new_tokens,
      compute_dtype=dtype, remat=remat, grad_accum_steps=args.grad_accum,
      optimizer=agents.OptimizerConfig(learning_rate=1e-5, warmup_steps=0))
  agent = agents.make_agent(config, student=model, teacher=model,
                            eos_token_id=model.config.vocab_size,
                            pad_token_id=0)
  holder = [agent.init(params)]
  rng = np.random.default_rng(1)
  b, p, t = args.train_batch, args.prompt_length, args.train_new_tokens
  vocab = model.config.vocab_size
  batch = types.Batch(
      prompt_tokens=jnp.asarray(rng.integers(3, vocab, (b, p)), jnp.int32),
      prompt_mask=jnp.ones((b, p), bool),
      completion_tokens=jnp.asarray(rng.integers(3, vocab, (b, t)),
                                    jnp.int32),
      completion_mask=jnp.ones((b, t), bool))
  key = jax.random.key(0)

  def run():
    # The update may donate the state: keep only the new one.
    holder[0], metrics = agent.update(holder[0], batch, teacher_params, key)
    assert np.isfinite(float(metrics["loss/total"]))

  return timing.median_seconds(run, args.repeats)


def bench_hf(model, params, dtype, args) -> float | None:
  """Seconds per Hugging Face `generate` call on CUDA, or None."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  if not torch.cuda.is_available():
    return None
  torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  with tempfile.TemporaryDirectory() as directory:
    networks.save_pretrained(model, params, directory)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch_dtype).cuda().eval()
  rng = np.random.default_rng(0)
  prompt = torch.as_tensor(rng.integers(
      3, model.config.vocab_size, (args.sample_batch, args.prompt_length)),
                           device="cuda")
  hf.generation_config.eos_token_id = None

  def run():
    with torch.no_grad():
      out = hf.generate(
          input_ids=prompt, attention_mask=torch.ones_like(prompt),
          do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
          max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
          pad_token_id=0)
    torch.cuda.synchronize()
    assert out.shape[1] == args.prompt_length + args.new_tokens

  seconds = timing.median_seconds(run, args.repeats)
  del hf
  torch.cuda.empty_cache()
  return seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="135m", choices=sorted(SIZES),
                      help="the student's (and teacher's) SmolLM2 shapes")
  parser.add_argument("--what", default="sample,update",
                      help="the rows to measure: sample, update or both")
  parser.add_argument("--dtypes", default="bfloat16,float32")
  parser.add_argument("--sample_batch", type=int, default=256)
  parser.add_argument("--prompt_length", type=int, default=64)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--train_batch", type=int, default=64)
  parser.add_argument("--train_new_tokens", type=int, default=448)
  parser.add_argument("--grad_accum", type=int, default=4,
                      help="micro-batches per update (rows must divide)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--peak_tflops", type=float, default=0.0)
  parser.add_argument("--peak_gbps", type=float, default=0.0,
                      help="peak memory bandwidth, GB/s (else the table's)")
  parser.add_argument("--remat", default="",
                      help="none, dots or full: the update rows' remat mode "
                      f"(default per dtype: {UPDATE_REMAT})")
  parser.add_argument("--hf", action="store_true",
                      help="also time transformers generate on CUDA")
  parser.add_argument("--json", default="", help="also write rows here")
  parser.add_argument("--quick", action="store_true",
                      help="tiny model and sizes, 1 repeat (a CPU check)")
  args = parser.parse_args()
  what = args.what.split(",")
  if set(what) - {"sample", "update"}:
    parser.error(f"--what must name sample, update or both, comma-separated; "
                 f"got {args.what!r}")
  config = SIZES[args.size]
  if args.quick:
    config = TINY
    args.sample_batch, args.new_tokens, args.prompt_length = 4, 8, 8
    args.train_batch, args.train_new_tokens, args.repeats = 4, 8, 1
    args.grad_accum = 2
  if args.grad_accum < 1 or args.train_batch % args.grad_accum:
    parser.error(f"--grad_accum must be >= 1 and divide --train_batch "
                 f"({args.train_batch}); got {args.grad_accum}")
  device = jax.devices()[0]
  peak, peak_source = device_peak(device, PEAKS, args.peak_tflops, 1e12,
                                  "--peak_tflops", figures="dense bf16")
  bandwidth, bandwidth_source = device_peak(
      device, BANDWIDTHS, args.peak_gbps, 1e9, "--peak_gbps")
  model = networks.make_model(config)
  params = model.init(jax.random.key(0))
  teacher_params = model.init(jax.random.key(1))
  n = param_count(params)
  print(f"# {device.platform} {device.device_kind} x{jax.device_count()}, "
        f"jax {jax.__version__}; student {n / 1e6:.1f}M parameters "
        f"(V {config.vocab_size}, D {config.d_model}, {config.n_layers} "
        f"layers); peak {'-' if peak is None else f'{peak / 1e12:.0f}'} "
        f"TFLOP/s from {peak_source}; memory bandwidth "
        f"{'-' if bandwidth is None else f'{bandwidth / 1e9:.0f}'} GB/s from "
        f"{bandwidth_source}")
  update_tokens = args.train_batch * (args.prompt_length
                                      + args.train_new_tokens)
  shapes = dict(
      sample=f"sample: B {args.sample_batch}, P {args.prompt_length}, T "
      f"{args.new_tokens}",
      update=f"update: B {args.train_batch} in {args.grad_accum} "
      f"micro-batches, L {args.prompt_length + args.train_new_tokens} "
      f"({update_tokens:,} tokens a step), teacher of the same shape")
  print(f"# {'; '.join(shapes[w] for w in what)}; median of {args.repeats}; "
        f"float32 matmul precision "
        f"{jax.config.jax_default_matmul_precision or 'default'}", flush=True)
  mfu = lambda flops: "-" if peak is None else f"{100 * flops / peak:.1f}%"
  print(f"{'what':<8}{'impl':<7}{'dtype':<10}{'remat':<7}{'s/call':>9}"
        f"{'tokens/s':>12}{'MFU':>8}{'MFU incl. teacher':>19}{'of HBM':>8}",
        flush=True)
  rows = []

  def report(what, impl, dtype, seconds, tokens, flops_per_token,
             teacher_flops_per_token=0, remat="-", least_bytes=None):
    rate = tokens / seconds
    hbm = (None if least_bytes is None or bandwidth is None
           else least_bytes / bandwidth / seconds)
    row = dict(what=what, impl=impl, dtype=dtype, remat=remat,
               seconds=seconds, tokens_per_s=rate,
               mfu=None if peak is None else rate * flops_per_token / peak,
               least_bytes=least_bytes, hbm_fraction=hbm)
    extra = "-"
    if teacher_flops_per_token:
      extra = mfu(rate * (flops_per_token + teacher_flops_per_token))
    rows.append(row)
    print(f"{what:<8}{impl:<7}{dtype:<10}{remat:<7}{seconds:>9.3f}"
          f"{rate:>12.0f}{mfu(rate * flops_per_token):>8}{extra:>19}"
          f"{'-' if hbm is None else f'{100 * hbm:.1f}%':>8}", flush=True)

  for dtype in args.dtypes.split(","):
    if "sample" in what:
      tokens = args.sample_batch * args.new_tokens
      least = sample_bytes(config, n, dtype, args.sample_batch,
                           args.prompt_length, args.new_tokens)
      seconds = bench_sample(model, params, dtype, args)
      report("sample", "gkdrl", dtype, seconds, tokens, 2 * n,
             least_bytes=least)
      if args.hf:
        seconds = bench_hf(model, params, dtype, args)
        if seconds is not None:
          report("sample", "HF", dtype, seconds, tokens, 2 * n,
                 least_bytes=least)
    if "update" in what:
      remat = args.remat or UPDATE_REMAT.get(dtype, "none")
      seconds = bench_update(model, params, teacher_params, dtype, remat,
                             args)
      report("update", "gkdrl", dtype, seconds, update_tokens, 6 * n, 2 * n,
             remat=remat)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(device=device.device_kind, peak=peak,
                     bandwidth=bandwidth, n=n,
                     config=dataclasses.asdict(config), args=vars(args),
                     rows=rows), f)


if __name__ == "__main__":
  main()
