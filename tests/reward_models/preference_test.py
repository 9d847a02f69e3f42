"""Tests of the learned preference reward (decoder + scalar head)."""

import json

import jax
import numpy as np
import pytest

from gkdrl import networks
from gkdrl import reward_models as rm
from gkdrl.reward_models import preference
from gkdrl.reward_models import preference_training as pt
from tests.reward_models import checkpoints

VOCAB = 64
FAMILIES = {
    "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=48,
                  max_position_embeddings=64),
    "qwen2": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=48,
                  max_position_embeddings=64),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                 bos_token_id=1, eos_token_id=1),
}


def write_reward_model(torch, path, family, *, seed=0, vocab=VOCAB):
  """A random one-label *ForSequenceClassification, saved; returns it."""
  import transformers  # pylint: disable=g-import-not-at-top
  classes = {
      "llama": (transformers.LlamaConfig,
                transformers.LlamaForSequenceClassification),
      "qwen2": (transformers.Qwen2Config,
                transformers.Qwen2ForSequenceClassification),
      "gpt2": (transformers.GPT2Config,
               transformers.GPT2ForSequenceClassification),
  }
  config_cls, model_cls = classes[family]
  model = model_cls(config_cls(
      **FAMILIES[family], vocab_size=vocab, num_labels=1, pad_token_id=0,
      attn_implementation="eager")).eval()
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("norm.weight") or ".ln_" in name or "ln_f.w" in name:
        param.copy_(1.0 + 0.2 * torch.randn_like(param))
      else:
        param.copy_(0.2 * torch.randn_like(param))
  model.save_pretrained(str(path), safe_serialization=True)
  return model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def torch_rm(request, tmp_path_factory, torch_module):
  path = tmp_path_factory.mktemp(request.param)
  model = write_reward_model(torch_module, path, request.param)
  return path, model


def _batch():
  rng = np.random.default_rng(0)
  lengths = [9, 3, 14, 6]
  tokens = np.zeros((4, 16), np.int32)  # right-padded with pad id 0
  for i, n in enumerate(lengths):
    tokens[i, :n] = rng.integers(1, VOCAB, n)
  return tokens, tokens != 0, lengths


