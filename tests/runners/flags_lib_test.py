"""Flags that map onto agent config fields: --remat."""

import pytest

from gkdrl import networks
from gkdrl.runners import flags_lib
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
