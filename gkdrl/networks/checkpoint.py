"""Loading and saving models as Hugging Face directories or GGUF files.

    model, params = from_pretrained("path/to/hf_dir")          # safetensors
    model, params = from_pretrained("model.Q4_1.gguf", dtype=jnp.bfloat16)
    save_pretrained(model, params, "out_dir", tokenizer=tokenizer)

A Hugging Face directory holds config.json and either model.safetensors,
or shards listed in model.safetensors.index.json. Tensors are read with
safetensors' NumPy API (no PyTorch). `save_pretrained` writes a directory
that `transformers.AutoModelForCausalLM.from_pretrained` (decoder-only
models) or `transformers.T5ForConditionalGeneration.from_pretrained` (T5,
mT5) loads. config.json's `model_type` picks the family
(gkdrl/networks/families.py).
"""

import json
import logging
import os
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from gkdrl import validation
from gkdrl.networks import families
from gkdrl.networks import gguf_io
from gkdrl.networks import hf_weights
from gkdrl.networks.config import ModelConfig
from gkdrl.networks.t5_config import T5Config

PathLike = str | os.PathLike
_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


class _SafetensorsSource:
  """HF-named tensors from one or several safetensors files, read lazily.

  One file is open at a time: reading a tensor of another file closes the
  one open (`hf_weights.load_params` reads file by file).
  """

  def __init__(self, files: dict[str, pathlib.Path], location: pathlib.Path):
    self._files = files  # tensor name -> file
    self._location = location
    self._open = (None, None)  # (path, handle)

  def names(self):
    return self._files.keys()

  def get(self, name: str) -> np.ndarray:
    path = self._files[name]
    if self._open[0] != path:
      self._open = (None, None)  # drops (closes) the previous file first
      self._open = (path, hf_weights.open_safetensors(path))
    return self._open[1].get_tensor(name)

  def where(self, name: str | None = None) -> str:
    return str(self._files.get(name, self._location))


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON ({e}).") from e


def _directory_source(directory: pathlib.Path) -> _SafetensorsSource:
  """Finds the safetensors files of an HF directory and indexes tensors."""
  index = directory / _INDEX
  if index.exists():
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index}: no 'weight_map' dictionary.")
    files = {name: directory / shard for name, shard in weight_map.items()}
    for shard in sorted(set(files.values())):
      if not shard.exists():
        raise FileNotFoundError(
            f"{shard}: shard listed in {index} does not exist.")
    return _SafetensorsSource(files, directory)
  paths = [directory / _SINGLE] if (directory / _SINGLE).exists() else sorted(
      directory.glob("*.safetensors"))
  if not paths:
    others = sorted(p.name for p in directory.glob("*.bin"))
    hint = (f" (found {others}: PyTorch pickles are not read; convert them "
            "to safetensors)") if others else ""
    raise FileNotFoundError(
        f"{directory}: no {_SINGLE}, {_INDEX} or *.safetensors file{hint}.")
  files = {}
  for path in paths:
    with hf_weights.open_safetensors(path) as f:
      files.update({name: path for name in f.keys()})
  return _SafetensorsSource(files, directory)


def config_from_directory(directory: PathLike) -> ModelConfig | T5Config:
  """The config (`ModelConfig`, `T5Config`) of an HF directory's config.json.

  Raises:
    FileNotFoundError: no config.json.
    ValueError: unsupported architecture or option, naming the file.
  """
  path = pathlib.Path(directory) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: missing; {directory} is not a Hugging "
                            "Face model directory.")
  hf = _read_json(path)
  generation = pathlib.Path(directory) / "generation_config.json"
  if hf.get("eos_token_id") is None and generation.exists():
    hf["eos_token_id"] = _read_json(generation).get("eos_token_id")
  try:
    return families.of_hf_config(hf).config_from_hf(hf)
  except (ValueError, KeyError) as e:
    raise ValueError(f"{path}: {e}") from e


