"""Running a reward model's forward pass on the training mesh.

When the policy is sharded (`gkdrl.parallel`), a neural reward model (NLI
classifier, T5 judge, preference model) runs on the same devices:

  * its parameters are placed by the training rules (`parallel.shard_params`:
    split over "model" by path, over "fsdp" when large, else replicated);
  * each padded bucket of rows is split over the batch axes ("data",
    "fsdp"), its row count rounded up to a multiple of their product;
  * the jitted forward's output stays split the same way.

    forward = placement.make_forward(apply_fn, mesh)    # mesh may be None
    params = placement.place_params(params, mesh)
    rows = placement.padded_rows(n, mesh)               # bucket rows
    scores = forward(params, ids, mask)                 # [rows, ...]

Host reward models score each process's own rows, so they use
`host_mesh(mesh)`: the mesh's devices of this process (the whole mesh in a
single-process run). Without a mesh every function is the single-device
path: `jax.jit` on the default device.
"""

from collections.abc import Callable
import math
from typing import Any

import jax
from jax.sharding import NamedSharding

from gkdrl import validation

Mesh = jax.sharding.Mesh


def _parallel():
  # Imported on use: `gkdrl.parallel` pulls in the tasks package, which
  # `import gkdrl.reward_models` must not.
  from gkdrl import parallel  # pylint: disable=g-import-not-at-top
  return parallel


def rows_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over the mesh's batch axes (`parallel.batch_sharding`)."""
  return _parallel().batch_sharding(mesh)


def host_mesh(mesh: Mesh | None) -> Mesh | None:
  """This process's part of `mesh` (None stays None)."""
  return None if mesh is None else mesh.local_mesh


def row_multiple(mesh: Mesh | None) -> int:
  """How many shards the rows of a batch split into on `mesh` (1 if None)."""
  if mesh is None:
    return 1
  return math.prod(mesh.shape.get(a, 1) for a in _parallel().BATCH_AXES)


def padded_rows(rows: int, mesh: Mesh | None) -> int:
  """`rows` rounded up to a multiple of `row_multiple(mesh)`."""
  multiple = row_multiple(mesh)
  return -(-rows // multiple) * multiple


def _placed(params: Any, mesh: Mesh) -> bool:
  return all(isinstance(getattr(x, "sharding", None), NamedSharding)
             and x.sharding.mesh == mesh for x in jax.tree.leaves(params))


def place_params(params: Any, mesh: Mesh | None) -> Any:
  """`params` on `mesh` by `parallel.shard_params`' rules (as is if None or
  when every leaf already lies on `mesh`)."""
  if mesh is None or _placed(params, mesh):
    return params
  return _parallel().shard_params(params, mesh)


def make_forward(fn: Callable[..., Any],
                 mesh: Mesh | None) -> Callable[..., Any]:
  """`fn(params, *arrays)` jitted, on `mesh` when one is given.

  Args:
    fn: a pure function of parameters and row-major arrays `[N, ...]`.
    mesh: the mesh, or None for one device.

  Returns:
    `forward(params, *arrays)`. With a mesh, `params` are placed by
    `place_params` (a no-op when they already are), every array is split
    by rows (`parallel.batch_sharding`; N must be a multiple of
    `row_multiple(mesh)`), and so is every output.
  """
  if mesh is None:
    return jax.jit(fn)
  rows = rows_sharding(mesh)
  jitted = jax.jit(fn, out_shardings=rows)

  def forward(params, *arrays):
    for a in arrays:
      if a.shape[0] % row_multiple(mesh):
        validation.fail(
            "rows", a.shape[0], "it must be a multiple of the mesh's "
            f"{row_multiple(mesh)} row shards (pad with `padded_rows`)")
    return jitted(place_params(params, mesh),
                  *(jax.device_put(a, rows) for a in arrays))

  return forward
