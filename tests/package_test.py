"""Every subpackage imports and re-exports the public names it lists."""

import importlib

import pytest

SUBPACKAGES = ["agents", "envs", "evaluation", "losses", "networks", "parallel",
               "tasks",
               "reward_models", "runners", "sampling"]

LOSSES_API = [
    "forward_kl", "reverse_kl", "generalized_jsd", "skew_forward_kl",
    "skew_reverse_kl", "total_variation", "DIVERGENCES", "divergence",
    "sampled_kl", "masked_mean", "distillation_loss", "policy_gradient_loss",
    "ppo_clip_loss", "gkd_rl_loss",
]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_exports_resolve(name):
  module = importlib.import_module(f"gkdrl.{name}")
  for attr in getattr(module, "__all__", []):
    assert hasattr(module, attr), f"gkdrl.{name}.{attr} is listed but missing"


def test_losses_fixed_api():
  from gkdrl import losses  # pylint: disable=g-import-not-at-top
  for attr in LOSSES_API:
    assert callable(getattr(losses, attr)) or attr == "DIVERGENCES", attr
  assert set(losses.DIVERGENCES) == {
      "forward_kl", "reverse_kl", "jsd", "skew_forward_kl",
      "skew_reverse_kl", "tvd"}
