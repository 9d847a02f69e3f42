"""The package re-exports its public names."""

import subprocess
import sys

import gkdrl.reward_models as rm

PUBLIC = (
    "RewardInputs", "RewardModel", "check_inputs", "check_rewards",
    "as_reward_model", "weighted_sum", "EncoderConfig", "make_encoder",
    "make_sequence_classifier", "encoder_config_from_hf", "load_encoder",
    "read_safetensors", "EntailmentConfig", "EntailmentReward",
    "make_entailment_reward", "split_sentences", "chunk_document",
    "make_length_penalty", "make_python_reward", "task_reward",
    "make_rouge_reward", "make_exact_match_reward", "extract_final_answer",
    "normalize_answer", "RougeReward", "ExactMatchReward", "PythonReward",
    "LengthPenalty",
)


def test_public_names_are_exported():
  missing = [name for name in PUBLIC if not hasattr(rm, name)]
  assert not missing


def test_issue_names_are_the_factories():
  assert rm.RougeReward is rm.make_rouge_reward
  assert rm.ExactMatchReward is rm.make_exact_match_reward
  assert rm.PythonReward is rm.make_python_reward
  assert rm.LengthPenalty is rm.make_length_penalty


def test_import_pulls_in_neither_tasks_nor_torch():
  # task_reward takes a callable, so the tasks package (and PyTorch, a test
  # dependency only) must stay out of `import gkdrl.reward_models`.
  code = ("import sys, gkdrl.reward_models; "
          "print(sorted(m for m in sys.modules "
          "if m.startswith('gkdrl.envs') or m == 'torch'))")
  out = subprocess.run([sys.executable, "-c", code], check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "[]"
