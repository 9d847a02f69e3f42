"""Low-rank adapters (LoRA) on the decoder's weight projections.

    adapters = init_adapters(key, params, rank=16)          # A random, B = 0
    merged = merge(params, adapters, alpha=32.0, rank=16)   # == params at init
    save_adapters(model, adapters, "out", rank=16, alpha=32.0)  # PEFT layout

A target projection `w` [N, D_in, D_out] (N layers; `hk.Linear` stores
`x @ w`) gets `a` [N, D_in, r] and `b` [N, r, D_out], and the model runs on

    w' = w + (alpha / r) * a @ b.

See Hu et al. 2021, LoRA (https://arxiv.org/abs/2106.09685), Eq. 3. As in
PEFT, `a` starts Kaiming-uniform (bound 1 / sqrt(D_in)) and `b` at zero, so
the initial model is the base model. Targets are named as our Haiku
modules: "query", "key", "value", "out" (attention) and "gate", "up",
"down" (MLP); a target the model lacks (GPT-2 has no "gate") is skipped.

`merge` builds the full merged weights: exact and simple, at the cost of
one [N, D_in, D_out] product and temporary per target per call (in an
update also its gradient, from which the adapters' gradients follow). The
optimizer state and the persistent gradients are the adapters' only.
"""

import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from gkdrl import validation
from gkdrl.networks import model as model_lib

Array = jax.Array
Params = Any

# Target name -> Haiku module of the projection (inside the layer stack).
TARGET_MODULES = {
    "query": f"{model_lib.LAYERS}/attention/query",
    "key": f"{model_lib.LAYERS}/attention/key",
    "value": f"{model_lib.LAYERS}/attention/value",
    "out": f"{model_lib.LAYERS}/attention/out",
    "gate": f"{model_lib.LAYERS}/mlp/gate",
    "up": f"{model_lib.LAYERS}/mlp/up",
    "down": f"{model_lib.LAYERS}/mlp/down",
}
DEFAULT_TARGETS = tuple(TARGET_MODULES)

# Target name -> the Llama/Qwen2 module it is in transformers and PEFT.
HF_MODULES = {
    "query": "self_attn.q_proj", "key": "self_attn.k_proj",
    "value": "self_attn.v_proj", "out": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def check_targets(targets) -> tuple[str, ...]:
  """`targets` as a tuple of known, distinct target names."""
  targets = tuple(targets)
  unknown = [t for t in targets if t not in TARGET_MODULES]
  if not targets or unknown or len(set(targets)) != len(targets):
    validation.fail("lora_targets", list(targets),
                    "one or more distinct names of "
                    + ", ".join(DEFAULT_TARGETS))
  return targets


def target_modules(params: Params, targets=DEFAULT_TARGETS) -> list[str]:
  """The Haiku modules of `targets` that `params` has."""
  modules = [TARGET_MODULES[t] for t in check_targets(targets)
             if TARGET_MODULES[t] in params]
  if not modules:
    validation.fail("lora_targets", list(targets),
                    "at least one projection the model has")
  return modules


def init_adapters(key: Array, params: Params, *, rank: int,
                  targets=DEFAULT_TARGETS, dtype=jnp.float32) -> Params:
  """Adapters `{module: {"a": [N, D_in, r], "b": [N, r, D_out]}}`.

  Args:
    key: PRNG key of the `a` matrices.
    params: the base model's parameters (only shapes are read).
    rank: r, >= 1.
    targets: names of `TARGET_MODULES`.
    dtype: dtype of the adapters.
  """
  validation.check_int("lora_rank", rank, 1)
  modules = target_modules(params, targets)
  adapters = {}
  for module, module_key in zip(modules,
                                jax.random.split(key, len(modules))):
    n, d_in, d_out = params[module]["w"].shape
    bound = 1.0 / np.sqrt(d_in)  # PEFT: kaiming_uniform_(a=sqrt(5))
    adapters[module] = {
        "a": jax.random.uniform(module_key, (n, d_in, rank), dtype,
                                -bound, bound),
        "b": jnp.zeros((n, rank, d_out), dtype)}
  return adapters


def delta(adapters_of_module: dict[str, Array], scale: float) -> Array:
  """`scale * a @ b`: [N, D_in, D_out] in float32."""
  return scale * jnp.einsum(
      "nir,nro->nio", adapters_of_module["a"], adapters_of_module["b"],
      preferred_element_type=jnp.float32)


def merge(params: Params, adapters: Params, *, alpha: float, rank: int,
          dtype=None) -> Params:
  """The parameters with every adapted `w` replaced by `w + alpha/r a@b`.

  Args:
    params: base parameters (any float dtype).
    adapters: from `init_adapters` (or trained).
    alpha: LoRA alpha; the update is scaled by alpha / rank.
    rank: r.
    dtype: dtype of every float leaf of the result; None: the adapters'.

  Returns:
    Parameters with the structure of `params`.
  """
  if dtype is None:
    dtype = jax.tree.leaves(adapters)[0].dtype
  scale = alpha / rank
  merged = {}
  for module, leaves in params.items():
    merged[module] = {}
    for name, value in leaves.items():
      if jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.float32 if module in adapters else dtype)
      if module in adapters and name == "w":
        value = value + delta(adapters[module], scale)
      merged[module][name] = value.astype(dtype) if jnp.issubdtype(
          value.dtype, jnp.floating) else value
  return merged


