"""Reward-model forwards on the training mesh (`reward_models.placement`).

JAX fixes the CPU device count at start-up, so the 8-device checks run in a
subprocess with 8 forced host devices; it compares every sharded reward
with the same model on one device and checks where its output lies.
"""

import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from gkdrl.reward_models import placement
from tests import shared_programs

_SCRIPT = textwrap.dedent("""
    import pathlib, sys, tempfile
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from gkdrl import networks, parallel, tasks
    from gkdrl import reward_models as rm
    from gkdrl.reward_models import preference_training as pt
    from gkdrl.tasks import facts_grammar
    from tests.reward_models import checkpoints

    assert jax.device_count() == 8
    root = pathlib.Path(tempfile.mkdtemp())
    mesh = parallel.make_mesh("data:2,fsdp:2,model:2")

    def on_mesh(x):
      return (isinstance(x.sharding, NamedSharding)
              and x.sharding.mesh == mesh
              and len(x.sharding.device_set) == 8)

    def rows_split(x):
      return on_mesh(x) and x.sharding.spec[0] == ("data", "fsdp")

    # An NLI classifier (BERT): 5 rows pad to a bucket of 8 rows.
    checkpoints.write_numpy_checkpoint(root / "bert", "bert")
    config = rm.EntailmentConfig(batch_size=8, min_bucket=8)
    one = rm.EntailmentReward(root / "bert", config)
    sharded = rm.EntailmentReward(root / "bert", config, mesh=mesh)
    params = sharded.init()
    assert all(on_mesh(x) for x in jax.tree.leaves(params))
    # The "model" axis splits the attention projections, as in training.
    query = [x for p, x in jax.tree_util.tree_leaves_with_path(params)
             if "query" in jax.tree_util.keystr(p) and x.ndim == 2][0]
    assert "model" in query.sharding.spec, query.sharding.spec
    premises = ["the cat sat on the mat .", "a dog ran in the park .",
                "the man eats food .", "the tree is big .", "a car ."]
    hypotheses = ["the cat sat .", "a dog ran .", "the woman eats .",
                  "the tree is small .", "a green car drives ."]
    np.testing.assert_allclose(
        sharded.probabilities(params, premises, hypotheses),
        one.probabilities(one.init(), premises, hypotheses), atol=1e-5)
    ids = np.ones((8, 8), np.int32)
    out = sharded.forward(params, ids, np.ones_like(ids), np.zeros_like(ids))
    assert rows_split(out), out.sharding
    # A bucket whose rows do not split 4 ways is refused with advice.
    try:
      sharded.forward(params, ids[:6], np.ones_like(ids[:6]),
                      np.zeros_like(ids[:6]))
      raise AssertionError("6 rows were accepted")
    except ValueError as e:
      assert "padded_rows" in str(e), e

    # A preference model, on the host from text and on device from tokens.
    tok = tasks.make_word_tokenizer(facts_grammar.vocabulary())
    lm = networks.make_model(networks.ModelConfig(
        model_type="llama", vocab_size=len(tok), d_model=32, n_layers=2,
        n_heads=4, n_kv_heads=2, d_ff=64, max_positions=64, pad_token_id=0))
    lm_dir = root / "lm"
    networks.save_pretrained(lm, lm.init(jax.random.key(0)), lm_dir,
                             tokenizer=tok)
    model = pt.init_from_causal_lm(str(lm_dir), jax.random.key(1),
                                   head_scale=1.0)
    pt.save_preference_model(model, root / "rm", tok)
    sources = ["document : Abel lives in Riga . summary :"] * 3
    completions = ["Abel is a builder .", "Abel lives in Riga .", "Abel ."]
    inputs = rm.RewardInputs(sources=sources, completions=completions)
    host_one = rm.make_preference_reward(root / "rm")
    host = rm.make_preference_reward(root / "rm", mesh=mesh)
    host_params = host.init()
    assert all(on_mesh(x) for x in jax.tree.leaves(host_params))
    np.testing.assert_allclose(host.score(host_params, inputs),
                               host_one.score(host_one.init(), inputs),
                               atol=1e-5)

    dev_one = rm.make_preference_reward(root / "rm", on_host=False)
    dev = rm.make_preference_reward(root / "rm", on_host=False, mesh=mesh)
    enc = [tok(s)["input_ids"] for s in sources]
    comp = [tok(c)["input_ids"] for c in completions]
    def left(rows, n):
      t = np.zeros((8, n), np.int32); m = np.zeros((8, n), bool)
      for i, r in enumerate(rows * 3):
        if i < 8:
          t[i, n - len(r):], m[i, n - len(r):] = r, True
      return t, m
    def right(rows, n):
      t = np.zeros((8, n), np.int32); m = np.zeros((8, n), bool)
      for i, r in enumerate(rows * 3):
        if i < 8:
          t[i, :len(r)], m[i, :len(r)] = r, True
      return t, m
    (pt_, pm), (ct, cm) = left(enc, 16), right(comp, 8)
    tokens = rm.RewardInputs(prompt_tokens=pt_, prompt_mask=pm,
                             completion_tokens=ct, completion_mask=cm)
    ref = jax.jit(dev_one.score)(dev_one.init(), tokens)
    batch = parallel.shard_batch(tokens, mesh)
    got = jax.jit(dev.score)(dev.init(), batch)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert rows_split(got), got.sharding
    print("OK")
""")


@pytest.mark.slow
def test_reward_forwards_on_an_8_device_mesh_match_one_device():
  env = shared_programs.subprocess_env(
      "--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
      HF_HUB_OFFLINE="1")
  result = subprocess.run([sys.executable, "-c", _SCRIPT],
                          capture_output=True, text=True, env=env,
                          timeout=600, check=False)
  assert result.returncode == 0, (result.stdout[-2000:]
                                  + result.stderr[-4000:])
  assert "OK" in result.stdout


def test_without_a_mesh_everything_is_the_one_device_path():
  assert placement.host_mesh(None) is None
  assert placement.row_multiple(None) == 1
  assert placement.padded_rows(5, None) == 5
  params = {"w": np.ones((3,), np.float32)}
  assert placement.place_params(params, None) is params
  forward = placement.make_forward(lambda p, x: x * p["w"], None)
  np.testing.assert_array_equal(forward(params, np.ones((2, 3))),
                                np.ones((2, 3)))


def test_rows_round_up_to_the_batch_shards_of_a_one_device_mesh():
  mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "model"))
  assert placement.row_multiple(mesh) == 1
  assert placement.padded_rows(3, mesh) == 3
  forward = placement.make_forward(lambda p, x: x + p, mesh)
  out = forward(np.float32(1.0), np.zeros((3, 2), np.float32))
  np.testing.assert_array_equal(out, np.ones((3, 2)))
  assert out.sharding.mesh == mesh
