"""A shallower student initialised from a teacher's layers.

    student, student_params = keep_every_kth_layer(teacher, params, k=3)

The student keeps the teacher's embeddings, final norm and head (copied),
and the teacher's transformer blocks 0, k, 2k, ... in order, as DistilBERT
(Sanh et al., 2019, https://arxiv.org/abs/1910.01108: one layer out of two)
and Minitron's depth pruning (Muralidharan et al., 2024,
https://arxiv.org/abs/2407.14679) initialise their students. Everything
else in the config is unchanged, so the student loads, saves and tokenizes
as the teacher does.

Layers are stacked (see gkdrl/networks/model.py): every per-layer parameter
has a leading [n_layers] axis, so keeping layers is one gather per array.
"""

from collections.abc import Sequence
import dataclasses

import haiku as hk
import numpy as np

from gkdrl import validation
from gkdrl.networks import model as model_lib


def every_kth_layer(n_layers: int, k: int) -> tuple[int, ...]:
  """The indices 0, k, 2k, ... below `n_layers`.

  Args:
    n_layers: the teacher's number of blocks, >= 1.
    k: keep one block out of k, in [1, n_layers].

  Returns:
    ceil(n_layers / k) increasing indices, starting with 0.
  """
  validation.check_int("n_layers", n_layers, 1)
  validation.check_int("k", k, 1, n_layers)
  return tuple(range(0, n_layers, k))


def keep_layers(model: model_lib.LanguageModel, params: hk.Params,
                layers: Sequence[int]
                ) -> tuple[model_lib.LanguageModel, hk.Params]:
  """The model made of `model`'s blocks `layers`, in that order.

  Args:
    model: a decoder-only `LanguageModel` (not an encoder-decoder).
    params: its parameters; per-layer arrays are [N, ...].
    layers: distinct block indices in [0, N), increasing, at least one.

  Returns:
    `(student, student_params)`: a model with `len(layers)` blocks, and
    parameters whose per-layer arrays are `params`' rows `layers` (copies,
    NumPy) and whose other arrays (embeddings, final norm, head) are copies
    of `params`' own.
  """
  if getattr(model, "is_encoder_decoder", False):
    validation.fail("model", type(model).__name__,
                    "a decoder-only LanguageModel")
  n = model.config.n_layers
  layers = tuple(layers)
  for i in layers:
    validation.check_int("layers[]", i, 0, n - 1)
  if not layers or list(layers) != sorted(set(layers)):
    validation.fail("layers", layers,
                    f"distinct increasing indices in [0, {n - 1}], at "
                    "least one")
  index = np.asarray(layers)
  student_params = {}
  for module, values in params.items():
    per_layer = module.startswith(model_lib.LAYERS)
    student_params[module] = {
        name: np.asarray(value)[index] if per_layer
        else np.array(value, copy=True)
        for name, value in values.items()}
  config = dataclasses.replace(model.config, n_layers=len(layers))
  return model_lib.make_model(config), student_params


def keep_every_kth_layer(model: model_lib.LanguageModel, params: hk.Params,
                         k: int
                         ) -> tuple[model_lib.LanguageModel, hk.Params]:
  """`keep_layers(model, params, every_kth_layer(N, k))`."""
  return keep_layers(model, params,
                     every_kth_layer(model.config.n_layers, k))
