"""The one tiny-model config the agent, runner and parallel tests share."""

from gkdrl import networks


def tiny_config(task, d_model: int, n_layers: int) -> networks.ModelConfig:
  """A small Llama-family config for `task`'s tokenizer."""
  tok = task.tokenizer
  return networks.ModelConfig(
      vocab_size=len(tok), d_model=d_model, n_layers=n_layers, n_heads=2,
      n_kv_heads=1, d_ff=2 * d_model, max_positions=128,
      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
      bos_token_id=tok.bos_token_id)
