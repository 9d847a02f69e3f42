"""Tests of the T5 yes/no judge reward against Hugging Face PyTorch T5."""

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
import transformers

from gkdrl import reward_models as rm
from gkdrl.reward_models import t5_judge
from tests.networks import hf_t5_models

PREMISES = ["the cat sat on the mat.", "the dog sat.",
            "the cat sat on the mat. the dog sat on the cat. the mat sat.",
            "a dog."]
HYPOTHESES = ["the cat sat.", "the dog sat on the mat. yes.", "no.",
              "the cat sat on the dog."]


def tiny_t5_tokenizer():
  """A T5 tokenizer built offline, with the judge's words and labels."""
  words = ["▁premise:", "▁hypothesis:", "▁1", "▁0", "▁yes", "▁no", "▁the",
           "▁cat", "▁sat", "▁on", "▁mat", "▁dog", "▁a", "▁"]
  chars = list("abcdefghijklmnopqrstuvwxyz.:01")
  vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [
      (p, -1.0 - 0.1 * i) for i, p in enumerate(words + chars)]
  assert len(vocab) <= hf_t5_models.VOCAB_SIZE
  backend = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=2))
  backend.pre_tokenizer = pre_tokenizers.Metaspace()
  backend.decoder = decoders.Metaspace()
  return transformers.T5TokenizerFast(
      tokenizer_object=backend, eos_token="</s>", pad_token="<pad>",
      unk_token="<unk>", extra_ids=0)


@pytest.fixture(scope="module", params=hf_t5_models.T5_NAMES)
def judge_dir(request, tmp_path_factory, torch_module):
  path = tmp_path_factory.mktemp(f"judge_{request.param}")
  hf = hf_t5_models.save_random_t5(request.param, path, torch_module)
  tokenizer = tiny_t5_tokenizer()
  tokenizer.save_pretrained(path)
  return path, hf, tokenizer


def _hf_scores(torch, hf, tokenizer, texts, labels):
  """HF's first-step P(label 0) normalised over the two label tokens."""
  ids = [tokenizer(label, add_special_tokens=False).input_ids[0]
         for label in labels]
  out = []
  for text in texts:  # one row at a time: no padding in the reference
    enc = tokenizer(text, return_tensors="pt")
    start = torch.full((1, 1), hf.config.decoder_start_token_id)
    with torch.no_grad():
      logits = hf(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                  decoder_input_ids=start).logits[0, 0, ids].double()
    out.append(torch.softmax(logits, -1)[0].item())
  return np.array(out)


@pytest.mark.parametrize("labels,template", [
    (("1", "0"), t5_judge.TRUE_TEMPLATE),
    (("yes", "no"), "hypothesis: {hypothesis} premise: {premise}"),
])
def test_pair_scores_match_hugging_face(judge_dir, torch_module, labels,
                                        template):
  path, hf, tokenizer = judge_dir
  judge = rm.T5JudgeReward(path, rm.T5JudgeConfig(
      positive_label=labels[0], negative_label=labels[1], template=template,
      batch_size=4, min_bucket=8))
  got = judge.pair_scores(judge.init(), PREMISES, HYPOTHESES)
  texts = [template.format(premise=p, hypothesis=h)
           for p, h in zip(PREMISES, HYPOTHESES)]
  expected = _hf_scores(torch_module, hf, tokenizer, texts, labels)
  assert np.ptp(expected) > 1e-3  # the scores depend on the input
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_score_is_document_pair_score_and_empty_gets_empty_score(judge_dir):
  path = judge_dir[0]
  judge = rm.T5JudgeReward(path, rm.T5JudgeConfig(empty_score=-1.0,
                                                  batch_size=2))
  params = judge.init()
  rewards = judge.score(params, rm.RewardInputs(
      sources=PREMISES[:3], completions=[HYPOTHESES[0], "  ", HYPOTHESES[2]]))
  pairs = judge.pair_scores(params, [PREMISES[0], PREMISES[2]],
                            [HYPOTHESES[0], HYPOTHESES[2]])
  np.testing.assert_allclose(rewards, [pairs[0], -1.0, pairs[1]], atol=1e-6)


def test_sentence_granularity_is_the_mean_over_sentences(judge_dir):
  path = judge_dir[0]
  judge = rm.T5JudgeReward(path, rm.T5JudgeConfig(granularity="sentence"))
  params = judge.init()
  reward = judge.score(params, rm.RewardInputs(
      sources=[PREMISES[0]], completions=["the cat sat. the dog sat."]))
  pairs = judge.pair_scores(params, [PREMISES[0]] * 2,
                            ["the cat sat.", "the dog sat."])
  np.testing.assert_allclose(reward, [pairs.mean()], atol=1e-6)


def test_multi_token_label_is_a_clear_error(judge_dir):
  with pytest.raises(ValueError, match=r"positive label='cat sat' is not "
                     r"allowed; it must be a single token of the tokenizer; "
                     r"it is 2 tokens"):
    rm.T5JudgeReward(judge_dir[0], rm.T5JudgeConfig(positive_label="cat sat"))


@pytest.mark.parametrize("options,match", [
    (dict(template="premise: {premise}"), "template="),
    (dict(negative_label="1"), "negative_label='1' is not allowed"),
    (dict(max_length=4), "max_length=4"),
    (dict(granularity="page"), "granularity="),
])
def test_config_rejects_bad_options(options, match):
  with pytest.raises(ValueError, match=match):
    rm.T5JudgeConfig(**options)


def test_directory_dispatch_makes_the_same_judge(judge_dir):
  path = judge_dir[0]
  assert rm.directory_kind(path) == "t5_judge"
  reward = rm.make_directory_reward(path, kinds=("entailment", "t5_judge"))
  judge = rm.T5JudgeReward(path)
  inputs = rm.RewardInputs(sources=PREMISES, completions=HYPOTHESES)
  np.testing.assert_allclose(reward.score(reward.init(), inputs),
                             judge.score(judge.init(), inputs), atol=1e-6)
