"""Tiny random DeBERTa-v2 / v3 NLI checkpoints and their tokenizer, offline.

The tokenizer is a real `DebertaV2Tokenizer` built from a `tokenizers`
Unigram model over `checkpoints.WORDS` (no sentencepiece file, no hub), with
DeBERTa's "[CLS] A [SEP] B [SEP]" pair template and segment ids.
"""

import pathlib

from tests.reward_models import checkpoints

SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?"
BASE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=96,
            hidden_act="gelu", layer_norm_eps=1e-7, pad_token_id=0)
# What DeBERTa-v2 checkpoints look like: absolute positions, p2c|c2p
# attention over plain distances, segment ids, the convolution.
V2 = dict(BASE, position_biased_input=True, relative_attention=True,
          pos_att_type="p2c|c2p", max_relative_positions=-1,
          type_vocab_size=2, conv_kernel_size=3, conv_act="gelu",
          norm_rel_ebd="layer_norm")
# DeBERTa-v3: no absolute positions, 256 log buckets, shared keys.
V3 = dict(BASE, position_biased_input=False, relative_attention=True,
          pos_att_type=["p2c", "c2p"], max_relative_positions=512,
          position_buckets=256, share_att_key=True, norm_rel_ebd="layer_norm",
          type_vocab_size=0)
# V3 with few buckets, so that short test inputs reach the log buckets.
V3_LOG = dict(V3, position_buckets=8, max_relative_positions=64)
VARIANTS = {"v2": V2, "v3": V3, "v3_log": V3_LOG}


def deberta_tokenizer():
  """A DebertaV2Tokenizer over `checkpoints.WORDS` (pad id 0)."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  pieces = ([(s, 0.0) for s in SPECIALS]
            + [("\u2581" + w, -2.0) for w in checkpoints.WORDS]
            + [(w, -3.0) for w in checkpoints.WORDS]
            + [(c, -5.0) for c in "\u2581" + CHARACTERS])
  tok = tokenizers.Tokenizer(models.Unigram(pieces, unk_id=3))
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.decoder = decoders.Metaspace()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
  return transformers.DebertaV2TokenizerFast(
      tokenizer_object=tok, bos_token="[CLS]", eos_token="[SEP]",
      unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
      cls_token="[CLS]", mask_token="[MASK]")


def write_torch_deberta(torch, path, variant: str, *, seed=0, **overrides):
  """Builds a random DebertaV2ForSequenceClassification and saves it.

  Args:
    torch: the torch module.
    path: the directory to write (config.json, safetensors, tokenizer).
    variant: a key of `VARIANTS`.
    seed: torch seed of the weights.
    **overrides: config.json entries to change.

  Returns:
    `(model, tokenizer)`, the PyTorch model in eval mode.
  """
  import transformers  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  tok = deberta_tokenizer()
  labels = checkpoints.NLI_LABELS
  config = transformers.DebertaV2Config(
      **VARIANTS[variant], **overrides, vocab_size=len(tok),
      id2label=labels, label2id={v: k for k, v in labels.items()},
      attn_implementation="eager")
  model = transformers.DebertaV2ForSequenceClassification(config).eval()
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
