"""gkdrl.parallel: data-parallel and fully sharded training with jax.sharding.

    mesh = parallel.make_mesh("data:4,fsdp:2")
    state = parallel.shard_state(agent.init(params), mesh)
    teacher_params = parallel.shard_params(teacher_params, mesh)
    batch = parallel.shard_batch(batch, mesh)
    state, metrics = agent.update(state, batch, teacher_params, key)

`agent.update` is jitted without explicit shardings; XLA propagates the
shardings of its inputs, so the same update runs on one device or a mesh.
"""

from gkdrl.parallel.mesh import AXES
from gkdrl.parallel.mesh import initialize_distributed
from gkdrl.parallel.mesh import make_mesh
from gkdrl.parallel.mesh import parse_mesh
from gkdrl.parallel.sharding import abstract_like
from gkdrl.parallel.sharding import batch_sharding
from gkdrl.parallel.sharding import BATCH_AXES
from gkdrl.parallel.sharding import MIN_SHARD_SIZE
from gkdrl.parallel.sharding import param_partition_specs
from gkdrl.parallel.sharding import param_shardings
from gkdrl.parallel.sharding import partition_spec
from gkdrl.parallel.sharding import shard_batch
from gkdrl.parallel.sharding import shard_params
from gkdrl.parallel.sharding import shard_state
from gkdrl.parallel.sharding import state_shardings

__all__ = [
    "AXES",
    "BATCH_AXES",
    "MIN_SHARD_SIZE",
    "abstract_like",
    "batch_sharding",
    "initialize_distributed",
    "make_mesh",
    "param_partition_specs",
    "param_shardings",
    "parse_mesh",
    "partition_spec",
    "shard_batch",
    "shard_params",
    "shard_state",
    "state_shardings",
]