def from_pretrained(
    path: PathLike, *, dtype: Any = jnp.float32,
    shardings: Callable[[dict], Any] | None = None
) -> tuple[Any, dict]:
  """Loads a model and its parameters from a HF directory or a GGUF file.

  Tensors are read one at a time, shard after shard, each converted to
  `dtype` and placed on its device(s) before the next is read
  (`hf_weights.load_params`): the host never holds the whole model. On a
  mesh, each parameter goes straight to its sharding:

      from_pretrained(path, shardings=lambda shapes:
                      parallel.param_shardings(shapes, mesh))

  Args:
    path: a local Hugging Face directory (config.json + safetensors) or a
      `.gguf` file (tensors dequantised to `dtype`).
    dtype: dtype of the returned parameters.
    shardings: None (the default device), or `shardings(shapes)` giving,
      for the parameters' `jax.ShapeDtypeStruct`s, a pytree of their
      `jax.sharding.Sharding`s.

  Returns:
    `(model, params)`: a `LanguageModel`, or an `EncoderDecoderModel` for
    T5 and mT5 directories.

  Raises:
    FileNotFoundError: `path` or a file it needs does not exist.
    ValueError: unknown architecture, or a missing or misshapen tensor (the
      message names the file, the tensor and the expected shape).
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(
        f"Model path {str(path)!r} does not exist; expected a Hugging Face "
        "directory (config.json + *.safetensors) or a .gguf file.")
  if path.is_file():
    if path.suffix != ".gguf":
      raise ValueError(f"{path}: not a directory or a .gguf file.")
    config, source = gguf_io.open_gguf(path)
    family = families.DECODER_ONLY
  else:
    config = config_from_directory(path)
    family = families.of_config(config)
    source = _directory_source(path)
    config = family.resolve(config, source)
    unused = family.unused_tensors(config, source.names())
    if unused:
      logging.warning("%s: ignoring %d tensors not used by %s: %s", path,
                      len(unused), config.architecture, unused[:8])
  model = family.make_model(config)
  if shardings is None:
    return model, family.load_params(config, source, dtype=dtype)
  if family is not families.DECODER_ONLY:
    validation.fail("shardings", shardings,
                    "None for T5 models (placement while loading is for "
                    "decoder-only models)")
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype),
                        shapes)
  return model, family.load_params(config, source, dtype=dtype,
                                   shardings=shardings(shapes))


def save_pretrained(model: Any, params: dict,
                    out_dir: PathLike, tokenizer=None, *,
                    max_shard_bytes: int | None = None) -> pathlib.Path:
  """Writes an HF directory that transformers loads with the same logits.

  Args:
    model: a `LanguageModel` or `EncoderDecoderModel` (its config decides
      names and config.json).
    params: its parameters (any float dtype; written as they are).
    out_dir: the directory to write (created if needed).
    tokenizer: optional transformers tokenizer, saved beside the weights.
    max_shard_bytes: None writes one model.safetensors; else shards of at
      most this many bytes (a tensor larger than that gets a shard of its
      own) listed in model.safetensors.index.json, as transformers does.

  Returns:
    The output directory.
  """
  config = model.config
  family = families.of_config(config)
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tensors = family.to_hf_tensors(config, params)
  dtypes = {str(t.dtype) for t in tensors.values()}
  hf = config.to_hf_config()
  if len(dtypes) == 1:
    hf["dtype"] = dtypes.pop()
  with open(out_dir / "config.json", "w") as f:
    json.dump(hf, f, indent=2, sort_keys=True)
  generation = family.generation_config(config)
  with open(out_dir / "generation_config.json", "w") as f:
    json.dump(generation, f, indent=2, sort_keys=True)
  if max_shard_bytes is None:
    safetensors.numpy.save_file(tensors, str(out_dir / _SINGLE),
                                metadata={"format": "pt"})
  else:
    _save_shards(tensors, out_dir, max_shard_bytes)
  if tokenizer is not None:
    tokenizer.save_pretrained(str(out_dir))
  return out_dir


def _save_shards(tensors: dict[str, np.ndarray], out_dir: pathlib.Path,
                 max_shard_bytes: int) -> None:
  """Writes transformers' sharded layout: shards and their index."""
  validation.check_int("max_shard_bytes", max_shard_bytes, 1)
  shards, size = [[]], 0
  for name in sorted(tensors):
    nbytes = tensors[name].nbytes
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  weight_map = {}
  for i, names in enumerate(shards):
    file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    safetensors.numpy.save_file({n: tensors[n] for n in names},
                                str(out_dir / file),
                                metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(names, file))
  total = sum(t.nbytes for t in tensors.values())
  with open(out_dir / _INDEX, "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              f, indent=2, sort_keys=True)
