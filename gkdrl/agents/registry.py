"""The agent registry: one line per agent, and building an agent from it.

Each agent module (`sft`, `seqkd`, `distill`, `rl`, `gkd_rl`) ends with

    registry.register("gkd", GKDConfig, build)

where `build(config, parts) -> Agent` makes its loss and act and calls
`assemble`. Everything that asks "which agent is this?" lives in those
modules; the code here only looks an agent up by its config class. A new
agent is one new module plus its `register` line.

`make_agent` does what every agent needs before its own `build`
(`make_parts`): it checks that teacher and student share one vocabulary,
restricts both to it (embeddings padded to different sizes are accepted,
see `gkdrl.agents.vocabulary`) and resolves the EOS and pad ids
(`special_token_ids`, also used by the runners), then checks that the
agent got the teacher and the reward model it reads.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from gkdrl import validation
from gkdrl.agents import adapters
from gkdrl.agents import base
from gkdrl.agents import optimizer as optimizer_lib
from gkdrl.agents import vocabulary

# {name: config class}, in registration order.
AGENT_CONFIGS: dict[str, type] = {}
_BUILDERS: dict[type, tuple[str, Callable[..., base.Agent]]] = {}


class Parts(NamedTuple):
  """What `make_agent` hands an agent's `build`.

  Attributes:
    student: the student `LanguageModel`.
    teacher: the teacher `LanguageModel`, or None.
    tokenizer: decodes completions for host reward models, or None.
    reward: the `RewardModel`, or None.
    eos_token_id: end of a sampled completion (an id or ids).
    pad_token_id: written after a completion ends.
    teacher_tokenizer: the teacher's own tokenizer when it differs from
      the student's (cross-tokenizer distillation), else None.
  """

  student: Any
  teacher: Any
  tokenizer: Any
  reward: Any
  eos_token_id: Any
  pad_token_id: int
  teacher_tokenizer: Any = None


def register(name: str, config_cls: type,
             build: Callable[[base.AgentConfig, Parts], base.Agent]) -> None:
  """Adds agent `name`, configured by `config_cls` and built by `build`.

  Args:
    name: the registry name (the `--agent` flag value).
    config_cls: its frozen config dataclass; one class per agent.
    build: `build(config, parts) -> Agent`.
  """
  if name in AGENT_CONFIGS or config_cls in _BUILDERS:
    raise ValueError(f"agent {name!r} (config {config_cls.__name__}) is "
                     "already registered.")
  AGENT_CONFIGS[name] = config_cls
  _BUILDERS[config_cls] = (name, build)


def unregister(name: str) -> None:
  """Removes agent `name` (for tests that register a temporary agent)."""
  del _BUILDERS[AGENT_CONFIGS.pop(name)]


def agent_name(config: base.AgentConfig) -> str:
  """The registry name of a config's agent."""
  if type(config) not in _BUILDERS:
    raise ValueError(f"config of type {type(config).__name__} is not an "
                     f"agent config; known: {sorted(AGENT_CONFIGS)}.")
  return _BUILDERS[type(config)][0]


def make_config(name: str, **kwargs) -> base.AgentConfig:
  """Builds the config of agent `name` from keyword arguments."""
  if name not in AGENT_CONFIGS:
    raise ValueError(f"agent={name!r} is not recognised; allowed values: "
                     f"{', '.join(sorted(AGENT_CONFIGS))}.")
  return AGENT_CONFIGS[name](**kwargs)


