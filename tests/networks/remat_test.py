"""Rematerialisation of the decoder layers (`remat` of hidden and apply)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks

B, L = 2, 256  # long enough that the [B, H, L, L] attention arrays dominate
PAD = 40  # left padding of the second row
CONFIG = networks.ModelConfig(
    model_type="llama", vocab_size=101, d_model=32, n_layers=4, n_heads=4,
    n_kv_heads=2, d_ff=48, max_positions=L, eos_token_id=2, pad_token_id=0)


class Compiled:
  """One model, and `value_and_grad` of a masked NLL compiled per mode."""

  def __init__(self):
    self.model = networks.make_model(CONFIG)
    self.params = jax.jit(self.model.init)(jax.random.key(0))
    self.tokens = jax.random.randint(jax.random.key(1), (B, L), 0,
                                     CONFIG.vocab_size)
    self.mask = np.ones((B, L), bool)
    self.mask[1, :PAD] = False
    self.executables = {
        mode: jax.jit(jax.value_and_grad(self._loss(mode))).lower(
            self.params, self.tokens, self.mask).compile()
        for mode in networks.REMAT_MODES}

  def _loss(self, mode):
    def loss(params, tokens, mask):
      logits = self.model.apply(params, tokens, mask, remat=mode)
      log_probs = jax.nn.log_softmax(logits[:, :-1])  # [B, L - 1, V]
      logp = jnp.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]
      return -jnp.sum(logp * mask[:, 1:]) / jnp.sum(mask[:, 1:])
    return loss

  def value_and_grad(self, mode):
    return self.executables[mode](self.params, self.tokens, self.mask)

  def temp_bytes(self, mode):
    return self.executables[mode].memory_analysis().temp_size_in_bytes


@pytest.fixture(scope="module")
def compiled():
  return Compiled()


@pytest.mark.parametrize("mode", ["dots", "full"])
def test_remat_gives_the_same_loss_and_gradients(compiled, mode):
  loss, grads = compiled.value_and_grad(mode)
  want_loss, want_grads = compiled.value_and_grad("none")
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  assert jax.tree.structure(grads) == jax.tree.structure(want_grads)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    assert np.any(want != 0)
    np.testing.assert_allclose(got, want, rtol=1e-5,
                               atol=1e-6 * np.abs(want).max())


def test_remat_reduces_the_backward_pass_memory(compiled):
  # XLA's own account of the compiled programs' scratch memory: without
  # remat the backward pass keeps every layer's [B, H, L, L] attention.
  temp = {mode: compiled.temp_bytes(mode) for mode in networks.REMAT_MODES}
  attention = CONFIG.n_layers * B * CONFIG.n_heads * L * L * 4  # bytes
  assert temp["none"] > attention, temp
  assert temp["dots"] < 0.5 * temp["none"], temp
  # "full" keeps a subset of what "dots" keeps.
  assert temp["full"] < temp["dots"], temp


def test_bad_remat_is_rejected(compiled):
  model, params = compiled.model, compiled.params
  for fn in (model.hidden, model.apply):
    with pytest.raises(ValueError,
                       match="remat='layers'.*'none', 'dots', 'full'"):
      fn(params, compiled.tokens[:, :4], remat="layers")
  with pytest.raises(ValueError, match="remat=None"):
    model.hidden(params, compiled.tokens[:, :4], remat=None)
