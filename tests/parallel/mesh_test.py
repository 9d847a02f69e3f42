"""Mesh specs, meshes and the single-process distributed no-op."""

import jax
import pytest

from gkdrl import parallel


@pytest.mark.parametrize("spec, expected", [
    ("auto", {"data": 8}),
    ("data:8", {"data": 8}),
    ("data:4,fsdp:2", {"data": 4, "fsdp": 2}),
    (" fsdp:2 , data:2 ,model:2 ", {"fsdp": 2, "data": 2, "model": 2}),
    ("fsdp:8", {"fsdp": 8}),
])
def test_parse_mesh(spec, expected):
  assert parallel.parse_mesh(spec, num_devices=8) == expected


@pytest.mark.parametrize("spec, match", [
    ("", "non-empty string"),
    ("data", "'axis:size'"),
    ("batch:8", "axis 'batch' is not recognised; allowed axes: data, fsdp"),
    ("data:4,data:2", "appears twice"),
    ("data:0,fsdp:8", "size '0' of axis 'data' must be a positive int"),
    ("data:two", "size 'two'"),
    ("data:2.0,fsdp:4", "size '2.0'"),
    ("data:4,fsdp:4", "multiply to 16 but there are 8 devices"),
    ("data:3", "multiply to 3 but there are 8 devices"),
])
def test_parse_mesh_errors(spec, match):
  with pytest.raises(ValueError, match=match) as info:
    parallel.parse_mesh(spec, num_devices=8)
  assert repr(spec) in str(info.value)


def test_parse_mesh_defaults_to_the_device_count():
  assert parallel.parse_mesh("auto") == {"data": jax.device_count()}


def test_make_mesh_has_every_axis():
  mesh = parallel.make_mesh("auto")
  assert mesh.axis_names == parallel.AXES
  assert mesh.devices.size == jax.device_count()
  assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1,
                              "model": 1}
  explicit = parallel.make_mesh(f"fsdp:{jax.device_count()}",
                                devices=jax.devices())
  assert dict(explicit.shape)["fsdp"] == jax.device_count()
  with pytest.raises(ValueError, match="there are 1 devices"):
    parallel.make_mesh("data:2", devices=jax.devices()[:1])


@pytest.fixture
def no_cluster_env(monkeypatch):
  for var in parallel.ENV_VARS.values():
    monkeypatch.delenv(var, raising=False)
  return monkeypatch


def test_initialize_distributed_is_a_single_process_no_op(no_cluster_env):
  del no_cluster_env
  assert parallel.initialize_distributed() is False
  assert jax.process_count() == 1


def test_initialize_distributed_checks_process_id():
  with pytest.raises(ValueError, match="process_id=3"):
    parallel.initialize_distributed("localhost:1234", num_processes=2,
                                    process_id=3)


def test_initialize_distributed_reads_the_environment(no_cluster_env):
  no_cluster_env.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
  no_cluster_env.setenv("JAX_NUM_PROCESSES", "2")
  no_cluster_env.setenv("JAX_PROCESS_ID", "3")
  # Checked before anything connects.
  with pytest.raises(ValueError, match=r"process_id=3 .*num_processes=2"):
    parallel.initialize_distributed()
  no_cluster_env.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
    parallel.initialize_distributed()
