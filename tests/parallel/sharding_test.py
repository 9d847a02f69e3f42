"""Partition-spec rules, batch sharding and optimizer-state placement.

Rules are checked on abstract meshes (sizes only, no devices), so these run
in the ordinary single-device process.
"""

import jax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gkdrl import parallel
from gkdrl import types
from gkdrl.agents import base


def abstract_mesh(data=1, fsdp=1, model=1):
  return jax.sharding.AbstractMesh((data, fsdp, model), parallel.AXES)


def sds(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


# Shapes like SmolLM2-135M: D=576, 9 query and 3 KV heads of 64, d_ff=1536.
PARAMS = {
    "lm/embed": {"embeddings": sds(49152, 576)},
    "lm/final_norm": {"scale": sds(576)},
    "lm/layers/attn_norm": {"scale": sds(30, 576)},
    "lm/layers/attention/query": {"w": sds(30, 576, 576)},
    "lm/layers/attention/key": {"w": sds(30, 576, 192)},
    "lm/layers/attention/out": {"w": sds(30, 576, 576)},
    "lm/layers/mlp/up": {"w": sds(30, 576, 1536)},
    "lm/layers/mlp/down": {"w": sds(30, 1536, 576)},
    "lm/unembed": {"w": sds(576, 49152)},
}


def test_fsdp_takes_the_largest_divisible_dimension():
  specs = parallel.param_partition_specs(PARAMS, abstract_mesh(fsdp=4))
  assert specs["lm/embed"]["embeddings"] == P("fsdp", None)
  assert specs["lm/unembed"]["w"] == P(None, "fsdp")
  assert specs["lm/layers/mlp/up"]["w"] == P(None, None, "fsdp")
  assert specs["lm/layers/mlp/down"]["w"] == P(None, "fsdp", None)
  # Ties go to the earlier dimension; the [n_layers] axis never shards.
  assert specs["lm/layers/attention/query"]["w"] == P(None, "fsdp", None)
  # Small arrays stay replicated.
  assert specs["lm/final_norm"]["scale"] == P(None)
  assert specs["lm/layers/attn_norm"]["scale"] == P(None, None)


def test_fsdp_skips_dimensions_it_does_not_divide():
  specs = parallel.param_partition_specs(PARAMS, abstract_mesh(fsdp=5))
  # 49152 % 5 != 0 and 576 % 5 != 0: nothing divides.
  assert specs["lm/embed"]["embeddings"] == P(None, None)
  specs = parallel.param_partition_specs(PARAMS, abstract_mesh(fsdp=256))
  assert specs["lm/embed"]["embeddings"] == P("fsdp", None)
  assert specs["lm/layers/mlp/up"]["w"] == P(None, None, "fsdp")
  assert specs["lm/layers/mlp/down"]["w"] == P(None, "fsdp", None)
  # 576 % 256 != 0 and the layer axis is excluded.
  assert specs["lm/layers/attention/query"]["w"] == P(None, None, None)


def test_stacked_layer_axis_is_never_sharded():
  params = {"lm/layers/mlp/up": {"w": sds(64, 8, 8)}}
  specs = parallel.param_partition_specs(params, abstract_mesh(fsdp=8),
                                         min_size=0)
  assert specs["lm/layers/mlp/up"]["w"] == P(None, "fsdp", None)
  # The same shape outside a layer stack shards its largest dimension.
  specs = parallel.param_partition_specs({"lm/x": {"w": sds(64, 8, 8)}},
                                         abstract_mesh(fsdp=8), min_size=0)
  assert specs["lm/x"]["w"] == P("fsdp", None, None)


def test_min_size_threshold():
  params = {"lm/embed": {"embeddings": sds(64, 32)}}  # 2048 elements
  mesh = abstract_mesh(fsdp=2)
  assert parallel.MIN_SHARD_SIZE > 2048
  assert parallel.param_partition_specs(params, mesh)["lm/embed"][
      "embeddings"] == P(None, None)
  assert parallel.param_partition_specs(params, mesh, min_size=2048)[
      "lm/embed"]["embeddings"] == P("fsdp", None)


def test_model_axis_splits_heads_and_mlp_width():
  specs = parallel.param_partition_specs(PARAMS,
                                         abstract_mesh(fsdp=2, model=3))
  assert specs["lm/layers/attention/query"]["w"] == P(None, "fsdp", "model")
  assert specs["lm/layers/attention/key"]["w"] == P(None, "fsdp", "model")
  assert specs["lm/layers/mlp/up"]["w"] == P(None, "fsdp", "model")
  assert specs["lm/layers/attention/out"]["w"] == P(None, "model", "fsdp")
  assert specs["lm/layers/mlp/down"]["w"] == P(None, "model", "fsdp")
  # Not a head/width weight: fsdp only.
  assert specs["lm/embed"]["embeddings"] == P("fsdp", None)
  # A model size that does not divide the width leaves it unsplit.
  specs = parallel.param_partition_specs(PARAMS, abstract_mesh(model=5))
  assert specs["lm/layers/mlp/up"]["w"] == P(None, None, None)


def test_state_shardings_follow_the_parameters():
  params = {"lm/embed": {"embeddings": jnp.zeros((64, 32))},
            "lm/final_norm": {"scale": jnp.ones((32,))}}
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  state = base.make_init(optimizer, keep_reference=True)(params)
  mesh = abstract_mesh(data=2, fsdp=2)
  shardings = parallel.state_shardings(state, mesh, min_size=0)
  leaves = jax.tree_util.tree_flatten_with_path(shardings)[0]
  embed_like = [s.spec for path, s in leaves
                if "'lm/embed'" in jax.tree_util.keystr(path)]
  # params, Adam's mu and nu, and the reference copy.
  assert embed_like == [P("fsdp", None)] * 4
  scalar = [s.spec for path, s in leaves if "count" in
            jax.tree_util.keystr(path)]
  assert scalar and all(spec == P() for spec in scalar)
  assert shardings.step.spec == P()
  assert jax.tree.structure(shardings) == jax.tree.structure(state)


def test_shard_batch_splits_rows_over_data_and_fsdp():
  mesh = parallel.make_mesh("auto")
  assert parallel.batch_sharding(mesh).spec == P(("data", "fsdp"))
  batch = types.Batch(
      prompt_tokens=np.ones((4, 3), np.int32),
      prompt_mask=np.ones((4, 3), bool),
      completion_tokens=np.ones((4, 2), np.int32),
      completion_mask=np.ones((4, 2), bool),
      rewards=np.arange(4, dtype=np.float32))
  out = parallel.shard_batch(batch, mesh)
  assert out.behaviour_logp_a is None
  np.testing.assert_array_equal(out.rewards, batch.rewards)
  assert out.prompt_tokens.sharding.spec == P(("data", "fsdp"))


def test_shard_batch_rejects_indivisible_rows():
  batch = types.Batch(
      prompt_tokens=np.ones((6, 3), np.int32),
      prompt_mask=np.ones((6, 3), bool),
      completion_tokens=np.ones((6, 2), np.int32),
      completion_mask=np.ones((6, 2), bool))
  with pytest.raises(ValueError, match=r"prompt_tokens.*\(6, 3\).*"
                     r"multiple of data \* fsdp = 4"):
    parallel.shard_batch(batch, abstract_mesh(data=2, fsdp=2, model=2))


def test_shard_params_places_arrays_with_the_rules():
  mesh = parallel.make_mesh("auto")
  params = {"lm/embed": {"embeddings": jnp.arange(12.0).reshape(4, 3)}}
  out = parallel.shard_params(params, mesh, min_size=0)
  leaf = out["lm/embed"]["embeddings"]
  np.testing.assert_array_equal(leaf, params["lm/embed"]["embeddings"])
  assert leaf.sharding.mesh == mesh
  abstract = parallel.abstract_like(params, parallel.param_shardings(
      params, mesh))
  assert abstract["lm/embed"]["embeddings"].sharding.mesh == mesh
  assert abstract["lm/embed"]["embeddings"].shape == (4, 3)
