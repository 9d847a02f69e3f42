"""Sharding rules for parameters, optimizer state and batches.

Rules (`param_partition_specs`), per array, from its path and shape:

  * "model" (tensor parallelism), by path: the output dimension of
    attention query/key/value and MLP up/gate weights, and the input
    dimension of attention out and MLP down weights, when the model size
    divides it. Heads and MLP width thus split across "model" and the
    matching contraction needs one all-reduce per block.
  * "fsdp" (full sharding): the largest remaining dimension that the fsdp
    size divides, for arrays of at least `min_size` elements (one layer's
    slice for stacked weights; `MIN_SHARD_SIZE` = 2**14 by default: smaller
    arrays cost more to gather than they save). Never the leading `[n_layers]` axis of stacked
    per-layer weights (under ".../layers/..."), which `hk.layer_stack` scans.
  * Everything else is replicated (norm scales, scalars, small arrays).

Batches split their leading (row) axis over ("data", "fsdp"). Optimizer
state follows its parameters: optax states mirror the parameter tree, so a
state leaf whose path ends with a parameter's path (and has its shape) gets
that parameter's spec; other leaves (step counts) are replicated.
"""

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

MIN_SHARD_SIZE = 2**14
BATCH_AXES = ("data", "fsdp")
# Module name -> which dimension counted from the end splits over "model".
_MODEL_DIM = {"query": -1, "key": -1, "value": -1, "up": -1, "gate": -1,
              "out": -2, "down": -2}
_STACKED = "layers"  # the `hk.layer_stack` module name in networks/model.py

Params = Any


def _key_name(entry) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _path_parts(path) -> list[str]:
  parts = []
  for entry in path:
    parts.extend(_key_name(entry).split("/"))
  return parts


def _axis_size(mesh: jax.sharding.Mesh, axis: str) -> int:
  return mesh.shape.get(axis, 1)


def partition_spec(path, shape: tuple[int, ...], mesh: jax.sharding.Mesh, *,
                   min_size: int = MIN_SHARD_SIZE) -> P:
  """The `PartitionSpec` of one array (see the module docstring).

  Args:
    path: the array's key path in its pytree (haiku "module/name" keys).
    shape: its shape.
    mesh: the mesh (a `Mesh` or `AbstractMesh`); absent axes count as 1.
    min_size: arrays with fewer elements (per layer, for stacked weights)
      are not fsdp-sharded.

  Returns:
    A `PartitionSpec` with one entry per dimension.
  """
  parts = _path_parts(path)
  spec = [None] * len(shape)
  first = 1 if _STACKED in parts[:-1] and len(shape) > 1 else 0
  model = _axis_size(mesh, "model")
  if model > 1 and len(shape) - first >= 2:
    module = parts[-2] if len(parts) >= 2 else ""
    dim = _MODEL_DIM.get(module)
    if dim is not None and shape[dim] % model == 0:
      spec[len(shape) + dim] = "model"
  fsdp = _axis_size(mesh, "fsdp")
  size = 1
  for d in shape[first:]:  # one layer's slice: scans gather layer by layer
    size *= d
  if fsdp > 1 and size >= min_size:
    free = [i for i in range(first, len(shape))
            if spec[i] is None and shape[i] % fsdp == 0]
    if free:
      # Largest dimension first; ties go to the earliest.
      best = max(free, key=lambda i: (shape[i], -i))
      spec[best] = "fsdp"
  return P(*spec)


def param_partition_specs(params: Params, mesh: jax.sharding.Mesh, *,
                          min_size: int = MIN_SHARD_SIZE) -> Any:
  """A pytree of `PartitionSpec`s matching `params`.

  Args:
    params: a parameter pytree (arrays or `jax.ShapeDtypeStruct`s).
    mesh: the mesh; axes it lacks count as size 1.
    min_size: arrays with fewer elements (per layer, for stacked weights)
      are not fsdp-sharded.

  Returns:
    Specs with the structure of `params`.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, x: partition_spec(path, tuple(x.shape), mesh,
                                     min_size=min_size), params)


def param_shardings(params: Params, mesh: jax.sharding.Mesh, *,
                    min_size: int = MIN_SHARD_SIZE) -> Any:
  """`NamedSharding`s of `param_partition_specs`."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s),
                      param_partition_specs(params, mesh, min_size=min_size),
                      is_leaf=lambda x: isinstance(x, P))


def shard_params(params: Params, mesh: jax.sharding.Mesh, *,
                 min_size: int = MIN_SHARD_SIZE) -> Params:
  """Places `params` on `mesh` by the rules (`jax.device_put`)."""
  return jax.device_put(params, param_shardings(params, mesh,
                                                min_size=min_size))


