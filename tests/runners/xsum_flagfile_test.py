"""experiments/flags/xsum_t5.flags parses with the train program's flags."""

import copy
import pathlib

from absl import flags

from gkdrl import agents
from gkdrl.runners import config as config_lib
from gkdrl.runners import train  # defines the flags

FLAGFILE = (pathlib.Path(__file__).parents[2] / "experiments" / "flags" /
            "xsum_t5.flags")


def test_xsum_t5_flagfile_gives_the_papers_on_policy_gkd_run():
  values = copy.deepcopy(flags.FLAGS)  # the process's flags stay unparsed
  values(["train", f"--flagfile={FLAGFILE}", "--student=/models/t5-small",
          "--teacher=/models/t5-xl", "--data_files=/data/xsum.jsonl"])
  config = config_lib.from_values(
      {name: values[name].value for name in train.RUN_FLAGS},
      default_max_new_tokens=32)
  assert config.inputs.task == "xsum"
  assert list(config.inputs.data_files) == ["/data/xsum.jsonl"]
  agent = config.agent
  assert isinstance(agent, agents.GKDConfig)
  assert (agent.lmbda, agent.divergence, agent.beta) == (1.0, "jsd", 0.9)
  assert agent.rollout.sample_temperature == 1.0
  assert agent.rollout.max_new_tokens == 64
  assert agent.optimizer.learning_rate == 3e-4
  assert agent.optimizer.warmup_steps == 2000
  assert config.loop.batch_size == 32 and config.loop.steps == 40000
