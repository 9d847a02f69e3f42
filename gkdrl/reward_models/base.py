"""The reward-model interface: `RewardInputs` in, rewards `[B]` float32 out.

Every reward model is a `RewardModel(name, on_host, init, score)` of pure
functions (the optax pattern): `init(key) -> params` and
`score(params, inputs) -> rewards [B] float32`. Host models (`on_host=True`)
read decoded text and return a NumPy array; device models (`on_host=False`)
read only the token arrays of `RewardInputs`, return a `jax.Array` and may be
called inside `jax.jit`.
"""

from collections.abc import Callable, Sequence
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gkdrl import types

Array = types.Array
Params = Any
_TEXT_FIELDS = ("sources", "completions", "targets")
_ARRAY_FIELDS = (
    "prompt_tokens", "prompt_mask", "completion_tokens", "completion_mask"
)


class RewardInputs(NamedTuple):
  """What a reward model may read about a batch of B finished sequences.

  Text fields are sequences of B Python strings (host models only); array
  fields follow gkdrl/types.py. Fields a model does not need may be None. To
  call a device model inside `jax.jit`, pass `inputs.arrays_only()` (strings
  are not JAX types).
  """

  sources: Sequence[str] | None = None  # B prompts / source documents
  completions: Sequence[str] | None = None  # B decoded completions
  targets: Sequence[str] | None = None  # B references (dataset targets)
  prompt_tokens: Array | None = None  # [B, P] int32, left-padded
  prompt_mask: Array | None = None  # [B, P] bool
  completion_tokens: Array | None = None  # [B, T] int32, right-padded
  completion_mask: Array | None = None  # [B, T] bool

  def arrays_only(self) -> "RewardInputs":
    """A copy without the text fields, safe to pass through `jax.jit`."""
    return self._replace(sources=None, completions=None, targets=None)


class RewardModel(NamedTuple):
  """A reward model as a NamedTuple of pure functions.

  Attributes:
    name: short name used in metric keys (`reward/<name>`).
    on_host: True when `score` reads text and runs as Python between
      sampling and the update (returns `np.ndarray`); False when it reads only
      token arrays and can run inside a jitted scoring pass (returns
      `jax.Array`).
    init: `init(key) -> params`; pretrained models ignore the key and return
      their loaded weights, parameter-free models return `()`.
    score: `score(params, inputs: RewardInputs) -> rewards [B] float32`.
  """

  name: str
  on_host: bool
  init: Callable[[types.PRNGKey], Params]
  score: Callable[[Params, RewardInputs], Any]


def _text_length(field: str, value: Any) -> int:
  if isinstance(value, (str, bytes)):
    raise ValueError(
        f"RewardInputs.{field} must be a sequence of strings, one per row; "
        f"got a single {type(value).__name__} {value[:40]!r}."
    )
  try:
    items = list(value)
  except TypeError:
    raise ValueError(
        f"RewardInputs.{field} must be a sequence of strings; got "
        f"{type(value).__name__}."
    ) from None
  for i, item in enumerate(items):
    if not isinstance(item, str):
      raise ValueError(
          f"RewardInputs.{field}[{i}] must be a str; got "
          f"{type(item).__name__} {item!r:.40}."
      )
  return len(items)


def check_inputs(
    inputs: RewardInputs, *, required: Sequence[str] = (), model: str = ""
) -> int:
  """Validates `inputs` and returns the batch size B.

  Works on traced arrays too (only shapes are read).

  Args:
    inputs: the batch.
    required: field names that must not be None.
    model: name of the calling reward model, for error messages.

  Returns:
    B, the number of rows.

  Raises:
    ValueError: a required field is None, a text field is not a sequence of
      strings, masks and tokens disagree in shape, or fields disagree on B.
  """
  if not isinstance(inputs, RewardInputs):
    raise ValueError(
        f"inputs must be a RewardInputs; got {type(inputs).__name__}."
    )
  who = f"Reward model {model!r}" if model else "This reward model"
  for field in required:
    if field not in RewardInputs._fields:
      raise ValueError(
          f"Unknown RewardInputs field {field!r}; fields are "
          f"{RewardInputs._fields}."
      )
    if getattr(inputs, field) is None:
      raise ValueError(f"{who} needs RewardInputs.{field}, which is None.")
  sizes = {}
  for field in _TEXT_FIELDS:
    value = getattr(inputs, field)
    if value is not None:
      sizes[field] = _text_length(field, value)
  for field in _ARRAY_FIELDS:
    value = getattr(inputs, field)
    if value is not None:
      if np.ndim(value) != 2:
        raise ValueError(
            f"RewardInputs.{field} must have rank 2 [B, len]; got shape "
            f"{np.shape(value)}."
        )
      sizes[field] = np.shape(value)[0]
  for tokens, mask in (("prompt_tokens", "prompt_mask"),
                       ("completion_tokens", "completion_mask")):
    t, m = getattr(inputs, tokens), getattr(inputs, mask)
    if t is not None and m is not None and np.shape(t) != np.shape(m):
      raise ValueError(
          f"RewardInputs.{tokens} has shape {np.shape(t)} but {mask} has "
          f"shape {np.shape(m)}; they must be equal."
      )
  if not sizes:
    raise ValueError("RewardInputs has no fields set; cannot score nothing.")
  if len(set(sizes.values())) > 1:
    raise ValueError(
        f"RewardInputs fields disagree on the batch size B: {sizes}."
    )
  return next(iter(sizes.values()))


