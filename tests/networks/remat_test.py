"""Rematerialisation (`remat`) and unrolling (`unroll`) of the decoder
layers, static arguments of hidden and apply."""

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
  """One model, and `value_and_grad` of a masked NLL compiled per mode (and
  per `unroll`, compiled when first asked for)."""

  def __init__(self):
    self.model = networks.make_model(CONFIG)
    self.params = jax.jit(self.model.init)(jax.random.key(0))
    self.tokens = jax.random.randint(jax.random.key(1), (B, L), 0,
                                     CONFIG.vocab_size)
    self.mask = np.ones((B, L), bool)
    self.mask[1, :PAD] = False
    self.executables = {}

  def executable(self, mode, unroll=False):
    if (mode, unroll) not in self.executables:
      self.executables[mode, unroll] = jax.jit(jax.value_and_grad(
          self._loss(mode, unroll))).lower(
              self.params, self.tokens, self.mask).compile()
    return self.executables[mode, unroll]

  def _loss(self, mode, unroll):
    def loss(params, tokens, mask):
      logits = self.model.apply(params, tokens, mask, remat=mode,
                                unroll=unroll)
      log_probs = jax.nn.log_softmax(logits[:, :-1])  # [B, L - 1, V]
      logp = jnp.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]
      return -jnp.sum(logp * mask[:, 1:]) / jnp.sum(mask[:, 1:])
    return loss

  def value_and_grad(self, mode, unroll=False):
    return self.executable(mode, unroll)(self.params, self.tokens, self.mask)

  def temp_bytes(self, mode, unroll=False):
    return self.executable(mode, unroll).memory_analysis().temp_size_in_bytes


@pytest.fixture(scope="module")
def compiled():
  return Compiled()


@pytest.mark.parametrize("mode, unroll", [("dots", False), ("full", False),
                                         ("none", True)])
def test_remat_and_unroll_give_the_same_loss_and_gradients(compiled, mode,
                                                           unroll):
  loss, grads = compiled.value_and_grad(mode, unroll)
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


def test_unrolled_layers_run_without_a_loop(compiled):
  """The point of `unroll`: no scan, so no stacked buffers for the
  backward pass (see `gkdrl.agents.base.student_unroll`)."""
  assert "while" in compiled.executable("none").as_text()
  assert "while" not in compiled.executable("none", True).as_text()


def test_unrolled_layers_need_about_the_memory_of_the_scan(compiled):
  # The scan's stacked buffers for the backward pass are gone; the same
  # activations are kept, one [B, H, L, L] array of probabilities per layer
  # for the attention's backward pass (`layers.softmax`). XLA's scratch
  # memory: 22.8 MB unrolled against 20.0 MB in the scan (CPU, jax 0.10.2).
  # Not a second set of those arrays (which would add `attention`).
  attention = CONFIG.n_layers * B * CONFIG.n_heads * L * L * 4  # bytes
  unrolled = compiled.temp_bytes("none", True)
  scan = compiled.temp_bytes("none")
  assert unrolled < scan + 0.5 * attention, (unrolled, scan, attention)


def test_bad_unroll_is_rejected(compiled):
  model, params = compiled.model, compiled.params
  for fn in (model.hidden, model.apply):
    with pytest.raises(ValueError, match="unroll must be True or False.*1"):
      fn(params, compiled.tokens[:, :4], unroll=1)
    # Unrolled, rematerialisation would save nothing.
    with pytest.raises(ValueError, match="unroll=True needs remat='none'.*"
                       "remat='full'"):
      fn(params, compiled.tokens[:, :4], remat="full", unroll=True)