def check_vocabularies(teacher, student, *, vocab_size: int | None = None,
                       teacher_tokenizer=None, student_tokenizer=None,
                       teacher_path: str = "", student_path: str = "") -> int:
  """The size of the one vocabulary teacher and student share.

  Distillation compares the two models' distributions id by id, so they
  must share one tokenizer. Their embeddings may be padded to different
  sizes (see `gkdrl.agents.vocabulary`): the real vocabulary is then
  `vocab_size`, the tokenizer's size, and must fit both.

  Args:
    teacher: the teacher `LanguageModel` or `EncoderDecoderModel`. A
      decoder-only teacher may teach an encoder-decoder student (or the
      reverse) when the two share one vocabulary.
    student: the student, likewise.
    vocab_size: the real vocabulary size (the tokenizer's `len`); None
      takes the student tokenizer's, else requires equal embedding sizes.
    teacher_tokenizer: the teacher's own tokenizer, compared with the
      student's when both are given.
    student_tokenizer: the student's own tokenizer.
    teacher_path: where the teacher came from, named in the error if given.
    student_path: where the student came from, likewise.

  Returns:
    The shared vocabulary size V (logits are sliced to it).

  Raises:
    ValueError: the tokenizers differ (the message says how), or the
      embeddings differ in size and no real vocabulary size is known, or
      it does not fit an embedding.
  """
  t_from = f" ({teacher_path})" if teacher_path else ""
  s_from = f" ({student_path})" if student_path else ""
  if teacher_tokenizer is not None and student_tokenizer is not None:
    difference = vocabulary.tokenizer_difference(teacher_tokenizer,
                                                 student_tokenizer)
    if difference:
      raise ValueError(
          f"teacher{t_from} and student{s_from} tokenizers differ "
          f"(teacher's against student's: {difference}); distillation "
          "compares them id by id only with one tokenizer. To distil "
          "across tokenizers, set cross_tokenizer='align' or 'uld' "
          "(agents supervised_kd and gkd; flag --cross_tokenizer).")
    if vocab_size is None:
      vocab_size = len(student_tokenizer)
  t_vocab, s_vocab = teacher.config.vocab_size, student.config.vocab_size
  if vocab_size is None:
    if t_vocab != s_vocab:
      kinds = ""
      if teacher.is_encoder_decoder != student.is_encoder_decoder:
        kind = lambda m: ("encoder-decoder" if m.is_encoder_decoder
                          else "decoder-only")
        kinds = (f" (a {kind(teacher)} teacher and a {kind(student)} "
                 "student can be paired only when they share one "
                 "vocabulary)")
      raise ValueError(
          f"teacher and student vocabularies differ{kinds}: teacher{t_from} "
          f"vocab_size={t_vocab}, student{s_from} vocab_size={s_vocab}. "
          "Distillation needs one vocabulary: for embeddings padded to "
          "different sizes, give the tokenizer they share (make_agent's "
          "tokenizer, or vocab_size) so that the real vocabulary is known.")
    return t_vocab
  validation.check_int("vocab_size", vocab_size, 1)
  if vocab_size > min(t_vocab, s_vocab):
    validation.fail(
        "vocab_size", vocab_size,
        f"the shared vocabulary must fit both embeddings: teacher{t_from} "
        f"vocab_size={t_vocab}, student{s_from} vocab_size={s_vocab}")
  return vocab_size


def special_token_ids(tokenizer, student, eos_token_id=None,
                      pad_token_id: int | None = None) -> tuple[Any, int]:
  """(eos, pad): the given ids, else the tokenizer's, else the student's.

  EOS falls back to the tokenizer's, then to the student config's; pad to
  the tokenizer's, then to EOS.
  """
  if eos_token_id is None:
    eos_token_id = getattr(tokenizer, "eos_token_id", None)
    if eos_token_id is None:
      eos_token_id = student.config.eos_token_id
  if pad_token_id is None:
    pad_token_id = getattr(tokenizer, "pad_token_id", None)
    if pad_token_id is None:
      pad_token_id = eos_token_id
  return eos_token_id, pad_token_id


def make_parts(*, student, teacher=None, tokenizer=None, reward=None,
               eos_token_id=None, pad_token_id: int | None = None,
               vocab_size: int | None = None, teacher_tokenizer=None,
               cross_tokenizer: bool = False) -> Parts:
  """What an agent is built from: `make_agent`'s arguments, resolved.

  The models are restricted to the vocabulary they share
  (`check_vocabularies`; `vocabulary.restrict_vocabulary`), so an agent
  computes every logit, divergence and sample over the real vocabulary
  only: len(tokenizer) ids when a tokenizer is given, or `vocab_size`.
  With `cross_tokenizer` each model is restricted to its own tokenizer's
  vocabulary instead (both tokenizers are then required).
  """
  cross = cross_tokenizer and teacher is not None
  if cross:
    if tokenizer is None or teacher_tokenizer is None:
      raise ValueError("distillation across tokenizers needs both the "
                       "student's tokenizer and the teacher's "
                       "(make_agent's tokenizer and teacher_tokenizer).")
    teacher = vocabulary.restrict_vocabulary(teacher, len(teacher_tokenizer))
  if vocab_size is None and tokenizer is not None:
    vocab_size = len(tokenizer)
  if teacher is not None and not cross:
    vocab_size = check_vocabularies(
        teacher, student, vocab_size=vocab_size,
        teacher_tokenizer=teacher_tokenizer,
        student_tokenizer=tokenizer if teacher_tokenizer is not None
        else None)
  if vocab_size is not None:
    student = vocabulary.restrict_vocabulary(student, vocab_size)
    if teacher is not None and not cross:
      teacher = vocabulary.restrict_vocabulary(teacher, vocab_size)
  eos_token_id, pad_token_id = special_token_ids(
      tokenizer, student, eos_token_id, pad_token_id)
  return Parts(student=student, teacher=teacher, tokenizer=tokenizer,
               reward=reward, eos_token_id=eos_token_id,
               pad_token_id=pad_token_id,
               teacher_tokenizer=teacher_tokenizer if cross else None)


