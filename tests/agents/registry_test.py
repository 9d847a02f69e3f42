"""The agent registry: a new agent is one module plus one register line,
and nothing outside the agents' own modules asks which agent it runs."""

import dataclasses
import importlib
import inspect
import sys
import pathlib
import re

import jax
import numpy as np
import pytest

import gkdrl
from gkdrl import agents
from gkdrl import losses
from gkdrl.agents import acting
from gkdrl.agents import base
from gkdrl.agents import registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig(base.AgentConfig):
  """A toy agent: raise the probability of token 0 as the first completion
  token, times `weight` (nothing a registered agent does)."""

  weight: float = 1.0


def _build_toy(config, parts):

  def loss_fn(params, state, batch, teacher_params, key):
    del state, teacher_params, key
    logits = base.student_logits(parts.student, params, batch, config)
    log_probs = jax.nn.log_softmax(logits[:, 0], axis=-1)  # [B, V]
    loss = -config.weight * log_probs[:, 0].mean()
    return loss, {"loss/toy": loss}

  def act(state, task_batch, key, *, teacher_params=None,
          reward_params=None):
    del state, key, teacher_params, reward_params
    batch = acting.dataset_batch(task_batch)
    return batch, acting.rollout_info(batch)

  return registry.assemble(config, loss_fn, act, uses_teacher=False,
                           uses_reward=False)


@pytest.fixture
def toy_registered():
  agents.register("toy", ToyConfig, _build_toy)
  yield
  registry.unregister("toy")
  assert "toy" not in agents.AGENT_CONFIGS


def test_a_registered_toy_agent_trains_through_make_agent(
    toy_registered, tiny_models, facts_task, fixed_batch):
  student, sp, _, _ = tiny_models
  config = agents.make_config(
      "toy", weight=2.0,
      optimizer=agents.OptimizerConfig(learning_rate=3e-2, warmup_steps=0))
  assert agents.agent_name(config) == "toy"
  assert agents.AGENT_CONFIGS["toy"] is ToyConfig
  agent = agents.make_agent(config, student=student,
                            tokenizer=facts_task.tokenizer)
  assert agent.name == "toy" and not agent.uses_teacher
  state = agent.init(sp)
  batch, _ = agent.act(state, fixed_batch, jax.random.key(0))
  # The loss by hand, from the initial parameters (update donates state).
  logits = np.asarray(agents.completion_logits(student, sp, batch),
                      np.float64)[:, 0]
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -2.0 * log_probs[:, 0].mean()
  values = []
  for i in range(4):
    state, metrics = agent.update(state, batch, None, jax.random.key(i))
    values.append(float(metrics["loss/toy"]))
  np.testing.assert_allclose(values[0], expected, rtol=1e-5)
  assert values[-1] < values[0]
  assert int(state.step) == 4


def test_register_refuses_a_second_agent_of_one_name(toy_registered):
  with pytest.raises(ValueError, match="'toy'.*already registered"):
    agents.register("toy", ToyConfig, _build_toy)


def test_make_agent_checks_what_the_agent_reads(toy_registered,
                                                tiny_models):
  student = tiny_models[0]

  def needs_teacher(config, parts):
    return _build_toy(config, parts)._replace(uses_teacher=True)

  @dataclasses.dataclass(frozen=True, kw_only=True)
  class OtherConfig(ToyConfig):
    pass

  agents.register("toy_teacher", OtherConfig, needs_teacher)
  try:
    with pytest.raises(ValueError, match="'toy_teacher' needs a teacher"):
      agents.make_agent(OtherConfig(), student=student)
  finally:
    registry.unregister("toy_teacher")


def test_special_token_ids_fall_back_in_order(tiny_models):
  student = tiny_models[0]

  class Tok:
    eos_token_id, pad_token_id = 7, None

  assert agents.special_token_ids(Tok(), student) == (7, 7)
  assert agents.special_token_ids(Tok(), student, 3, 4) == (3, 4)
  assert agents.special_token_ids(None, student) == (
      student.config.eos_token_id, student.config.eos_token_id)


def _name_comparisons(names) -> re.Pattern:
  quoted = "|".join(re.escape(n) for n in names)
  name = rf"""["'](?:{quoted})["']"""
  return re.compile(
      rf"(?:[=!]=\s*{name})|(?:{name}\s*[=!]=)"  # == "gkd", "gkd" != x
      rf"|(?:\bin\s*[(\[{{][^)\]}}]*{name})"  # in ("rl", "gkd_rl")
      # agent ==, agent.name !=, agent_name(config) == (any right side)
      r"|(?:\bagent(?:\.name|_name\([^)]*\))?\s*[=!]=)")


def test_no_code_outside_an_agents_module_branches_on_its_name():
  root = pathlib.Path(gkdrl.__file__).parent
  owners = {pathlib.Path(inspect.getfile(cls)).resolve()
            for cls in agents.AGENT_CONFIGS.values()}
  pattern = _name_comparisons(agents.AGENT_CONFIGS)
  # The pattern finds what it is for.
  assert pattern.search('if name == "gkd":')
  assert pattern.search("elif cfg in ('rl', 'gkd_rl'):")
  assert pattern.search('FLAGS.agent != "gkd_rl"')
  assert pattern.search("if agent_name(config) == other:")
  assert pattern.search("if agent.name != chosen:")
  assert not pattern.search('train.run(dict(values, agent="gkd_rl"))')
  found = []
  for path in sorted(root.rglob("*.py")):
    if path.resolve() in owners:
      continue
    for number, line in enumerate(path.read_text().splitlines(), 1):
      if pattern.search(line.split("#")[0]):
        found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
  assert not found, "\n".join(found)
  assert len(owners) == 5  # sft, seqkd, distill, rl, gkd_rl


@pytest.mark.parametrize("module,names", [
    ("gkdrl.agents.configs", ["GKDConfig", "GKDRLConfig", "SFTConfig"]),
    ("gkdrl.agents.agents", ["make_agent", "make_config", "AGENT_CONFIGS"]),
])
def test_old_module_paths_still_import_with_a_deprecation(module, names,
                                                          monkeypatch):
  monkeypatch.delitem(sys.modules, module, raising=False)
  with pytest.warns(DeprecationWarning, match=module):
    old = importlib.import_module(module)
  for name in names:
    assert getattr(old, name) is getattr(agents, name)