@pytest.mark.torch
class TestParityWithTransformers:

  def test_scores_of_padded_batches(self, torch_rm):
    import torch  # pylint: disable=g-import-not-at-top
    path, reference = torch_rm
    model = preference.load_preference_model(path)
    tokens, mask, lengths = _batch()
    ours = jax.jit(lambda p, t, m: preference.sequence_rewards(
        model, p, t, m))(model.params, tokens, mask)
    with torch.no_grad():
      expected = reference(
          input_ids=torch.from_numpy(tokens).long(),
          attention_mask=torch.from_numpy(mask).long()).logits[:, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)
    assert np.ptp(expected) > 0.1  # a constant reward would fail
    # Left padding (the policy's prompt layout) gives the same scores.
    left = np.zeros_like(tokens)
    for i, n in enumerate(lengths):
      left[i, -n:] = tokens[i, :n]
    np.testing.assert_allclose(
        preference.sequence_rewards(model, model.params, left, left != 0),
        expected, atol=1e-4, rtol=1e-4)

  def test_device_reward_from_prompt_and_completion_tokens(self, torch_rm):
    import torch  # pylint: disable=g-import-not-at-top
    path, reference = torch_rm
    reward = rm.make_preference_reward(path, on_host=False)
    assert not reward.on_host
    prompts = np.array([[0, 0, 5, 6], [7, 8, 9, 10]], np.int32)  # left-pad
    completions = np.array([[11, 12, 0], [13, 0, 0]], np.int32)  # right-pad
    inputs = rm.RewardInputs(
        prompt_tokens=prompts, prompt_mask=prompts != 0,
        completion_tokens=completions, completion_mask=completions != 0)
    out = jax.jit(reward.score)(reward.init(None), inputs)
    rows = [[5, 6, 11, 12], [7, 8, 9, 10, 13]]
    with torch.no_grad():
      expected = [reference(input_ids=torch.tensor([r])).logits[0, 0].item()
                  for r in rows]
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.torch
def test_host_reward_scores_source_plus_completion(tmp_path, torch_module):
  import torch  # pylint: disable=g-import-not-at-top
  tokenizer = checkpoints.bert_tokenizer()
  reference = write_reward_model(torch_module, tmp_path, "llama",
                                 vocab=len(tokenizer))
  tokenizer.save_pretrained(str(tmp_path))
  reward = rm.make_preference_reward(tmp_path, batch_size=2)
  sources = ["The cat sat on the mat. ", "A dog ran. ", "The man "]
  completions = ["The cat sat.", "The tree is big and green today.", "eats."]
  out = reward.score(reward.init(None), rm.RewardInputs(
      sources=sources, completions=completions))
  assert reward.on_host and out.dtype == np.float32 and out.shape == (3,)
  for i, (s, c) in enumerate(zip(sources, completions)):
    ids = torch.tensor([tokenizer(s + c)["input_ids"]])
    with torch.no_grad():
      expected = reference(input_ids=ids).logits[0, 0].item()
    np.testing.assert_allclose(out[i], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.torch
def test_host_reward_reads_the_rendered_prompt(tmp_path, torch_module):
  """With `format_prompt`, the text scored is the task's prompt (what
  `train_reward`'s pairs hold), not the raw source."""
  tokenizer = checkpoints.bert_tokenizer()
  write_reward_model(torch_module, tmp_path, "llama", vocab=len(tokenizer))
  tokenizer.save_pretrained(str(tmp_path))
  render = lambda source: f"Summarize: {source} Summary:"
  sources = ["The cat sat on the mat.", "A dog ran."]
  completions = ["The cat sat.", "The dog ran fast."]
  score = lambda reward, s: reward.score(reward.init(None), rm.RewardInputs(
      sources=s, completions=completions))
  rendered = score(rm.make_preference_reward(tmp_path, format_prompt=render),
                   sources)
  expected = score(rm.make_preference_reward(tmp_path),
                   [render(s) for s in sources])
  raw = score(rm.make_preference_reward(tmp_path), sources)
  np.testing.assert_allclose(rendered, expected, atol=1e-6)
  assert np.abs(rendered - raw).max() > 1e-4


def test_rejects_more_than_one_label(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(dict(
      model_type="llama", id2label={"0": "a", "1": "b"}, vocab_size=8,
      hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=8)))
  with pytest.raises(ValueError, match="num_labels=2 is not allowed"):
    preference.load_preference_model(tmp_path)


def test_device_reward_leaves_out_the_completions_eos(tmp_path):
  # Decoded text (the host path, train_reward's pairs) has no EOS, so the
  # device path scores a finished completion where its text ends.
  lm = networks.make_model(networks.ModelConfig(
      model_type="llama", vocab_size=VOCAB, d_model=32, n_layers=2,
      n_heads=4, n_kv_heads=2, d_ff=48, max_positions=64, pad_token_id=0,
      eos_token_id=2))
  networks.save_pretrained(lm, lm.init(jax.random.key(0)), tmp_path / "lm")
  pt.save_preference_model(pt.init_from_causal_lm(
      str(tmp_path / "lm"), jax.random.key(1), head_scale=1.0),
      tmp_path / "rm")
  reward = rm.make_preference_reward(tmp_path / "rm", on_host=False)
  params = reward.init(None)
  prompts = np.array([[0, 5, 6], [7, 8, 9]], np.int32)  # left-padded
  finished = np.array([[11, 12, 2], [13, 2, 0]], np.int32)  # EOS, then pad
  cut = np.where(finished == 2, 0, finished)  # the same without EOS

  def score(completions, mask):
    return jax.jit(reward.score)(params, rm.RewardInputs(
        prompt_tokens=prompts, prompt_mask=prompts != 0,
        completion_tokens=completions, completion_mask=mask))

  with_eos = score(finished, finished != 0)
  np.testing.assert_allclose(with_eos, score(cut, cut != 0), atol=1e-6)
  tokens = np.concatenate([prompts, finished], axis=1)
  at_eos = preference.sequence_rewards(
      preference.load_preference_model(tmp_path / "rm"), params, tokens,
      tokens != 0)
  assert np.abs(np.asarray(at_eos) - np.asarray(with_eos)).min() > 1e-3
