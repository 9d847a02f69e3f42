"""Flags made from the run config's fields, and their translation back."""

import dataclasses

import pytest

from gkdrl import agents
from gkdrl import networks
from gkdrl.runners import config as config_lib
from gkdrl.runners import fields
from gkdrl.runners import flags_lib
from gkdrl.runners import loop
from gkdrl.runners import train  # defines the flags

SETTINGS = dict(default_max_new_tokens=8, learning_rate=1e-3,
                warmup_steps=0, steps=10)


def test_remat_flag_sets_the_agent_config():
  assert train.FLAGS["remat"].default is None  # the config's default
  assert "remat" in train.RUN_FLAGS
  default = flags_lib.agent_config("gkd", {"remat": None}, **SETTINGS)
  assert default.remat == "none"
  for mode in networks.REMAT_MODES:
    for agent in ("sft", "gkd", "gkd_rl"):
      config = flags_lib.agent_config(agent, {"remat": mode}, **SETTINGS)
      assert config.remat == mode
  with pytest.raises(ValueError, match="remat='layer'.*'dots'"):
    flags_lib.agent_config("gkd", {"remat": "layer"}, **SETTINGS)


def _fields(cls):
  return {name for name, *_ in fields.flat_fields(cls)}


def test_every_config_field_is_a_flag_with_its_documentation():
  agent_fields = set().union(*map(_fields, agents.AGENT_CONFIGS.values()))
  run_fields = set().union(*(_fields(cls) for cls in (
      config_lib.InputsConfig, config_lib.EvalConfig,
      config_lib.RewardConfig, loop.LoopConfig)))
  expected = agent_fields | run_fields | {"agent", "workdir", "mesh",
                                          "force_new_run",
                                          "compilation_cache",
                                          "cpu_scratch_reuse"}
  assert set(train.RUN_FLAGS) == expected
  assert {"learning_rate", "warmup_steps", "max_new_tokens", "top_p",
          "loss_chunk_size", "ppo_epsilon", "skew"} <= agent_fields
  for name in ("progress", "decay_steps", "optimizer", "rollout"):
    assert name not in train.FLAGS, name
  for name in expected - {"agent"}:
    help_text = train.FLAGS[name].help
    assert len(help_text) > 20, (name, help_text)
  # The help is the field's docstring text.
  assert train.FLAGS["top_p"].help.startswith("Nucleus mass when sampling")
  assert train.FLAGS["save_every"].help.startswith("Steps between checkpo")


def test_one_default_per_setting_from_the_dataclass():
  assert train.FLAGS["save_every"].default == loop.LoopConfig().save_every
  assert train.FLAGS["steps"].default == loop.LoopConfig().steps
  assert train.FLAGS["eval_examples"].default == (
      config_lib.EvalConfig().eval_examples)
  assert train.FLAGS["agent"].default == "gkd_rl"
  # Agent flags are unset; their help gives each agent's own default.
  assert train.FLAGS["beta"].default is None
  beta_help = train.FLAGS["beta"].help
  assert f"{agents.GKDConfig().beta} (gkd, supervised_kd)" in beta_help
  assert f"{agents.GKDRLConfig().beta} (gkd_rl)" in beta_help
  assert "task's longest target" in train.FLAGS["max_new_tokens"].help
  config = config_lib.from_values(train.default_values())
  assert config == config_lib.RunConfig()


def test_values_round_trip_through_the_run_config():
  values = train.default_values(agent="gkd", lmbda=0.5, top_p=0.9,
                                learning_rate=3e-4, steps=7,
                                data_files=["a.jsonl"], mesh="auto",
                                eval_examples=5, length_penalty=0.1)
  config = config_lib.from_values(values)
  assert isinstance(config.agent, agents.GKDConfig)
  assert config.agent.lmbda == 0.5
  assert config.agent.rollout == agents.RolloutConfig(top_p=0.9)
  assert config.agent.optimizer.learning_rate == 3e-4
  assert config.agent.optimizer.decay_steps == 7
  assert config.loop.steps == 7 and config.eval.eval_examples == 5
  assert config.inputs.data_files == ("a.jsonl",)
  back = config_lib.to_values(config)
  assert config_lib.from_values(back) == config
  assert back["top_p"] == 0.9 and back["mesh"] == "auto"


def test_max_new_tokens_defaults_to_the_given_task_length():
  values = train.default_values()
  assert config_lib.from_values(
      values, default_max_new_tokens=11).agent.max_new_tokens == 11
  values["max_new_tokens"] = 5
  assert config_lib.from_values(
      values, default_max_new_tokens=11).agent.max_new_tokens == 5


