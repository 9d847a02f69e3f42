"""Tests of the Bradley-Terry reward-model training blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gkdrl import networks
from gkdrl.reward_models import preference
from gkdrl.reward_models import preference_training as pt

CONFIGS = {
    "llama": networks.ModelConfig(
        model_type="llama", vocab_size=32, d_model=16, n_layers=2, n_heads=2,
        d_ff=32, max_positions=64, tie_embeddings=False, pad_token_id=0),
    "gpt2": networks.ModelConfig(
        model_type="gpt2", vocab_size=32, d_model=16, n_layers=2, n_heads=2,
        d_ff=32, max_positions=64, norm="layer", activation="gelu_new",
        gated_mlp=False, position="learned", qkv_bias=True, out_bias=True,
        mlp_bias=True, pad_token_id=0),
}


def _causal_lm(tmp_path, family):
  config = CONFIGS[family]
  model = networks.make_model(config)
  params = model.init(jax.random.key(1))
  networks.save_pretrained(model, params, tmp_path / "lm")
  return model, params, tmp_path / "lm"


def test_bradley_terry_loss_against_float64():
  chosen = np.array([1.0, -0.5, 2.0, 0.0], np.float32)
  rejected = np.array([0.0, 0.5, 2.5, 0.0], np.float32)
  loss, metrics = pt.bradley_terry_loss(jnp.asarray(chosen),
                                        jnp.asarray(rejected), margin=0.5)
  diff = chosen.astype(np.float64) - rejected
  expected = np.mean(np.log1p(np.exp(-(diff - 0.5))))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert metrics["reward/accuracy"] == 0.25
  np.testing.assert_allclose(metrics["reward/margin"], diff.mean(), rtol=1e-6)
  with pytest.raises(ValueError, match="margin=nan is not allowed"):
    pt.bradley_terry_loss(jnp.asarray(chosen), jnp.asarray(rejected),
                          margin=float("nan"))


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_init_keeps_the_lm_backbone_and_round_trips(tmp_path, family):
  lm, lm_params, path = _causal_lm(tmp_path, family)
  model = pt.init_from_causal_lm(str(path), jax.random.key(0),
                                 head_scale=1.0)
  tokens = np.array([[3, 4, 5, 0], [6, 7, 0, 0]], np.int32)
  mask = tokens != 0
  np.testing.assert_allclose(
      model.backbone.hidden(model.params["backbone"], tokens, mask),
      lm.hidden(lm_params, tokens, mask), atol=1e-6)
  scores = preference.sequence_rewards(model, model.params, tokens, mask)
  saved = pt.save_preference_model(model, tmp_path / "rm")
  loaded = preference.load_preference_model(saved)
  np.testing.assert_allclose(
      preference.sequence_rewards(loaded, loaded.params, tokens, mask),
      scores, atol=1e-6)
  assert np.ptp(np.asarray(scores)) > 1e-3


@pytest.mark.torch
@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_saved_directory_loads_in_transformers_with_same_scores(
    tmp_path, family, torch):
  import transformers  # pylint: disable=g-import-not-at-top
  _, _, path = _causal_lm(tmp_path, family)
  model = pt.init_from_causal_lm(str(path), jax.random.key(0),
                                 head_scale=1.0)
  saved = pt.save_preference_model(model, tmp_path / "rm")
  reference = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(saved), attn_implementation="eager").eval()
  tokens = np.array([[3, 4, 5, 9, 0], [6, 7, 0, 0, 0]], np.int32)
  with torch.no_grad():
    expected = reference(input_ids=torch.from_numpy(tokens).long(),
                         attention_mask=torch.from_numpy(tokens != 0).long()
                         ).logits[:, 0].numpy()
  ours = preference.sequence_rewards(model, model.params, tokens, tokens != 0)
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


def _pairs(rng, n):
  """Chosen rows hold token 7 somewhere; rejected rows never do."""
  chosen = rng.integers(8, 32, (n, 6)).astype(np.int32)
  chosen[np.arange(n), rng.integers(0, 6, n)] = 7
  rejected = rng.integers(8, 32, (n, 6)).astype(np.int32)
  ones = np.ones((n, 6), bool)
  return pt.PreferencePairs(chosen, ones, rejected, ones)


def test_training_learns_a_held_out_preference(tmp_path):
  _, _, path = _causal_lm(tmp_path, "llama")
  model = pt.init_from_causal_lm(str(path), jax.random.key(0))
  optimizer = optax.adam(3e-3)
  update = pt.make_preference_update(model, optimizer)
  params, opt_state = model.params, optimizer.init(model.params)
  rng = np.random.default_rng(0)
  held_out = _pairs(rng, 64)
  _, before = pt.pair_loss(model, params, held_out)
  for _ in range(60):
    params, opt_state, metrics = update(params, opt_state, _pairs(rng, 16))
  _, after = pt.pair_loss(model, params, held_out)
  assert np.isfinite(metrics["grad/norm"])
  assert before["reward/accuracy"] == 0.0  # the zero head ties every pair
  assert after["reward/accuracy"] >= 0.9, after


def test_encode_pairs_pads_both_sides_to_one_bucket_and_keeps_the_end():
  from gkdrl import tasks  # pylint: disable=g-import-not-at-top
  tokenizer = tasks.make_word_tokenizer("a b c d e f".split())
  pairs = pt.encode_pairs(tokenizer, ["a b", "c"], ["c d e f", "d"],
                          ["e", "f f"], max_length=4, min_bucket=2)
  ids = lambda text: tokenizer(text)["input_ids"]
  assert pairs.chosen_tokens.shape == pairs.rejected_tokens.shape == (2, 4)
  # "a b c d e f" with <bos> is 7 tokens: the last 4 are kept.
  np.testing.assert_array_equal(pairs.chosen_tokens[0], ids("a b c d e f")[-4:])
  np.testing.assert_array_equal(pairs.rejected_tokens[1, :4],
                                ids("c f f"))
  np.testing.assert_array_equal(pairs.chosen_mask.sum(1), [4, 3])
  np.testing.assert_array_equal(pairs.rejected_mask.sum(1), [4, 4])
  assert preference.join_text("p ", "r") == "p r"
  assert preference.join_text("p", "r") == "p r"
