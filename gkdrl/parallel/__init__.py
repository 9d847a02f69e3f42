"""gkdrl.parallel: data-parallel and fully sharded training with jax.sharding.

    parallel.initialize_distributed()          # multi-host: before other JAX
    mesh = parallel.make_mesh("data:4,fsdp:2")
    state = parallel.shard_state(agent.init(params), mesh)
    teacher_params = parallel.shard_params(teacher_params, mesh)
    update = parallel.jit_update(agent.update, mesh, state, teacher_params)
    batches = task.batches("train", B, seed=0, num_epochs=None,
                           drop_remainder=True, **parallel.process_split())
    task_batch = parallel.global_task_batch(next(batches), mesh, pad_id)
    batch, _ = agent.act(state, task_batch, key, ...)  # sharded prompts
    state, metrics = update(state, parallel.shard_batch(batch, mesh),
                            teacher_params, key)

`jit_update` pins the update's input and output shardings (state and
teacher by the rules, batch by rows, key and metrics replicated); the
sampler starts from row-sharded prompts and sharded parameters, and its
output is placed by `shard_batch`. Each process of a multi-host run reads
only its rows of every global batch.
"""

from gkdrl.parallel.data import common_lengths
from gkdrl.parallel.data import from_host_local
from gkdrl.parallel.data import gather
from gkdrl.parallel.data import global_task_batch
from gkdrl.parallel.data import host_local
from gkdrl.parallel.data import process_split
from gkdrl.parallel.mesh import AXES
from gkdrl.parallel.mesh import ENV_VARS
from gkdrl.parallel.mesh import initialize_distributed
from gkdrl.parallel.mesh import make_mesh
from gkdrl.parallel.mesh import parse_mesh
from gkdrl.parallel.sharding import abstract_like
from gkdrl.parallel.sharding import batch_sharding
from gkdrl.parallel.sharding import BATCH_AXES
from gkdrl.parallel.sharding import jit_update
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
    "ENV_VARS",
    "MIN_SHARD_SIZE",
    "abstract_like",
    "batch_sharding",
    "common_lengths",
    "from_host_local",
    "gather",
    "global_task_batch",
    "host_local",
    "initialize_distributed",
    "jit_update",
    "make_mesh",
    "param_partition_specs",
    "param_shardings",
    "parse_mesh",
    "partition_spec",
    "process_split",
    "shard_batch",
    "shard_params",
    "shard_state",
    "state_shardings",
]
