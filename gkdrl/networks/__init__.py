"""gkdrl.networks: Haiku language models and their weights.

  ModelConfig     shape and family switches of decoder-only models (GPT-2,
                  Llama, Qwen2, SmolLM2).
  make_model      config -> LanguageModel(init, apply, hidden, unembedding,
                  init_cache, prefill, decode, and for fast decoding loops
                  prepare_decode, unstack_cache, stack_cache).
  KVCache         the decoding cache pytree (see gkdrl/networks/model.py).
  T5Config        shape and switches of T5 encoder-decoders (T5 v1.0 with
                  ReLU and a tied head; v1.1, Flan-T5, mT5 with gated GELU
                  and an untied head).
  make_t5         T5Config -> EncoderDecoderModel(init, encode,
                  decoder_hidden, hidden, apply, unembedding, init_cache,
                  prefill, decode, prepare_decode, unstack_cache,
                  stack_cache); see gkdrl/networks/t5.py.
  T5Cache         its decoding cache (self-attention keys/values and the
                  encoder output's cross-attention keys/values).
  REMAT_MODES     the `remat` settings of `hidden` and `apply` (which also
                  take `unroll`: the layers unrolled, not in a scan).
  from_pretrained HF directory (safetensors; decoder-only, T5 or mT5) or
                  GGUF file -> (model, params).
  save_pretrained (model, params) -> HF directory that transformers loads.
  lora            low-rank adapters: init_adapters, merge, num_parameters.
  save_adapters   LoRA adapters -> a PEFT directory (adapter_config.json +
                  adapter_model.safetensors).
  load_tokenizer  transformers tokenizer of an HF directory or a GGUF file.
  tokenizer_difference  how two tokenizers differ, in words, or None.
  keep_layers     (model, params, block indices) -> a shallower model made
                  of those blocks, embeddings and head copied;
                  keep_every_kth_layer keeps blocks 0, k, 2k, ... (a
                  DistilBERT / Minitron-style student initialisation).

Both model kinds say which they are: `model.is_encoder_decoder` (also
`model.config.is_encoder_decoder`).
"""

from gkdrl.networks.checkpoint import from_pretrained
from gkdrl.networks.checkpoint import save_pretrained
from gkdrl.networks import lora
from gkdrl.networks.config import ModelConfig
from gkdrl.networks.hf_weights import open_safetensors
from gkdrl.networks.layer_selection import keep_every_kth_layer
from gkdrl.networks.layer_selection import keep_layers
from gkdrl.networks.lora import save_adapters
from gkdrl.networks.model import KVCache
from gkdrl.networks.model import LanguageModel
from gkdrl.networks.model import make_model
from gkdrl.networks.model import REMAT_MODES
from gkdrl.networks.t5 import EncoderDecoderModel
from gkdrl.networks.t5 import make_t5
from gkdrl.networks.t5 import T5Cache
from gkdrl.networks.t5_config import T5Config
from gkdrl.networks.tokenizer import load_tokenizer
from gkdrl.networks.tokenizer import tokenizer_difference

__all__ = [
    "EncoderDecoderModel",
    "KVCache",
    "LanguageModel",
    "ModelConfig",
    "REMAT_MODES",
    "T5Cache",
    "T5Config",
    "from_pretrained",
    "keep_every_kth_layer",
    "keep_layers",
    "load_tokenizer",
    "make_model",
    "make_t5",
    "open_safetensors",
    "save_adapters",
    "save_pretrained",
    "tokenizer_difference",
]
