"""Shared tiny NLI checkpoints (session-scoped so models compile once)."""

import importlib.util

import pytest

from gkdrl import reward_models as rm
from tests.conftest import skip_or_fail
from tests.reward_models import checkpoints


@pytest.fixture(scope="session")
def torch_module():
  """Session-scoped torch (for module fixtures); skips or fails without it."""
  if importlib.util.find_spec("torch") is None:
    skip_or_fail("torch is not installed: pip install torch==2.13.0")
  import torch  # pylint: disable=g-import-not-at-top
  return torch


@pytest.fixture(scope="session")
def numpy_checkpoints(tmp_path_factory):
  """{"bert": dir, "roberta": dir} of random checkpoints built without torch."""
  root = tmp_path_factory.mktemp("nli")
  out = {}
  for family in ("bert", "roberta"):
    checkpoints.write_numpy_checkpoint(root / family, family)
    out[family] = root / family
  return out


@pytest.fixture(scope="session")
def bert_nli(numpy_checkpoints):
  """An EntailmentReward on the tiny random BERT checkpoint."""
  return rm.EntailmentReward(
      numpy_checkpoints["bert"],
      rm.EntailmentConfig(batch_size=4, min_bucket=8))
