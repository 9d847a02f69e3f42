"""gkdrl.networks: decoder-only Haiku language models and their weights.

  ModelConfig     shape and family switches (GPT-2, Llama, Qwen2, SmolLM2).
  make_model      config -> LanguageModel(init, apply, hidden, unembedding,
                  init_cache, prefill, decode, and for fast decoding loops
                  prepare_decode, unstack_cache, stack_cache).
  KVCache         the decoding cache pytree (see gkdrl/networks/model.py).
  REMAT_MODES     the `remat` settings of `hidden` and `apply`.
  from_pretrained HF directory (safetensors) or GGUF file -> (model, params).
  save_pretrained (model, params) -> HF directory that transformers loads.
  load_tokenizer  transformers tokenizer of an HF directory or a GGUF file.
"""

from gkdrl.networks.checkpoint import from_pretrained
from gkdrl.networks.checkpoint import save_pretrained
from gkdrl.networks.config import ModelConfig
from gkdrl.networks.model import KVCache
from gkdrl.networks.model import LanguageModel
from gkdrl.networks.model import make_model
from gkdrl.networks.model import REMAT_MODES
from gkdrl.networks.tokenizer import load_tokenizer

__all__ = [
    "KVCache",
    "LanguageModel",
    "ModelConfig",
    "REMAT_MODES",
    "from_pretrained",
    "load_tokenizer",
    "make_model",
    "save_pretrained",
]