def num_parameters(adapters: Params) -> int:
  """Trainable adapter parameters: sum over targets of N r (D_in + D_out)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapters))


def to_peft_tensors(config, adapters: Params) -> dict[str, np.ndarray]:
  """The adapters as PEFT names and layouts (Llama/Qwen2 families).

  PEFT stores `lora_A.weight` [r, D_in] and `lora_B.weight` [D_out, r] per
  layer (torch's [out, in]): our `a[i].T` and `b[i].T`.
  """
  if config.model_type == "gpt2":
    raise ValueError(
        "model_type='gpt2' is not allowed for PEFT adapter files; allowed: "
        "the Llama/Qwen2 families (GPT-2's fused attention has no per-"
        "projection PEFT layout). Write the merged model instead.")
  hf_of = {module: HF_MODULES[t] for t, module in TARGET_MODULES.items()}
  tensors = {}
  for module, leaves in adapters.items():
    a, b = np.asarray(leaves["a"]), np.asarray(leaves["b"])
    for i in range(a.shape[0]):
      stem = f"base_model.model.model.layers.{i}.{hf_of[module]}"
      tensors[f"{stem}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
      tensors[f"{stem}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
  return tensors


def save_adapters(model, adapters: Params, out_dir: str | os.PathLike, *,
                  rank: int, alpha: float,
                  base_model: str | None = None) -> pathlib.Path:
  """Writes the adapters alone in the PEFT layout.

  `adapter_config.json` and `adapter_model.safetensors` (float32), which
  `peft.PeftModel.from_pretrained(base, out_dir)` loads onto the base model.

  Args:
    model: the student `LanguageModel` (its config names the tensors).
    adapters: the trained adapters.
    out_dir: directory to write (created if needed).
    rank: r.
    alpha: LoRA alpha.
    base_model: the base model's path or hub name, recorded in the config.

  Returns:
    The output directory.
  """
  tensors = to_peft_tensors(model.config, jax.device_get(adapters))
  tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
  targets = sorted({HF_MODULES[t].split(".")[-1]
                    for t, m in TARGET_MODULES.items() if m in adapters})
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  peft_config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank,
      "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none",
      "target_modules": targets, "fan_in_fan_out": False,
      "inference_mode": True, "init_lora_weights": True,
      "use_rslora": False, "use_dora": False, "modules_to_save": None,
      "base_model_name_or_path": base_model}
  with open(out_dir / PEFT_CONFIG, "w") as f:
    json.dump(peft_config, f, indent=2, sort_keys=True)
  safetensors.numpy.save_file(tensors, str(out_dir / PEFT_WEIGHTS),
                              metadata={"format": "pt"})
  return out_dir