@pytest.mark.parametrize("settings, message", [
    (dict(agent="gkd_rl", kl_mode="sampled", loss_chunk_size=64),
     "--loss_chunk_size=64 is not allowed; --agent=gkd_rl does not read it: "
     "kl_mode='sampled' folds the sampled log-ratio into the advantage"),
    (dict(agent="sft", loss_chunk_size=64),
     "--loss_chunk_size=64 is not allowed; --agent=sft does not read it "
     "(agents that do: gkd, gkd_rl, supervised_kd)."),
    (dict(agent="gkd_rl", ppo_epsilon=0.1),
     "--ppo_epsilon=0.1 is not allowed; --agent=gkd_rl does not read it"),
    (dict(agent="gkd", skew=0.2),
     "--skew=0.2 is not allowed; --agent=gkd does not read it: "
     "divergence='jsd' takes no skew (divergences that do: skew_forward_kl, "
     "skew_reverse_kl)."),
    (dict(agent="gkd_rl", divergence="skew_reverse_kl", beta=0.5),
     "--beta=0.5 is not allowed; --agent=gkd_rl does not read it: "
     "divergence='skew_reverse_kl' takes no beta (divergences that do: "
     "jsd)."),
    (dict(agent="supervised_kd", normalized=True),
     "--normalized=True is not allowed; --agent=supervised_kd does not read "
     "it: divergence='forward_kl' takes no normalized"),
    (dict(agent="sft", top_p=0.9),
     "--top_p=0.9 is not allowed; --agent=sft does not read it: sft trains "
     "on dataset targets"),
    (dict(agent="sft", alpha=0.5),
     "--alpha=0.5 is not allowed; --agent=sft does not read it (agents that "
     "do: gkd_rl)."),
    (dict(agent="rl", lmbda=0.5),
     "--lmbda=0.5 is not allowed; --agent=rl does not read it"),
])
def test_a_setting_the_agent_does_not_read_is_an_error(settings, message):
  with pytest.raises(ValueError) as error:
    config_lib.from_values(train.default_values(**settings))
  assert message in str(error.value)


@pytest.mark.parametrize("settings", [
    dict(agent="gkd", divergence="skew_forward_kl", skew=0.2),
    dict(agent="gkd_rl", divergence="jsd", beta=0.5, normalized=True),
    dict(agent="gkd", loss_chunk_size=64),
    dict(agent="gkd_rl", loss_chunk_size=64),
    dict(agent="rl", ppo_epsilon=0.1, ppo_epochs=2),
    dict(agent="seqkd", top_p=0.9, sample_temperature=0.0),
])
def test_settings_the_agent_reads_are_accepted(settings):
  config = config_lib.from_values(train.default_values(**settings))
  for name, value in settings.items():
    if name != "agent":
      assert getattr(config.agent, name) == value


def test_unknown_settings_are_rejected():
  with pytest.raises(ValueError, match=r"Unknown settings \['stepz'\]"):
    config_lib.from_values({"stepz": 3})
  with pytest.raises(ValueError, match=r"Unknown settings \['stepz'\]"):
    train.default_values(stepz=3)


def test_flat_rollout_keywords_build_the_nested_config():
  config = agents.GKDConfig(lmbda=0.5, max_new_tokens=8, top_k=3)
  assert config.rollout == agents.RolloutConfig(max_new_tokens=8, top_k=3)
  assert (config.max_new_tokens, config.top_k) == (8, 3)
  replaced = dataclasses.replace(config, top_p=0.5)
  assert replaced.rollout == agents.RolloutConfig(max_new_tokens=8, top_k=3,
                                                  top_p=0.5)
  assert replaced.lmbda == 0.5


def test_lora_settings_without_a_rank_are_refused():
  with pytest.raises(ValueError,
                     match=r"--lora_alpha=8.0 is not allowed.*--lora_rank > 0"):
    flags_lib.agent_config("gkd", {"lora_alpha": 8.0}, **SETTINGS)
  # Their defaults (as a saved config.json repeats them) and a rank pass.
  flags_lib.agent_config("gkd", {"lora_alpha": 16.0}, **SETTINGS)
  config = flags_lib.agent_config("gkd", {"lora_alpha": 8.0, "lora_rank": 4},
                                  **SETTINGS)
  assert (config.lora_rank, config.lora_alpha) == (4, 8.0)