def check_rewards(rewards: Any, batch_size: int, model: str) -> np.ndarray:
  """Converts host rewards to float32 `[B]` and rejects bad shapes or NaN."""
  rewards = np.asarray(rewards, dtype=np.float32)
  if rewards.shape != (batch_size,):
    raise ValueError(
        f"Reward model {model!r} returned shape {rewards.shape}; expected "
        f"[B] = ({batch_size},)."
    )
  bad = np.flatnonzero(~np.isfinite(rewards))
  if bad.size:
    raise ValueError(
        f"Reward model {model!r} returned non-finite rewards at rows "
        f"{bad[:10].tolist()}: {rewards[bad[:10]].tolist()}."
    )
  return rewards


def as_reward_model(model: Any) -> RewardModel:
  """Returns `model` as a `RewardModel`.

  Accepts a `RewardModel` or an object with a `reward_model()` method (such
  as `EntailmentReward`).
  """
  if isinstance(model, RewardModel):
    return model
  if callable(getattr(model, "reward_model", None)):
    return as_reward_model(model.reward_model())
  raise ValueError(
      f"Expected a RewardModel or an object with .reward_model(); got "
      f"{type(model).__name__}."
  )


def weighted_sum(
    terms: Sequence[tuple[float, Any]], *, name: str | None = None
) -> RewardModel:
  """A reward model that returns `sum_i w_i * r_i(inputs)`.

  Weights must be finite and non-negative, and at least one must be
  positive. Penalties are reward models whose values are already negative
  (`make_length_penalty`), so "entailment minus a length penalty" is
  `weighted_sum([(1.0, entailment), (0.01, make_length_penalty())])`. We
  forbid negative weights because a negative weight on a penalty silently
  turns it into a bonus.

  The sum runs on the host if any term does (device terms are then evaluated
  eagerly); otherwise it is a device model usable inside `jax.jit`.

  Args:
    terms: `(weight, reward_model)` pairs; reward models may also be objects
      with a `reward_model()` method.
    name: metric name; defaults to e.g. "1*entailment+0.01*length".

  Returns:
    A `RewardModel` whose params are the tuple of the terms' params.
  """
  terms = list(terms)
  if not terms:
    raise ValueError("weighted_sum needs at least one (weight, model) term.")
  weights, models = [], []
  for i, term in enumerate(terms):
    if not (isinstance(term, tuple) and len(term) == 2):
      raise ValueError(
          f"weighted_sum terms[{i}] must be a (weight, reward_model) pair; "
          f"got {term!r:.60}."
      )
    weight, model = term
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
      raise ValueError(
          f"weighted_sum terms[{i}] weight must be a number; got {weight!r}."
      )
    if not math.isfinite(weight) or weight < 0:
      raise ValueError(
          f"weighted_sum terms[{i}] weight={weight!r} must be finite and >= "
          "0; express penalties as reward models with negative values (e.g. "
          "make_length_penalty) and give them a positive weight."
      )
    weights.append(float(weight))
    models.append(as_reward_model(model))
  if not any(weights):
    raise ValueError(f"weighted_sum weights={weights} are all zero.")
  on_host = any(m.on_host for m in models)
  if name is None:
    name = "+".join(f"{w:g}*{m.name}" for w, m in zip(weights, models))

  def init(key):
    keys = jax.random.split(key, len(models))
    return tuple(m.init(k) for m, k in zip(models, keys))

  def score(params, inputs):
    batch_size = check_inputs(inputs, model=name)
    if len(params) != len(models):
      raise ValueError(
          f"weighted_sum {name!r} got {len(params)} params for "
          f"{len(models)} terms."
      )
    if on_host:
      total = np.zeros((batch_size,), np.float64)
      for w, m, p in zip(weights, models, params):
        total += w * check_rewards(m.score(p, inputs), batch_size, m.name)
      return total.astype(np.float32)
    total = jnp.zeros((batch_size,), jnp.float32)
    for w, m, p in zip(weights, models, params):
      total = total + w * jnp.asarray(m.score(p, inputs), jnp.float32)
    return total

  return RewardModel(name=name, on_host=on_host, init=init, score=score)
