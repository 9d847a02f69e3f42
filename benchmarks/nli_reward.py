"""NLI reward speed: EntailmentReward versus transformers' pipeline (CPU).

A DeBERTa-v3-base-sized sequence classifier (hidden 768, 12 layers, 12
heads, feed-forward 3072, 256 position buckets, shared keys, no absolute
positions, vocabulary 128,100) is built with random weights in memory by
transformers and saved once to a temporary directory with an offline
Unigram tokenizer over made-up words; no download. Both sides score the
same (premise, hypothesis) pairs of random words (premises of 40-100
words, hypotheses of 8-24 words, one token per word):

* gkdrl: `EntailmentReward(dir).score`, the Haiku DeBERTa jitted and
  batched by padded-length buckets (`--batch_size` pairs per call);
* Hugging Face: `pipeline("text-classification", top_k=None,
  batch_size=...)` on `{"text", "text_pair"}` dicts, PyTorch eager.

Both include tokenization. After one warm-up each (ours compiles there),
the sides run alternately `--repeats` times and report the median
rewards per second; the script also checks that both give the same
P(entailment) (max absolute difference printed).

Usage:
  python benchmarks/nli_reward.py            # DeBERTa-v3-base size
  python benchmarks/nli_reward.py --quick    # a tiny DeBERTa-v3, seconds
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

from gkdrl import reward_models as rm

BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, vocab_size=128100)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, vocab_size=4096)
V3 = dict(max_position_embeddings=512, type_vocab_size=0,
          position_biased_input=False, relative_attention=True,
          pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
          position_buckets=256, share_att_key=True, norm_rel_ebd="layer_norm",
          layer_norm_eps=1e-7, hidden_act="gelu", pad_token_id=0)
LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")


def tokenizer(vocab_size: int):
  """A DebertaV2Tokenizer whose words "w0", "w1", ... are one token each."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  words = [(f"\u2581w{i}", -1.0) for i in range(vocab_size - len(SPECIALS))]
  tok = tokenizers.Tokenizer(models.Unigram(
      [(s, 0.0) for s in SPECIALS] + words, unk_id=3))
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.decoder = decoders.Metaspace()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
  return transformers.DebertaV2TokenizerFast(
      tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]",
      pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
      model_max_length=512)


def build(sizes: dict, path: str):
  """Saves a random DeBERTa-v3 classifier to `path`; returns (model, tok)."""
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.DebertaV2Config(
      **sizes, **V3, id2label=LABELS,
      label2id={v: k for k, v in LABELS.items()})
  model = transformers.DebertaV2ForSequenceClassification(config).eval()
  tok = tokenizer(sizes["vocab_size"])
  model.save_pretrained(path, safe_serialization=True)
  tok.save_pretrained(path)
  return model, tok


def make_pairs(count: int, vocab: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  text = lambda n: " ".join(f"w{i}" for i in rng.integers(0, vocab - 5, n))
  return ([text(rng.integers(40, 101)) for _ in range(count)],
          [text(rng.integers(8, 25)) for _ in range(count)])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pairs", type=int, default=32)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--quick", action="store_true",
                      help="a tiny DeBERTa-v3 (hidden 64, 2 layers)")
  args = parser.parse_args()
  sizes = TINY if args.quick else BASE
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  premises, hypotheses = make_pairs(args.pairs, sizes["vocab_size"])
  with tempfile.TemporaryDirectory() as path:
    model, tok = build(sizes, path)
    reward = rm.EntailmentReward(
        path, rm.EntailmentConfig(batch_size=args.batch_size))
  params = reward.init(None)
  inputs = rm.RewardInputs(sources=premises, completions=hypotheses)
  pipe = transformers.pipeline("text-classification", model=model,
                               tokenizer=tok, device=-1, top_k=None)
  pairs = [{"text": p, "text_pair": h} for p, h in zip(premises, hypotheses)]
  sides = {
      "gkdrl": lambda: reward.score(params, inputs),
      "hf": lambda: pipe(pairs, batch_size=args.batch_size),
  }
  outputs = {name: fn() for name, fn in sides.items()}  # warm-up
  hf = np.array([{d["label"]: d["score"] for d in row}["entailment"]
                 for row in outputs["hf"]])
  diff = float(np.abs(outputs["gkdrl"] - hf).max())
  times = {name: [] for name in sides}
  for _ in range(args.repeats):
    for name, fn in sides.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  rate = {k: args.pairs / statistics.median(v) for k, v in times.items()}
  tokens = np.mean([len(x) for x in tok(premises, hypotheses)["input_ids"]])
  print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; jax {jax.__version__} "
        f"({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}")
  print(f"# {'tiny' if args.quick else 'DeBERTa-v3-base-sized'} model, "
        f"{args.pairs} pairs of {tokens:.0f} tokens on average, batch "
        f"{args.batch_size}, median of {args.repeats}; max |P(e) gkdrl - "
        f"P(e) HF| = {diff:.1e}")
  print(f"gkdrl {rate['gkdrl']:.1f} rewards/s, HF pipeline {rate['hf']:.1f} "
        f"rewards/s, ratio {rate['gkdrl'] / rate['hf']:.2f}x")


if __name__ == "__main__":
  main()