def state_shardings(state: Any, mesh: jax.sharding.Mesh, *,
                    min_size: int = MIN_SHARD_SIZE) -> Any:
  """`NamedSharding`s for a training state whose optimizer state follows it.

  Args:
    state: a pytree with a `params` field (e.g. `TrainingState`): the
      parameters, their optax state, the step, optional reference
      parameters and an optional `frozen` LoRA base (sharded like the
      parameters it holds). Leaves may be arrays or
      `jax.ShapeDtypeStruct`s.
    mesh: the mesh.
    min_size: as in `param_partition_specs`.

  Returns:
    A pytree of `NamedSharding`s with the structure of `state`: every leaf
    whose path ends with a parameter's path and has its shape gets that
    parameter's sharding; the rest (counts, the step) is replicated.
  """
  by_path = {}
  # A LoRA state's frozen base is sharded like the parameters it holds.
  frozen = getattr(state, "frozen", None)
  trees = [state.params] if frozen is None else [state.params, frozen]
  for path, x in jax.tree_util.tree_flatten_with_path(trees)[0]:
    path = path[1:]  # drop the index into `trees`
    key = tuple(_key_name(e) for e in path)
    by_path[key] = (tuple(x.shape), partition_spec(path, tuple(x.shape), mesh,
                                                   min_size=min_size))

  def leaf_sharding(path, x):
    names = tuple(_key_name(e) for e in path)
    shape = tuple(x.shape)
    # Drop leading entries until a parameter path matches (longest first).
    for start in range(len(names)):
      match = by_path.get(names[start:])
      if match is not None and match[0] == shape:
        return NamedSharding(mesh, match[1])
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(leaf_sharding, state)


def shard_state(state: Any, mesh: jax.sharding.Mesh, *,
                min_size: int = MIN_SHARD_SIZE) -> Any:
  """Places a training state on `mesh` by `state_shardings`."""
  return jax.device_put(state, state_shardings(state, mesh,
                                               min_size=min_size))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Rows over ("data", "fsdp") (the axes `mesh` has), the rest replicated."""
  axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
  return NamedSharding(mesh, P(axes if axes else None))


def shard_batch(batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places every array of `batch` with its leading axis split by rows.

  In a single process `batch` is the whole batch. In a multi-process run
  (`jax.process_count() > 1`) each process passes its own rows as NumPy (or
  process-local) arrays and the global batch is their concatenation in
  process order (`jax.make_array_from_process_local_data`; `jax.make_mesh`
  lays out processes along the batch axes in order); global `jax.Array`s
  (outputs of jitted code on the mesh) are resharded as they are.

  Args:
    batch: a pytree of arrays with a shared leading batch axis B (e.g.
      `types.Batch`; None fields are left as they are).
    mesh: the mesh.

  Returns:
    The batch on `mesh` (`batch_sharding`).

  Raises:
    ValueError: if the global B is not a multiple of the data * fsdp size.
  """
  rows = 1
  for axis in BATCH_AXES:
    rows *= _axis_size(mesh, axis)
  sharding = batch_sharding(mesh)

  processes = jax.process_count()

  def put(path, x):
    shape = getattr(x, "shape", ())
    is_global = isinstance(x, jax.Array) and not x.is_fully_addressable
    local_parts = 1 if is_global else processes
    if not shape or (shape[0] * local_parts) % rows:
      raise ValueError(
          f"batch field {jax.tree_util.keystr(path)!r} has shape "
          f"{tuple(shape)} in each of {local_parts} process(es); the global "
          f"leading (batch) size must be a multiple of data * fsdp = {rows} "
          "on this mesh.")
    if processes > 1 and not is_global:
      return jax.make_array_from_process_local_data(sharding, np.asarray(x))
    return jax.device_put(x, sharding)

  return jax.tree_util.tree_map_with_path(put, batch)


def abstract_like(tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of `tree` carrying `shardings`.

  Restore targets for orbax: a checkpoint written on one mesh restores
  straight onto another (or one device) with these.
  """
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


def jit_update(update: Callable[..., Any], mesh: jax.sharding.Mesh,
               state: Any, teacher_params: Any = None, *,
               min_size: int = MIN_SHARD_SIZE) -> Callable[..., Any]:
  """`update(state, batch, teacher_params, key)` with explicit shardings.

  Inputs and outputs are pinned: the state and the teacher by the rules
  (`state_shardings`, `param_shardings`), the batch by rows
  (`batch_sharding`), the key and the metrics replicated. So the new state
  has exactly the layout of the old (no recompiles, checkpoints keep their
  layout) and the metrics are readable on every host (`float()` needs a
  replicated array in a multi-process run). Like an agent's update it
  donates the state it is given: keep only the returned one.

  Args:
    update: an agent's update (jitted or not; a jitted one is inlined).
    mesh: the mesh.
    state: the training state (arrays or `jax.ShapeDtypeStruct`s), for its
      structure and shapes.
    teacher_params: the teacher parameters (or None), likewise.
    min_size: as in `param_partition_specs`.

  Returns:
    The jitted update; it returns `(new_state, metrics)`.
  """
  replicated = NamedSharding(mesh, P())
  state_sh = state_shardings(state, mesh, min_size=min_size)
  teacher_sh = (None if teacher_params is None
                else param_shardings(teacher_params, mesh,
                                     min_size=min_size))
  # The state is donated, as by the agents' own jitted update: the new
  # state's buffers reuse the old ones (one copy of the state in memory).
  return jax.jit(update,
                 in_shardings=(state_sh, batch_sharding(mesh), teacher_sh,
                               replicated),
                 out_shardings=(state_sh, replicated), donate_argnums=0)
