"""Tests of the NLI entailment reward."""

import json
import shutil

import numpy as np
import pytest

from gkdrl import reward_models as rm
from tests.reward_models import checkpoints

PREMISES = [
    "The cat sat on the mat.",
    "A dog ran in the park. The tree is big. " * 8,  # truncated at 72 tokens
    "",
    "A woman drives a green car on the road today.",
    "The man eats food.",
]
HYPOTHESES = [
    "The cat sat.",
    "A dog ran in the park today.",
    "The house is red.",
    "",
    "A man eats " + "food " * 40,  # long hypothesis, both sides truncated
]


@pytest.fixture(scope="module", params=["bert", "roberta"])
def torch_nli(request, tmp_path_factory, torch_module):
  """(EntailmentReward, transformers model, tokenizer) for one family."""
  path = tmp_path_factory.mktemp(request.param)
  model, tokenizer = checkpoints.write_torch_checkpoint(
      torch_module, path, request.param, seed=1)
  reward = rm.EntailmentReward(path, rm.EntailmentConfig(batch_size=2))
  return reward, model, tokenizer


@pytest.mark.torch
class TestParityWithTransformers:

  def test_logits_and_probabilities(self, torch_nli):
    import torch  # pylint: disable=g-import-not-at-top
    reward, model, tokenizer = torch_nli
    params = reward.init(None)
    logits = reward.logits(params, PREMISES, HYPOTHESES)
    probs = reward.probabilities(params, PREMISES, HYPOTHESES)
    assert logits.shape == probs.shape == (len(PREMISES), 3)
    assert logits.dtype == probs.dtype == np.float32
    for i, (premise, hypothesis) in enumerate(zip(PREMISES, HYPOTHESES)):
      # One pair at a time: the reference sees no padding at all. (Lists,
      # because a bare "" hypothesis would be taken as no pair.)
      enc = tokenizer([premise], [hypothesis], truncation="longest_first",
                      max_length=reward.max_length, return_tensors="pt")
      with torch.no_grad():
        expected = model(**enc).logits[0].double()
      np.testing.assert_allclose(logits[i], expected.numpy(), atol=1e-4,
                                 rtol=1e-4)
      np.testing.assert_allclose(
          probs[i], torch.softmax(expected, -1).numpy(), atol=1e-4)
    # The random weights make a test that a constant output would fail.
    assert np.ptp(logits[:, reward.entailment_index]) > 0.1

  def test_reward_is_the_entailment_probability(self, torch_nli):
    reward, _, _ = torch_nli
    params = reward.init(None)
    out = reward.score(params, rm.RewardInputs(sources=PREMISES,
                                               completions=HYPOTHESES))
    probs = reward.probabilities(params, PREMISES, HYPOTHESES)
    assert reward.labels[reward.entailment_index] == "ENTAILMENT"
    expected = probs[:, 1].copy()
    expected[3] = 0.0  # empty completion
    np.testing.assert_allclose(out, expected, atol=1e-6)


class TestReward:

  def test_shapes_dtype_and_range(self, bert_nli):
    model = bert_nli.reward_model()
    assert isinstance(model, rm.RewardModel) and model.on_host
    out = model.score(model.init(None), rm.RewardInputs(
        sources=PREMISES, completions=HYPOTHESES, targets=PREMISES))
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32 and out.shape == (len(PREMISES),)
    assert np.all((out >= 0) & (out <= 1))

  def test_padding_and_batching_do_not_change_scores(
      self, bert_nli, numpy_checkpoints):
    other = rm.EntailmentReward(
        numpy_checkpoints["bert"],
        rm.EntailmentConfig(batch_size=1, min_bucket=64))
    a = bert_nli.logits(bert_nli.init(None), PREMISES, HYPOTHESES)
    b = other.logits(other.init(None), PREMISES, HYPOTHESES)
    np.testing.assert_allclose(a, b, atol=1e-5)

  def test_empty_completions(self, numpy_checkpoints):
    reward = rm.EntailmentReward(
        numpy_checkpoints["roberta"], rm.EntailmentConfig(empty_score=0.25))
    params = reward.init(None)
    out = reward.score(params, rm.RewardInputs(
        sources=["The cat sat.", "The dog ran.", "The man eats."],
        completions=["", "  \n", "The man eats food."]))
    np.testing.assert_array_equal(out[:2], [0.25, 0.25])
    assert np.isfinite(out).all() and 0.0 <= out[2] <= 1.0
    all_empty = reward.score(params, rm.RewardInputs(sources=["a"],
                                                     completions=[""]))
    np.testing.assert_array_equal(all_empty, [0.25])

  def test_needs_sources_and_matching_lengths(self, bert_nli):
    with pytest.raises(ValueError, match="sources"):
      bert_nli.score(bert_nli.init(None),
                     rm.RewardInputs(completions=["The cat sat."]))
    with pytest.raises(ValueError, match="disagree"):
      bert_nli.score(bert_nli.init(None), rm.RewardInputs(
          sources=["a", "b"], completions=["The cat sat."]))
    with pytest.raises(ValueError, match="hypotheses"):
      bert_nli.logits(bert_nli.init(None), ["a", "b"], ["c"])

  def test_weighted_with_length_penalty(self, bert_nli):
    inputs = rm.RewardInputs(sources=PREMISES[:2],
                             completions=HYPOTHESES[:2])
    total = rm.weighted_sum(
        [(1.0, bert_nli), (0.5, rm.make_length_penalty(unit="words"))])
    params = total.init(np.zeros(2, np.uint32))
    out = total.score(params, inputs)
    entail = bert_nli.score(bert_nli.init(None), inputs)
    words = np.array([len(c.split()) for c in HYPOTHESES[:2]])
    np.testing.assert_allclose(out, entail - 0.5 * 0.01 * words, atol=1e-6)


