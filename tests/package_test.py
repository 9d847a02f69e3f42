"""The package's public surface: what each subpackage exports and imports."""

import dataclasses
import importlib
import inspect
import pathlib
import re
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

SUBPACKAGES = ["agents", "envs", "evaluation", "losses", "networks", "parallel",
               "tasks", "reward_models", "runners", "sampling"]
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_all_lists_exactly_the_public_names(name):
  module = importlib.import_module(f"gkdrl.{name}")
  bound = {k for k, v in vars(module).items()
           if not k.startswith("_") and not isinstance(v, types.ModuleType)}
  assert sorted(module.__all__) == sorted(bound)
  for attr in module.__all__:
    value = getattr(module, attr)
    origin = getattr(value, "__module__", None)
    if inspect.isclass(value) or inspect.isfunction(value):
      assert origin.startswith("gkdrl."), (attr, origin)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_exported_configs_are_frozen_keyword_only_dataclasses(name):
  module = importlib.import_module(f"gkdrl.{name}")
  configs = [getattr(module, a) for a in module.__all__
             if a.endswith("Config") and inspect.isclass(getattr(module, a))]
  for cls in configs:
    assert dataclasses.is_dataclass(cls), cls
    assert cls.__dataclass_params__.frozen, cls
    assert all(f.kw_only for f in dataclasses.fields(cls)), cls
    with pytest.raises(TypeError):  # positional arguments are refused
      cls(*[None] * max(1, len(dataclasses.fields(cls))))


PRIVATE_IMPORT = re.compile(
    r"^\s*(?:from\s+gkdrl\.([\w.]+)\s+import\s+_\w+"
    r"|from\s+gkdrl\.([\w.]*?)\._\w+\s+import"
    r"|import\s+gkdrl\.([\w.]*?)\._\w+)", re.MULTILINE)


def private_imports(text: str, package: str) -> list[str]:
  """Lines of `text` importing a private module of another package."""
  found = []
  for match in PRIVATE_IMPORT.finditer(text):
    imported = next(g for g in match.groups() if g is not None)
    if imported.split(".")[0] != package:
      found.append(match.group(0).strip())
  return found


def test_no_package_imports_another_packages_private_module():
  offences = []
  for path in sorted((ROOT / "gkdrl").rglob("*.py")):
    package = path.relative_to(ROOT / "gkdrl").parts[0]
    offences += [f"{path.relative_to(ROOT)}: {line}"
                 for line in private_imports(path.read_text(), package)]
  assert not offences, offences


def test_the_private_import_check_tells_own_from_other():
  text = ("from gkdrl.losses import _checks\n"
          "import gkdrl.losses._checks\n"
          "from gkdrl.losses._checks import check\n"
          "from gkdrl.losses import objectives\n")
  assert len(private_imports(text, "agents")) == 3
  assert not private_imports(text, "losses")


def test_divergences_vanish_between_equal_distributions():
  from gkdrl import losses  # pylint: disable=g-import-not-at-top
  assert set(losses.DIVERGENCES) == {
      "forward_kl", "reverse_kl", "jsd", "skew_forward_kl",
      "skew_reverse_kl", "tvd"}
  logits = jax.random.normal(jax.random.key(0), (2, 3, 7))
  other = logits + jax.random.normal(jax.random.key(1), (2, 3, 7))
  for name in losses.DIVERGENCES:
    kwargs = {"beta": 0.5} if name == "jsd" else {}
    same = losses.divergence(name, logits, logits, **kwargs)
    differ = losses.divergence(name, logits, other, **kwargs)
    assert same.shape == (2, 3), name
    np.testing.assert_allclose(same, 0.0, atol=1e-6, err_msg=name)
    assert np.all(np.asarray(differ) > 1e-4), name


def test_evaluate_signature_is_keyword_only():
  from gkdrl import evaluation  # pylint: disable=g-import-not-at-top
  parameters = inspect.signature(evaluation.evaluate).parameters
  assert all(p.kind is inspect.Parameter.KEYWORD_ONLY
             for p in parameters.values())
  assert list(parameters) == [
      "model", "params", "task", "split", "num_examples", "batch_size",
      "max_new_tokens", "teacher", "teacher_params", "reward",
      "reward_params", "samples_per_prompt", "seed", "modes"]
  assert parameters["modes"].default == (("greedy", 0.0), ("sample", 1.0))


def test_reward_class_names_are_the_factories():
  from gkdrl import reward_models as rm  # pylint: disable=g-import-not-at-top
  assert rm.RougeReward is rm.make_rouge_reward
  assert rm.ExactMatchReward is rm.make_exact_match_reward
  assert rm.PythonReward is rm.make_python_reward
  assert rm.LengthPenalty is rm.make_length_penalty
  rouge = rm.make_rouge_reward("rouge1")
  inputs = rm.RewardInputs(sources=["s"], completions=["a b"],
                           targets=["a b"])
  np.testing.assert_allclose(rouge.score(None, inputs), [1.0])


def test_reward_models_import_pulls_in_neither_tasks_nor_torch():
  # task_reward takes a callable, so the tasks package (and PyTorch, a test
  # dependency only) must stay out of `import gkdrl.reward_models`.
  code = ("import sys, gkdrl.reward_models; "
          "print(sorted(m for m in sys.modules "
          "if m.startswith(('gkdrl.envs', 'gkdrl.tasks')) or m == 'torch'))")
  out = subprocess.run([sys.executable, "-c", code], check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "[]"
