"""Tiny random BERT / RoBERTa NLI checkpoints and tokenizers for tests.

Two builders write a local Hugging Face directory (config.json, safetensors,
tokenizer files):

* `write_numpy_checkpoint` draws weights with NumPy and writes the HF tensor
  names by hand (no PyTorch), for tests of behaviour;
* `write_torch_checkpoint` builds the model with transformers/PyTorch and
  saves it with `save_pretrained(safe_serialization=True)`, for parity tests
  against the same PyTorch model.
"""

import json
import os
import pathlib

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = (
    "the a cat dog sat on mat ran in park is not red blue big small house "
    "tree man woman eats food green car drives road today yesterday"
).split()
CORPUS = (
    "The cat sat on the mat. A dog ran in the park. The man eats food. "
    "A woman drives a green car on the road today. The tree is big."
)
NLI_LABELS = {0: "contradiction", 1: "ENTAILMENT", 2: "neutral"}
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=48, max_position_embeddings=72)


def bert_tokenizer():
  """A WordPiece BertTokenizer over `WORDS` (pad id 0)."""
  import transformers  # pylint: disable=g-import-not-at-top
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
           ".", ",", "!", "?", "##s"]
  return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


def roberta_tokenizer(workdir: pathlib.Path):
  """A byte-level BPE RobertaTokenizer trained on `CORPUS` (pad id 1)."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(
      [CORPUS, " ".join(WORDS)], vocab_size=320, min_frequency=1,
      special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
      show_progress=False)
  workdir.mkdir(parents=True, exist_ok=True)
  bpe.save_model(str(workdir))
  merges = [tuple(line.split()) for line in open(workdir / "merges.txt")
            if line.strip() and not line.startswith("#")]
  vocab = json.loads((workdir / "vocab.json").read_text())
  return transformers.RobertaTokenizer(vocab=vocab, merges=merges)


def hf_config(family: str, vocab_size: int, id2label: dict) -> dict:
  """config.json contents of a tiny sequence-classification model."""
  arch = {"bert": "BertForSequenceClassification",
          "roberta": "RobertaForSequenceClassification"}[family]
  return dict(
      SIZES, model_type=family, architectures=[arch], vocab_size=vocab_size,
      type_vocab_size=2 if family == "bert" else 1,
      pad_token_id=0 if family == "bert" else 1, hidden_act="gelu",
      layer_norm_eps=1e-12, id2label={str(k): v for k, v in id2label.items()},
      label2id={v: k for k, v in id2label.items()})


def numpy_tensors(config: dict, seed: int) -> dict[str, np.ndarray]:
  """Random float32 tensors under the HF names of a classification model."""
  rng = np.random.default_rng(seed)
  d, f = config["hidden_size"], config["intermediate_size"]
  c = len(config["id2label"])
  prefix = config["model_type"] + "."
  shapes = {
      "embeddings.word_embeddings.weight": (config["vocab_size"], d),
      "embeddings.position_embeddings.weight": (
          config["max_position_embeddings"], d),
      "embeddings.token_type_embeddings.weight": (
          config["type_vocab_size"], d),
      "embeddings.LayerNorm.weight": (d,), "embeddings.LayerNorm.bias": (d,),
  }
  for i in range(config["num_hidden_layers"]):
    layer = f"encoder.layer.{i}."
    for name, shape in (("attention.self.query", (d, d)),
                        ("attention.self.key", (d, d)),
                        ("attention.self.value", (d, d)),
                        ("attention.output.dense", (d, d)),
                        ("intermediate.dense", (f, d)),
                        ("output.dense", (d, f))):
      shapes[layer + name + ".weight"] = shape
      shapes[layer + name + ".bias"] = shape[:1]
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      shapes[layer + name + ".weight"] = (d,)
      shapes[layer + name + ".bias"] = (d,)
  shapes = {prefix + k: v for k, v in shapes.items()}
  if config["model_type"] == "bert":
    head = {"bert.pooler.dense": (d, d), "classifier": (c, d)}
  else:
    head = {"classifier.dense": (d, d), "classifier.out_proj": (c, d)}
  for name, shape in head.items():
    shapes[name + ".weight"] = shape
    shapes[name + ".bias"] = shape[:1]
  return {
      k: (1.0 + 0.2 * rng.standard_normal(s) if "LayerNorm.weight" in k
          else 0.3 * rng.standard_normal(s)).astype(np.float32)
      for k, s in shapes.items()
  }


def write_numpy_checkpoint(path, family, *, id2label=None, seed=0):
  """Writes a random checkpoint without PyTorch; returns its tensors."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  tok = (bert_tokenizer() if family == "bert"
         else roberta_tokenizer(path / "_bpe"))
  config = hf_config(family, len(tok), id2label or NLI_LABELS)
  (path / "config.json").write_text(json.dumps(config))
  tensors = numpy_tensors(config, seed)
  save_file(tensors, str(path / "model.safetensors"))
  tok.save_pretrained(str(path))
  return tensors


def write_torch_checkpoint(torch, path, family, *, seed=0):
  """Builds a random transformers model, saves it; returns (model, tok)."""
  import transformers  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  tok = (bert_tokenizer() if family == "bert"
         else roberta_tokenizer(path / "_bpe"))
  config = hf_config(family, len(tok), NLI_LABELS)
  config.pop("architectures")
  config_cls = {"bert": transformers.BertConfig,
                "roberta": transformers.RobertaConfig}[family]
  model_cls = {"bert": transformers.BertForSequenceClassification,
               "roberta": transformers.RobertaForSequenceClassification}
  model = model_cls[family](
      config_cls(**config, attn_implementation="eager")).eval()
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "LayerNorm.weight" in name:
        param.copy_(1.0 + 0.2 * torch.randn_like(param))
      else:
        param.copy_(0.3 * torch.randn_like(param))
  model.save_pretrained(str(path), safe_serialization=True)
  tok.save_pretrained(str(path))
  return model, tok
