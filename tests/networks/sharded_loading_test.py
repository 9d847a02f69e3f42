"""Sharded safetensors checkpoints load shard by shard, onto any placement."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkdrl import networks
from gkdrl.networks import checkpoint
from tests import shared_programs
from tests.networks import hf_models


@pytest.fixture(scope="module")
def qwen2():
  model = networks.make_model(hf_models.jax_config("qwen2"))
  return model, jax.jit(model.init)(jax.random.key(3))


class _Spy:
  """Wraps `safetensors.safe_open`: the files opened, the most open at once."""

  def __init__(self, real):
    self.real, self.opened, self.open_now, self.most_open = real, [], 0, 0

  def __call__(self, path, *args, **kwargs):
    self.opened.append(os.path.basename(path))
    return _Handle(self, self.real(path, *args, **kwargs))


class _Handle:

  def __init__(self, spy, handle):
    self._spy, self._handle = spy, handle
    spy.open_now += 1
    spy.most_open = max(spy.most_open, spy.open_now)

  def __getattr__(self, name):
    return getattr(self._handle, name)

  def __enter__(self):
    return self

  def __exit__(self, *args):
    return self._handle.__exit__(*args)

  def __del__(self):
    self._spy.open_now -= 1


def _spy_opens(monkeypatch) -> _Spy:
  spy = _Spy(checkpoint.safetensors.safe_open)
  monkeypatch.setattr(checkpoint.safetensors, "safe_open", spy)
  return spy


def test_sharded_save_reloads_identically_one_shard_at_a_time(
    qwen2, tmp_path, monkeypatch):
  model, params = qwen2
  total = sum(x.nbytes for x in jax.tree.leaves(params))
  out = networks.save_pretrained(model, params, tmp_path / "m",
                                 max_shard_bytes=total // 3)
  index = json.loads((out / "model.safetensors.index.json").read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) >= 3
  assert not (out / "model.safetensors").exists()
  spy = _spy_opens(monkeypatch)
  _, loaded = networks.from_pretrained(out)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  # Each shard is opened once, in order, and closed before the next.
  assert spy.opened == shards
  assert spy.most_open == 1


def test_bfloat16_load_of_a_sharded_checkpoint(qwen2, tmp_path):
  model, params = qwen2
  out = networks.save_pretrained(model, params, tmp_path / "m",
                                 max_shard_bytes=4096)
  _, loaded = networks.from_pretrained(out, dtype=jnp.bfloat16)
  assert {x.dtype for x in jax.tree.leaves(loaded)} == {
      jnp.dtype(jnp.bfloat16)}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(
      a, np.asarray(b).astype(jnp.bfloat16)), loaded, params)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["llama_gqa_untied", "gpt2"])
def test_transformers_sharded_checkpoint_loads_like_the_single_file(
    name, tmp_path, torch, monkeypatch):
  single = tmp_path / "single"
  hf_model = hf_models.save_random_hf_model(name, single, torch)
  sharded = tmp_path / "sharded"
  hf_model.save_pretrained(sharded, max_shard_size="20KB")
  index = json.loads((sharded / "model.safetensors.index.json").read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) >= 2
  _, expected = networks.from_pretrained(single)
  spy = _spy_opens(monkeypatch)
  _, loaded = networks.from_pretrained(sharded)
  jax.tree.map(np.testing.assert_array_equal, loaded, expected)
  assert spy.opened == shards
  assert spy.most_open == 1


def test_shardings_place_each_parameter(qwen2, tmp_path):
  model, params = qwen2
  out = networks.save_pretrained(model, params, tmp_path / "m")
  device = jax.devices()[0]
  single = jax.sharding.SingleDeviceSharding(device)
  seen = []

  def shardings(shapes):
    seen.append(jax.tree.map(lambda s: (s.shape, s.dtype), shapes))
    return jax.tree.map(lambda _: single, shapes)

  _, loaded = networks.from_pretrained(out, shardings=shardings)
  assert seen[0] == jax.tree.map(lambda x: (x.shape, x.dtype), params)
  for leaf in jax.tree.leaves(loaded):
    assert leaf.sharding == single


_MESH_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from gkdrl import networks, parallel
    mesh = parallel.make_mesh("fsdp:8")
    _, loaded = networks.from_pretrained(
        sys.argv[1], shardings=lambda shapes: parallel.param_shardings(
            shapes, mesh, min_size=1))
    _, reference = networks.from_pretrained(sys.argv[1])
    jax.tree.map(np.testing.assert_array_equal, loaded, reference)
    w = loaded["lm/layers/mlp/up"]["w"]
    assert "fsdp" in w.sharding.spec, w.sharding
    assert len(w.addressable_shards) == 8
    print("OK", w.sharding.spec)
""")


def test_loads_straight_onto_an_fsdp_mesh(qwen2, tmp_path):
  model, params = qwen2
  out = networks.save_pretrained(model, params, tmp_path / "m",
                                 max_shard_bytes=4096)
  env = shared_programs.subprocess_env(
      "--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, str(out)],
                          capture_output=True, text=True, env=env,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout
