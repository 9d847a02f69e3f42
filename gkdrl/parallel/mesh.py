"""Device meshes from a short spec string, and multi-host start-up.

A mesh spec names axes and their sizes, e.g. "data:4,fsdp:2":

  data   replicas that each see a slice of the batch (data parallelism);
  fsdp   devices that each hold a slice of every large weight and of its
         optimizer state, and also a slice of the batch (fully sharded
         data parallelism, ZeRO-3 style);
  model  devices that split attention heads and MLP width (tensor
         parallelism).

"auto" puts every device on "data". Sizes must multiply to the number of
devices. `make_mesh` always returns a mesh with all three axes (size 1 where
the spec leaves one out), so sharding rules can name any of them.
"""

from collections.abc import Sequence
import math
import os

import jax
import numpy as np

AXES = ("data", "fsdp", "model")


def parse_mesh(spec: str, num_devices: int | None = None) -> dict[str, int]:
  """Parses a mesh spec such as "data:4,fsdp:2" or "auto".

  Args:
    spec: comma-separated `axis:size` pairs with axes from `AXES`, each at
      most once, sizes positive ints; or "auto" (all devices on "data").
    num_devices: the device count the sizes must multiply to; defaults to
      `jax.device_count()`.

  Returns:
    `{axis: size}` in the order given.

  Raises:
    ValueError: naming the offending value and what is allowed.
  """
  if num_devices is None:
    num_devices = jax.device_count()
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"mesh={spec!r} must be a non-empty string such as "
                     f"'auto' or 'data:4,fsdp:2' (axes: {', '.join(AXES)}).")
  if spec.strip() == "auto":
    return {"data": num_devices}
  sizes = {}
  for part in spec.split(","):
    name, sep, size = part.strip().partition(":")
    name = name.strip()
    if not sep:
      raise ValueError(f"mesh={spec!r}: entry {part.strip()!r} must be "
                       "'axis:size', e.g. 'data:4'.")
    if name not in AXES:
      raise ValueError(f"mesh={spec!r}: axis {name!r} is not recognised; "
                       f"allowed axes: {', '.join(AXES)}.")
    if name in sizes:
      raise ValueError(f"mesh={spec!r}: axis {name!r} appears twice.")
    try:
      value = int(size.strip())
    except ValueError:
      value = 0
    if value < 1 or str(value) != size.strip():
      raise ValueError(f"mesh={spec!r}: size {size.strip()!r} of axis "
                       f"{name!r} must be a positive int.")
    sizes[name] = value
  total = math.prod(sizes.values())
  if total != num_devices:
    raise ValueError(f"mesh={spec!r}: sizes multiply to {total} but there "
                     f"are {num_devices} devices; they must match.")
  return sizes


def make_mesh(spec: str,
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A `("data", "fsdp", "model")` mesh from a spec (see `parse_mesh`).

  Args:
    spec: the mesh spec.
    devices: the devices to lay out; defaults to all (`jax.devices()`), in
      the topology-aware order `jax.make_mesh` chooses.

  Returns:
    A `jax.sharding.Mesh` with the three axes of `AXES` (Auto axis types, so
    XLA propagates shardings through jitted code).
  """
  num = jax.device_count() if devices is None else len(devices)
  sizes = parse_mesh(spec, num)
  shape = tuple(sizes.get(axis, 1) for axis in AXES)
  axis_types = (jax.sharding.AxisType.Auto,) * len(AXES)
  if devices is None:
    return jax.make_mesh(shape, AXES, axis_types)
  # An explicit device list keeps the caller's order.
  grid = np.asarray(devices, dtype=object).reshape(shape)
  return jax.sharding.Mesh(grid, AXES, axis_types=axis_types)


# Read when the arguments are not given (JAX itself reads only the first).
ENV_VARS = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
            "num_processes": "JAX_NUM_PROCESSES",
            "process_id": "JAX_PROCESS_ID"}


def _from_env(name: str):
  var = ENV_VARS[name]
  value = os.environ.get(var, "").strip()
  if not value or name == "coordinator_address":
    return value or None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{var}={value!r} (for {name}) must be an int.") from None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Connects the processes of a multi-host run (`jax.distributed`).

  Call once per process, before any other JAX call. Arguments not given
  are read from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID. If none is set either, JAX detects clusters it knows
  (SLURM, Open MPI, Cloud TPU, and others) from the environment, and in a
  plain single process nothing is done. Otherwise process 0 listens on the
  coordinator address ("host:port") and the others connect to it. After
  it, `jax.devices()` lists every host's devices, so `make_mesh` spans the
  hosts; each process feeds its own rows of every batch (see
  `gkdrl.parallel.process_split` and `global_task_batch`).

  Args:
    coordinator_address: "host:port" of process 0.
    num_processes: number of processes in the run, >= 1.
    process_id: this process's index in [0, num_processes).

  Returns:
    Whether `jax.distributed.initialize` was called (False when this
    process is connected already: calling this again is a no-op).

  Raises:
    ValueError: naming a bad argument or environment variable.
  """
  if jax.distributed.is_initialized():
    return False
  if coordinator_address is None:
    coordinator_address = _from_env("coordinator_address")
  if num_processes is None:
    num_processes = _from_env("num_processes")
  if process_id is None:
    process_id = _from_env("process_id")
  given = (coordinator_address, num_processes, process_id)
  if all(v is None for v in given):
    try:
      from jax._src import clusters  # pylint: disable=g-import-not-at-top
      detected = any(env.is_env_present()
                     for env in clusters.ClusterEnv._cluster_types)  # pylint: disable=protected-access
    except (ImportError, AttributeError):
      detected = False
    if not detected:
      return False
    jax.distributed.initialize()
    return True
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes={num_processes!r} must be >= 1.")
  if process_id is not None and num_processes is not None and not (
      0 <= process_id < num_processes):
    raise ValueError(f"process_id={process_id!r} must be in "
                     f"[0, num_processes={num_processes}).")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)
  return True