class TestLabels:

  def _with_labels(self, numpy_checkpoints, tmp_path, id2label):
    path = tmp_path / "relabelled"
    shutil.copytree(numpy_checkpoints["bert"], path)
    config = json.loads((path / "config.json").read_text())
    config["id2label"] = id2label
    (path / "config.json").write_text(json.dumps(config))
    return path

  def test_missing_entailment_label_lists_labels(
      self, numpy_checkpoints, tmp_path):
    path = self._with_labels(numpy_checkpoints, tmp_path,
                             {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"})
    with pytest.raises(ValueError, match=r"LABEL_0.*LABEL_1.*LABEL_2"):
      rm.EntailmentReward(path)

  def test_label_found_case_insensitively(self, numpy_checkpoints, tmp_path):
    path = self._with_labels(
        numpy_checkpoints, tmp_path,
        {"0": "Neutral", "1": "Contradiction", "2": "Entailment"})
    assert rm.EntailmentReward(path).entailment_index == 2


class TestSentenceLevel:

  def test_matches_manual_max_over_chunks_mean_over_sentences(
      self, numpy_checkpoints):
    reward = rm.EntailmentReward(
        numpy_checkpoints["bert"],
        rm.EntailmentConfig(sentence_level=True, chunk_tokens=1,
                            batch_size=4, min_bucket=8))
    params = reward.init(None)
    sources = ["The cat sat on the mat. A dog ran in the park. The tree is "
               "big.", "The man eats food."]
    completions = ["The cat sat. The tree is red!", "A man eats."]
    out = reward.score(params, rm.RewardInputs(sources=sources,
                                               completions=completions))
    # chunk_tokens=1 puts every source sentence in its own chunk.
    chunks = [["The cat sat on the mat.", "A dog ran in the park.",
               "The tree is big."], ["The man eats food."]]
    sentences = [["The cat sat.", "The tree is red!"], ["A man eats."]]
    for b in range(2):
      p = np.array([[reward.probabilities(params, [c], [s])[0, 1]
                     for s in sentences[b]] for c in chunks[b]])
      np.testing.assert_allclose(out[b], p.max(axis=0).mean(), atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (2,)

  def test_single_chunk_and_sentence_equals_pair_score(
      self, bert_nli, numpy_checkpoints):
    sentence_level = rm.EntailmentReward(
        numpy_checkpoints["bert"],
        rm.EntailmentConfig(sentence_level=True, batch_size=4, min_bucket=8))
    inputs = rm.RewardInputs(sources=["The cat sat on the mat."],
                             completions=["The cat sat."])
    np.testing.assert_allclose(
        sentence_level.score(sentence_level.init(None), inputs),
        bert_nli.score(bert_nli.init(None), inputs), atol=1e-6)


@pytest.mark.parametrize("kwargs,field", [
    (dict(batch_size=0), "batch_size"), (dict(max_length=4), "max_length"),
    (dict(chunk_tokens=0), "chunk_tokens"), (dict(min_bucket=0), "min_bucket"),
    (dict(empty_score=float("nan")), "empty_score"), (dict(name=""), "name")])
def test_config_validation(kwargs, field):
  with pytest.raises(ValueError, match=field):
    rm.EntailmentConfig(**kwargs)
