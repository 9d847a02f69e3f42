"""gkdrl.reward_models: rewards `[B]` float32 on finished sequences.

One interface for every reward model
------------------------------------

A reward model is a `RewardModel(name, on_host, init, score)`, a NamedTuple
of pure functions built by a `make_*` factory (the optax pattern):

    rm = make_rouge_reward("rougeL")
    params = rm.init(key)                       # () for parameter-free models
    rewards = rm.score(params, RewardInputs(    # [B] float32
        sources=prompts, completions=texts, targets=references))

`RewardInputs` carries everything a model may read about B finished
sequences; fields a model does not need may be None:

    sources            B source documents / prompts (str)
    completions        B decoded completions (str)
    targets            B references, e.g. dataset targets (str)
    prompt_tokens      [B, P] int32, left-padded     prompt_mask      [B, P]
    completion_tokens  [B, T] int32, right-padded    completion_mask  [B, T]

`on_host` says where `score` runs:

* `on_host=True`: a Python function of decoded text (ROUGE, exact match,
  task oracles, the entailment model with its own tokenizer). The agent calls
  it on the host between sampling and the update and gets `np.ndarray [B]
  float32`.
* `on_host=False`: a function of the policy's own token arrays only (e.g.
  `make_length_penalty(unit="tokens")`). It is jittable: call it inside the
  jitted scoring pass with `inputs.arrays_only()` and get `jax.Array [B]`.

Pretrained models return their loaded weights from `init` (the key is
unused), and those weights are an argument of every jitted forward, never a
closed-over constant.

The neural models (NLI, T5 judge, preference) take `mesh=`, the training
mesh (`train` passes its `--mesh`): `init` then places their weights by
`gkdrl.parallel`'s rules and every padded bucket runs jitted with its rows
split over the batch axes, so the reward forward runs on the devices the
policy trains on (`placement`).

Every score validates its inputs and raises ValueError on missing fields,
batch fields that disagree on B, a single string where a list is expected,
or rewards of the wrong shape or with NaN/Inf.

Reward models
-------------

* `EntailmentReward(path, EntailmentConfig(...))` / `make_entailment_reward`:
  P(entailment | premise=source, hypothesis=completion) from a local HF
  BERT, RoBERTa or DeBERTa-v2/v3 NLI checkpoint run by our Haiku models (the
  architecture comes from config.json's `model_type` through
  `load_sequence_classifier`'s registry); empty completions score
  `empty_score` (0.0). `granularity` sets how a row becomes NLI pairs:
  "document" (1 pair), "sentence" (S summary sentences against the source)
  or "summac" (SummaC-ZS: S sentences x C source chunks, max over chunks,
  mean over sentences, for sources longer than the model's input);
  `nli_score="entailment_minus_contradiction"` scores P(e) - P(c).
* `T5JudgeReward(path, T5JudgeConfig(...))` / `make_t5_judge_reward`: a
  T5 yes/no judge (TRUE NLI by default): the input `template` ("premise:
  {premise} hypothesis: {hypothesis}"), one decoder step, and the reward is
  P(positive_label) normalised over the two single-token labels ("1"/"0";
  e.g. "yes"/"no" for a generic judge); same `granularity` and
  `empty_score` options as `EntailmentReward`.
* `make_preference_reward(path, on_host=True)`: a learned reward model, a
  one-label HF `*ForSequenceClassification` checkpoint on a Llama, Qwen2 or
  GPT-2 backbone (`load_preference_model`, run by `gkdrl.networks`' decoder):
  the `score` head at the last real token. On the host it scores
  `join_text(source, completion)` (a space between them) with the
  checkpoint's tokenizer; with `on_host=False` it scores the policy's own
  prompt and completion tokens inside `jax.jit` (`sequence_rewards`), for
  policies sharing its tokenizer.
* Training one (`preference_training`; `python -m
  gkdrl.runners.train_reward` runs it): `bradley_terry_loss` (-log
  sigmoid(r_chosen - r_rejected - margin)), `init_from_causal_lm` (a causal
  LM's decoder with a new score head), `encode_pairs`,
  `make_preference_update` (a jitted optax step on `PreferencePairs`) and
  `save_preference_model` (a directory
  `transformers.AutoModelForSequenceClassification` loads with the same
  scores).
* `make_rouge_reward(metric)` (`RougeReward`): rouge-score F-measure against
  `targets`; unknown metric names raise ValueError.
* `make_exact_match_reward()` (`ExactMatchReward`): GSM8K "####" final
  answers, compared numerically (no "####" scores 0 unless
  `fallback="last_number"`).
* `make_python_reward(fn)` (`PythonReward`): any
  `fn(sources, completions, targets) -> [B]`; `task_reward(task, name)`
  wraps one of a built-in task's `reward_fns` (or any such callable) the
  same way, without importing the tasks package.
* `make_length_penalty(scale, unit)` (`LengthPenalty`):
  `-scale * max(length - free_length, 0)`, already negative.
* `weighted_sum([(w, rm), ...])`: `sum_i w_i r_i`. Weights must be finite
  and >= 0: penalties carry their own sign, so "entailment minus a length
  penalty" is `weighted_sum([(1.0, ent), (0.01, make_length_penalty())])`.

The encoder (`EncoderConfig`, `make_encoder`, `make_sequence_classifier`,
`load_encoder`) also loads a plain `BertModel` directory; the DeBERTa-v2/v3
model (`DebertaConfig`, `make_deberta`, `make_deberta_classifier`,
`load_deberta`) a plain `DebertaV2Model` one.
"""

