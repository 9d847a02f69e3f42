"""Tests of reading BERT/RoBERTa weights from local HF directories."""

import json
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from gkdrl import reward_models as rm
from gkdrl.reward_models import encoder_weights
from tests.reward_models import checkpoints


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("bert")
  tensors = checkpoints.write_numpy_checkpoint(path, "bert", seed=3)
  return path, tensors


def _copy_without_weights(src, dst):
  dst.mkdir()
  shutil.copy(src / "config.json", dst / "config.json")
  return json.loads((src / "config.json").read_text())


def test_head_params_are_the_transposed_hf_tensors(bert_dir):
  path, tensors = bert_dir
  config, params = rm.load_encoder(path, num_labels=3)
  np.testing.assert_array_equal(params["classifier/out"]["w"],
                                tensors["classifier.weight"].T)
  np.testing.assert_array_equal(
      params["encoder/layer_1/intermediate"]["w"],
      tensors["bert.encoder.layer.1.intermediate.dense.weight"].T)
  np.testing.assert_array_equal(
      params["encoder/embeddings_layer_norm"]["scale"],
      tensors["bert.embeddings.LayerNorm.weight"])
  assert config.num_labels == 3 and config.family == "bert"


def test_encoder_only_from_prefixed_or_plain_names(bert_dir, tmp_path):
  path, tensors = bert_dir
  _, from_task_model = rm.load_encoder(path)
  assert not any(k.startswith("classifier") for k in from_task_model)
  plain = {k.removeprefix("bert."): v for k, v in tensors.items()
           if k.startswith("bert.") and "pooler" not in k}
  _copy_without_weights(path, tmp_path / "plain")
  save_file(plain, str(tmp_path / "plain" / "model.safetensors"))
  _, from_plain = rm.load_encoder(tmp_path / "plain")
  for module, group in from_plain.items():
    for name, value in group.items():
      np.testing.assert_array_equal(value, from_task_model[module][name])


def test_sharded_index(bert_dir, tmp_path):
  path, tensors = bert_dir
  out = tmp_path / "sharded"
  _copy_without_weights(path, out)
  names = sorted(tensors)
  shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
  for file, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, str(out / file))
  index = {"weight_map": {k: f for f, ks in shards.items() for k in ks}}
  (out / "model.safetensors.index.json").write_text(json.dumps(index))
  read = rm.read_safetensors(out)
  assert sorted(read) == names
  for k in names:
    np.testing.assert_array_equal(read[k], tensors[k])


def test_bf16_tensors_are_decoded(tmp_path):
  values = np.array([[1.5, -2.25], [0.0078125, 3.0]], np.float32)
  raw = values.astype(ml_dtypes.bfloat16).tobytes()
  header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2],
                             "data_offsets": [0, len(raw)]}}).encode()
  with open(tmp_path / "model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + raw)
  read = rm.read_safetensors(tmp_path)
  assert read["w"].dtype == np.float32
  np.testing.assert_array_equal(read["w"], values)


def test_pytorch_bin_only_is_a_clear_error(bert_dir, tmp_path):
  _copy_without_weights(bert_dir[0], tmp_path / "bin")
  (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
    rm.load_encoder(tmp_path / "bin")


def test_missing_tensor_is_named(bert_dir, tmp_path):
  path, tensors = bert_dir
  _copy_without_weights(path, tmp_path / "partial")
  name = "bert.encoder.layer.1.output.dense.weight"
  save_file({k: v for k, v in tensors.items() if k != name},
            str(tmp_path / "partial" / "model.safetensors"))
  with pytest.raises(ValueError, match="encoder.layer.1.output.dense.weight"):
    rm.load_encoder(tmp_path / "partial")


def test_wrong_shape_is_named(bert_dir, tmp_path):
  path, tensors = bert_dir
  config = _copy_without_weights(path, tmp_path / "wide")
  config["intermediate_size"] += 1
  (tmp_path / "wide" / "config.json").write_text(json.dumps(config))
  save_file(tensors, str(tmp_path / "wide" / "model.safetensors"))
  with pytest.raises(ValueError, match="intermediate"):
    rm.load_encoder(tmp_path / "wide")


@pytest.mark.parametrize("change,match", [
    (dict(model_type="gpt2"), "model_type"),
    (dict(position_embedding_type="relative_key"), "position_embedding_type"),
    (dict(hidden_act="mish"), "hidden_act"),
])
def test_unsupported_configs(change, match):
  base = checkpoints.hf_config("bert", 40, checkpoints.NLI_LABELS)
  with pytest.raises(ValueError, match=match):
    rm.encoder_config_from_hf({**base, **change})


def test_missing_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    encoder_weights.read_config(tmp_path / "nowhere")


def test_truncated_safetensors_file_is_named_with_its_size(bert_dir,
                                                           tmp_path):
  path, _ = bert_dir
  shutil.copytree(path, tmp_path / "cut")
  weights = tmp_path / "cut" / "model.safetensors"
  data = weights.read_bytes()
  weights.write_bytes(data[:len(data) - 1000])
  with pytest.raises(ValueError) as info:
    rm.load_encoder(tmp_path / "cut")
  assert str(info.value).startswith(
      f"{weights}: truncated safetensors file: it is {len(data) - 1000:,} "
      f"bytes, but its header describes {len(data):,} bytes")
