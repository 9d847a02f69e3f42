"""Sampling speed: gkdrl.sampling.sample versus Hugging Face generate (CPU).

Both sides run the same float32 weights: ours loaded with
`networks.from_pretrained`, Hugging Face's with transformers from the
directory our `save_pretrained` writes. Each (model, batch size) pair
generates `--new_tokens` tokens per row by multinomial sampling at
temperature 1 (no top-k / top-p) from random prompts of `--prompt_length`
tokens, with EOS disabled on both sides so every row runs to the limit.
After one warm-up run each (which compiles ours), the two sides run
alternately `--repeats` times, so both see the same machine load, and each
reports its median time; tokens/s counts generated tokens of all rows.

PyTorch's OpenMP threads spin while they wait by default; on a shared machine
whose load exceeds its cores that made Hugging Face ten times slower, so this
script sets OMP_WAIT_POLICY=PASSIVE unless it is already set (the header
prints the setting; pass OMP_WAIT_POLICY=ACTIVE on a quiet machine).

`--scan` also times the sampler with the model's stacked-parameter decode
(the `lax.scan` over layers that `decode` runs on plain parameters) in place
of the prepared, unrolled one (`LanguageModel.prepare_decode`, or
`EncoderDecoderModel.prepare_decode` for T5), as a third side of the same
alternation.

Usage:
  python benchmarks/sampling.py                  # smollm2 + random, B 1, 16
  python benchmarks/sampling.py --scan           # plus the scan decode
  python benchmarks/sampling.py --quick          # random model only, fewer
  python benchmarks/sampling.py --models=smollm2 --batch_sizes=16
  python benchmarks/sampling.py --models=t5 --batch_sizes=16  # T5-small size

The "t5" model is a random T5-small-sized encoder-decoder (Hugging Face's
side `T5ForConditionalGeneration`); its prompt is the encoder's input and
both sides decode `--new_tokens` tokens after the decoder start token.
"""

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from gkdrl import assets
from gkdrl import networks
from gkdrl import sampling

# A small Llama-family model with random weights (about 10M parameters).
RANDOM_CONFIG = networks.ModelConfig(
    model_type="llama", vocab_size=8192, d_model=256, n_layers=4, n_heads=8,
    n_kv_heads=4, d_ff=704, max_positions=1024, eos_token_id=1,
    pad_token_id=0)
# A T5-small-sized encoder-decoder (v1.0: ReLU, tied head) with random
# weights (about 60M parameters).
T5_CONFIG = networks.T5Config(
    vocab_size=32128, d_model=512, n_layers=6, n_heads=8, head_dim=64,
    d_ff=2048, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def load(name: str):
  """Returns (our model, our params, HF model) with the same weights."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if name == "smollm2":
    model, params = networks.from_pretrained(assets.locate("smollm2"))
  elif name == "random":
    model = networks.make_model(RANDOM_CONFIG)
    params = model.init(jax.random.key(0))
  elif name == "t5":
    model = networks.make_t5(T5_CONFIG)
    params = model.init(jax.random.key(0))
  else:
    raise ValueError(f"--models: unknown model {name!r}")
  hf_class = (transformers.AutoModelForSeq2SeqLM if model.is_encoder_decoder
              else transformers.AutoModelForCausalLM)
  with tempfile.TemporaryDirectory() as directory:
    networks.save_pretrained(model, params, directory)
    hf_model = hf_class.from_pretrained(directory, dtype=torch.float32)
  hf_model.eval()
  return model, params, hf_model


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def bench(name: str, batch_size: int, args) -> dict:
  """Times both samplers on one model and batch size."""
  import torch  # pylint: disable=g-import-not-at-top
  model, params, hf_model = MODELS[name]
  vocab_size = model.config.vocab_size
  rng = np.random.default_rng(batch_size)
  prompt = rng.integers(2, vocab_size, (batch_size, args.prompt_length))
  prompt = prompt.astype(np.int32)
  mask = np.ones_like(prompt, bool)
  keys = iter(jax.random.split(jax.random.key(0), 2 * args.repeats + 2))
  # Without prepare_decode the actor decodes on the stacked parameters.
  scan_model = model._replace(prepare_decode=None, unstack_cache=None)

  def ours(model=model):
    # An id outside the vocabulary is never sampled: no row stops early.
    samples = sampling.sample(
        model, params, next(keys), prompt, mask,
        max_new_tokens=args.new_tokens, temperature=1.0,
        eos_token_id=vocab_size, pad_token_id=0)
    lengths = np.asarray(samples.lengths)
    assert (lengths == args.new_tokens).all(), lengths

  input_ids = torch.as_tensor(prompt, dtype=torch.long)
  attention_mask = torch.as_tensor(mask, dtype=torch.long)

  def theirs(new_tokens=args.new_tokens):
    with torch.no_grad():
      out = hf_model.generate(
          input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
          temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
          min_new_tokens=new_tokens, pad_token_id=0)
    # An encoder-decoder returns the decoder start token and the new ones.
    start = 1 if model.is_encoder_decoder else args.prompt_length
    assert out.shape[1] == start + new_tokens, out.shape

  ours()  # compiles
  scan = args.scan
  if scan:
    ours(scan_model)
  theirs(4)  # nothing to compile: a short run warms the caches
  ours_s, theirs_s, scan_s = [], [], []
  for _ in range(args.repeats):
    ours_s.append(_seconds(ours))
    theirs_s.append(_seconds(theirs))
    if scan:
      scan_s.append(_seconds(lambda: ours(scan_model)))
  ours_s, theirs_s = statistics.median(ours_s), statistics.median(theirs_s)
  tokens = batch_size * args.new_tokens
  row = dict(model=name, batch=batch_size, ours=tokens / ours_s,
             hf=tokens / theirs_s, ratio=theirs_s / ours_s)
  row["scan"] = tokens / statistics.median(scan_s) if scan else float("nan")
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="smollm2,random")
  parser.add_argument("--batch_sizes", default="1,16")
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--prompt_length", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--torch_threads", type=int, default=0,
                      help="torch.set_num_threads; 0 keeps torch's default")
  parser.add_argument("--scan", action="store_true",
                      help="also time the sampler with the scan decode")
  parser.add_argument("--quick", action="store_true",
                      help="random model only, 32 new tokens, 1 repeat")
  args = parser.parse_args()
  if args.quick:
    args.models, args.new_tokens, args.repeats = "random", 32, 1
  import torch  # pylint: disable=g-import-not-at-top
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; jax {jax.__version__} "
        f"({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ['OMP_WAIT_POLICY']}); {args.new_tokens} new tokens, "
        f"prompt {args.prompt_length}, median of {args.repeats}")
  print(f"{'model':<10}{'batch':>6}{'gkdrl tok/s':>14}{'HF tok/s':>12}"
        f"{'ratio':>8}" + (f"{'scan tok/s':>14}" if args.scan else ""))
  for name in args.models.split(","):
    MODELS[name] = load(name)
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
      row = bench(name, batch_size, args)
      scan = f"{row['scan']:>14.1f}" if args.scan else ""
      print(f"{row['model']:<10}{row['batch']:>6}{row['ours']:>14.1f}"
            f"{row['hf']:>12.1f}{row['ratio']:>7.2f}x{scan}   (load "
            f"{os.getloadavg()[0]:.1f})", flush=True)
    del MODELS[name]


MODELS = {}

if __name__ == "__main__":
  main()