def make_agent(config: base.AgentConfig, *, student, teacher=None,
               tokenizer=None, reward=None, eos_token_id=None,
               pad_token_id: int | None = None,
               vocab_size: int | None = None,
               teacher_tokenizer=None) -> base.Agent:
  """Builds the agent `config` describes.

  Args:
    config: a config of a registered agent (see `AGENT_CONFIGS`).
    student: the student `LanguageModel`.
    teacher: the teacher `LanguageModel` (agents that use one).
    tokenizer: the tokenizer the models share; decodes completions for host
      reward models (RL agents), and its size is the real vocabulary.
    reward: a `RewardModel` (RL agents with alpha < 1).
    eos_token_id: end of a sampled completion; defaults to the tokenizer's.
    pad_token_id: written after a completion ends; defaults to the
      tokenizer's, else EOS.
    vocab_size: the real vocabulary size, when it is not len(tokenizer):
      logits are sliced to ids below it (embeddings padded beyond it, to
      different sizes for teacher and student, are accepted). None: the
      tokenizer's size, else the models' common vocab_size.
    teacher_tokenizer: the teacher's tokenizer. Compared with `tokenizer`
      (a difference is refused) unless the config distils across
      tokenizers (`cross_tokenizer` "uld" or "align"), which needs it.

  Returns:
    The `Agent`.
  """
  name = agent_name(config)
  parts = make_parts(student=student, teacher=teacher, tokenizer=tokenizer,
                     reward=reward, eos_token_id=eos_token_id,
                     pad_token_id=pad_token_id, vocab_size=vocab_size,
                     teacher_tokenizer=teacher_tokenizer,
                     cross_tokenizer=getattr(config, "cross_tokenizer",
                                             "none") != "none")
  agent = _BUILDERS[type(config)][1](config, parts)
  if agent.uses_teacher and teacher is None:
    raise ValueError(f"agent {name!r} needs a teacher model.")
  if agent.uses_reward and reward is None:
    raise ValueError(f"agent {name!r} with this config needs a reward model.")
  if agent.uses_reward and tokenizer is None:
    raise ValueError(f"agent {name!r} needs the tokenizer to decode "
                     "completions for the reward model.")
  return agent


def assemble(config: base.AgentConfig, loss_fn: base.LossFn, act, *,
             uses_teacher: bool, uses_reward: bool,
             keep_reference: bool = False, epochs: int = 1,
             prepare=None) -> base.Agent:
  """The `Agent` of a registered config from its loss and its act.

  Args:
    config: the agent's config (its optimizer and param_dtype are read).
    loss_fn: `loss_fn(params, state, batch, teacher_params, key) -> (loss,
      metrics)`.
    act: `act(state, task_batch, key, *, teacher_params, reward_params)`.
    uses_teacher: whether `act` or `update` reads the teacher.
    uses_reward: whether `act` calls the reward model.
    keep_reference: keep a frozen copy of the initial student in the state.
    epochs: gradient steps per batch.
    prepare: `prepare(batch) -> batch`, run by the update on the whole
      batch before it is split into micro-batches (`base.make_update`).

  With `config.lora_rank` > 0 the agent trains adapters on the frozen
  student (`gkdrl.agents.adapters`).
  """
  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  if config.lora_rank:
    model_params = adapters.make_model_params(config)
    return base.Agent(
        name=agent_name(config), config=config,
        init=adapters.make_init(config, optimizer),
        act=adapters.wrap_act(act, model_params),
        update=base.make_update(
            adapters.wrap_loss(config, loss_fn,
                               keep_reference=keep_reference),
            optimizer, epochs=epochs, prepare=prepare,
            grad_accum_steps=config.grad_accum_steps,
            reduction=config.reduction),
        uses_teacher=uses_teacher, uses_reward=uses_reward,
        model_params=model_params)
  return base.Agent(
      name=agent_name(config), config=config,
      init=base.make_init(optimizer, keep_reference=keep_reference,
                          param_dtype=config.param_dtype),
      act=act,
      update=base.make_update(
          loss_fn, optimizer, epochs=epochs, prepare=prepare,
          grad_accum_steps=config.grad_accum_steps,
          reduction=config.reduction),
      uses_teacher=uses_teacher, uses_reward=uses_reward)