from gkdrl.reward_models.base import as_reward_model
from gkdrl.reward_models.base import check_inputs
from gkdrl.reward_models.base import check_rewards
from gkdrl.reward_models.base import RewardInputs
from gkdrl.reward_models.base import RewardModel
from gkdrl.reward_models.base import weighted_sum
from gkdrl.reward_models.classifiers import load_sequence_classifier
from gkdrl.reward_models.classifiers import register_architecture
from gkdrl.reward_models.classifiers import SequenceClassifier
from gkdrl.reward_models.deberta import DebertaConfig
from gkdrl.reward_models.deberta import make_deberta
from gkdrl.reward_models.deberta import make_deberta_classifier
from gkdrl.reward_models.deberta_weights import deberta_config_from_hf
from gkdrl.reward_models.deberta_weights import load_deberta
from gkdrl.reward_models.document_scoring import chunk_by_sentences
from gkdrl.reward_models.encoder import EncoderConfig
from gkdrl.reward_models.encoder import make_encoder
from gkdrl.reward_models.encoder import make_sequence_classifier
from gkdrl.reward_models.encoder_weights import encoder_config_from_hf
from gkdrl.reward_models.encoder_weights import load_encoder
from gkdrl.reward_models.encoder_weights import read_safetensors
from gkdrl.reward_models.sentences import chunk_document
from gkdrl.reward_models.directories import directory_kind
from gkdrl.reward_models.directories import make_directory_reward
from gkdrl.reward_models.entailment import EntailmentConfig
from gkdrl.reward_models.entailment import EntailmentReward
from gkdrl.reward_models.entailment import make_entailment_reward
from gkdrl.reward_models.t5_judge import T5JudgeConfig
from gkdrl.reward_models.t5_judge import T5JudgeReward
from gkdrl.reward_models.t5_judge import make_t5_judge_reward
from gkdrl.reward_models.sentences import split_sentences
from gkdrl.reward_models.preference import join_text
from gkdrl.reward_models.preference import load_preference_model
from gkdrl.reward_models.preference import make_preference_reward
from gkdrl.reward_models.preference import PreferenceModel
from gkdrl.reward_models.preference import sequence_rewards
from gkdrl.reward_models.preference_training import bradley_terry_loss
from gkdrl.reward_models.preference_training import encode_pairs
from gkdrl.reward_models.preference_training import init_from_causal_lm
from gkdrl.reward_models.preference_training import make_preference_update
from gkdrl.reward_models.preference_training import pair_loss
from gkdrl.reward_models.preference_training import PreferencePairs
from gkdrl.reward_models.preference_training import save_preference_model
from gkdrl.reward_models.python_reward import make_length_penalty
from gkdrl.reward_models.python_reward import make_python_reward
from gkdrl.reward_models.python_reward import task_reward
from gkdrl.reward_models.text_metrics import extract_final_answer
from gkdrl.reward_models.text_metrics import make_exact_match_reward
from gkdrl.reward_models.text_metrics import make_rouge_reward
from gkdrl.reward_models.text_metrics import normalize_answer

# The names used in the project's issue; the same factories.
ExactMatchReward = make_exact_match_reward
LengthPenalty = make_length_penalty
PythonReward = make_python_reward
RougeReward = make_rouge_reward

__all__ = [
    "as_reward_model", "bradley_terry_loss", "check_inputs", "check_rewards",
    "chunk_by_sentences", "chunk_document", "deberta_config_from_hf",
    "DebertaConfig", "directory_kind", "encode_pairs",
    "encoder_config_from_hf", "EncoderConfig",
    "EntailmentConfig", "EntailmentReward", "ExactMatchReward",
    "extract_final_answer", "init_from_causal_lm", "join_text", "LengthPenalty",
    "load_deberta", "load_encoder", "load_preference_model",
    "load_sequence_classifier", "make_deberta", "make_deberta_classifier",
    "make_directory_reward", "make_encoder", "make_entailment_reward",
    "make_exact_match_reward",
    "make_length_penalty", "make_preference_reward", "make_preference_update",
    "make_python_reward", "make_rouge_reward", "make_sequence_classifier",
    "normalize_answer", "pair_loss", "PreferenceModel", "PreferencePairs",
    "PythonReward", "read_safetensors", "register_architecture", "RewardInputs",
    "RewardModel", "RougeReward", "save_preference_model", "sequence_rewards",
    "SequenceClassifier", "split_sentences", "T5JudgeConfig", "T5JudgeReward",
    "make_t5_judge_reward", "task_reward", "weighted_sum",
]
