r"""One on-policy GKD training step, end to end: gkdrl against TRL.

    python benchmarks/gkd_step.py              # student 256x4, teacher 512x4
    python benchmarks/gkd_step.py --quick      # fewer steps
    python benchmarks/gkd_step.py --size=tiny  # student 64x2 (0.35M), V 4096
    python benchmarks/gkd_step.py --size=smollm2   # SmolLM2-135M / 360M shapes

A step is what the paper's Algorithm 1 does with lambda = 1: the student
samples 64 new tokens (temperature 1, no top-k / top-p) for each of 8
64-token prompts, the teacher scores the sequences, the JSD(beta) loss
(beta 0.5 by default) and its gradient are computed and AdamW (gradients
clipped to norm 1) updates the student.

Both sides start from the same weights: two Llama models are built once with
random weights in transformers and written with `save_pretrained`; TRL loads
them with `AutoModelForCausalLM`, gkdrl with `networks.from_pretrained` (a
logit comparison on the prompts is printed as a check). EOS is disabled on
both sides (gkdrl: an id outside the vocabulary; Hugging Face: no
`eos_token_id` in the generation config), so every row generates all 64
tokens; each step asserts that.

  gkdrl  `agents.make_agent(GKDConfig(lmbda=1))`, one step at a time:
         `agent.act` (jitted sampler), waited for so that sampling is
         timed apart, then `agent.update` (one jitted loss + gradient +
         AdamW), then the loss is read on the host.
  gkdrl/loop   the same agent in the same process, stepped as
         `runners/loop.py` steps it (`rollouts.Rollouts`): nothing is read
         on the host between steps, so the host's work for step t + 1 can
         overlap step t's computation; s/step over `--steps` steps.
  gkdrl/async  the same with `--async_rollouts`: the batch of step t + 1 is
         sampled while update t runs, from the parameters update t starts
         from (one step of policy lag).
  (gkdrl's worker first calls `runners.cpu_memory.keep_scratch_memory()`,
  as the runners do: on a Linux CPU its programs then reuse their scratch
  memory and run on the calling thread, so on the CPU the loop's host work
  no longer overlaps the computation; `--no-cpu_scratch_reuse` leaves it
  out.)
  trl    `trl.experimental.gkd.GKDTrainer(lmbda=1)`.train(): a step is the
         time from the Trainer's `on_step_begin` to `on_step_end` callbacks
         (generation, student and teacher forward, loss, backward,
         clipping, optimizer and scheduler step).

The script also prints a bound no implementation of the step can beat on
this machine (`roofline`: the matrix-product FLOPs the step's outputs
need, `forward_flops`, at a measured float32 product rate, the sampler's
weight streaming at a measured bandwidth, both measured in the same run,
under the same load) and each side's fraction of it. Beside the bound, as
context only, it prints how fast a loop of T decode-like steps reads all
of the student's weights (`streaming_loop_seconds`): the bound's weight
streaming is timed on the unembedding alone, which may stay in the caches,
while the sampler reads the whole model each token.

Each side runs in its own process (the models are written once and
shared), `--rounds` times in turn (TRL, gkdrl, TRL, gkdrl), so both see
about the same machine load; the first `--warmup` steps of every process
are not timed (gkdrl compiles there) and the table gives the median of all
timed steps of each side. (Running both in one process, ours from a
Trainer callback, made our step times depend on where they fell relative to
`Trainer.train`, by up to 2.5x.) Torch uses `--torch_threads` threads (2) with
OMP_WAIT_POLICY=PASSIVE (see benchmarks/sampling.py for why). Where torch
sees a CUDA device TRL trains there (and gkdrl on JAX's default device),
else both run on the CPU. Needs torch and trl (`pip install trl`; not gkdrl
dependencies).
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
# JAX and torch may share one GPU: allocate on demand.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from gkdrl import agents
from gkdrl import networks
from gkdrl.runners import cpu_memory
from gkdrl.runners import rollouts as rollouts_lib
import timing  # benchmarks/timing.py, beside this script

# (d_model, n_layers, n_heads, n_kv_heads, d_ff) of the student and teacher.
SIZES = {
    # Under 1M student parameters: where fixed costs per step show.
    "tiny": dict(vocab=4096, student=(64, 2, 4, 2, 176),
                 teacher=(128, 4, 4, 2, 352), tie=True),
    "small": dict(vocab=8192, student=(256, 4, 8, 4, 704),
                  teacher=(512, 4, 8, 4, 1408), tie=True),
    # SmolLM2-135M and SmolLM2-360M shapes (random weights).
    "smollm2": dict(vocab=49152, student=(576, 30, 9, 3, 1536),
                    teacher=(960, 32, 15, 5, 2560), tie=True),
}


def write_models(size: str, directory: str) -> tuple[str, str]:
  """Writes a random student and teacher as Hugging Face directories."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  spec = SIZES[size]
  paths = []
  for seed, role in enumerate(("student", "teacher")):
    d, n, h, kv, ff = spec[role]
    config = transformers.LlamaConfig(
        vocab_size=spec["vocab"], hidden_size=d, num_hidden_layers=n,
        num_attention_heads=h, num_key_value_heads=kv, intermediate_size=ff,
        max_position_embeddings=1024, tie_word_embeddings=spec["tie"],
        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    path = os.path.join(directory, role)
    model.save_pretrained(path)
    paths.append(path)
  return paths[0], paths[1]


def word_tokenizer(vocab_size: int):
  """A word-level tokenizer over the ids (TRL needs one for its pad id)."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  vocab = {f"t{i}": i for i in range(vocab_size)}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t3"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token="t0", bos_token="t1", eos_token="t2",
      unk_token="t3")


class TaskBatch(NamedTuple):
  """The fields of `gkdrl.tasks.TaskBatch` that `agent.act` reads."""

  prompt_tokens: np.ndarray  # [B, P] int32
  prompt_mask: np.ndarray  # [B, P] bool
  target_tokens: np.ndarray  # [B, 1] int32 (unused when lmbda = 1)
  target_mask: np.ndarray  # [B, 1] bool
  sources: list[str]
  targets: list[str]


class Ours:
  """gkdrl's GKD agent and one step of `runners/loop.py`'s loop."""

  def __init__(self, student_dir, teacher_dir, prompts, args):
    student, student_params = networks.from_pretrained(student_dir)
    self.teacher, self.teacher_params = networks.from_pretrained(teacher_dir)
    self.student = student
    vocab = student.config.vocab_size
    config = agents.make_config(
        "gkd", lmbda=1.0, beta=args.beta, divergence="jsd",
        max_new_tokens=args.new_tokens, sample_temperature=1.0,
        compute_dtype=args.compute_dtype,
        optimizer=agents.OptimizerConfig(
            learning_rate=1e-5, warmup_steps=0, weight_decay=0.0,
            max_grad_norm=1.0))
    # An id outside the vocabulary is never sampled: no row stops early.
    self.agent = agents.make_agent(
        config, student=student, teacher=self.teacher, eos_token_id=vocab,
        pad_token_id=0)
    self.state = self.agent.init(student_params)
    batch, p = prompts.shape
    self.task_batch = TaskBatch(
        prompt_tokens=prompts.astype(np.int32),
        prompt_mask=np.ones_like(prompts, bool),
        target_tokens=np.zeros((batch, 1), np.int32),
        target_mask=np.ones((batch, 1), bool),
        sources=[""] * batch, targets=[""] * batch)
    self.new_tokens = args.new_tokens
    self.key = jax.random.key(0)
    self.step_count = 0
    self.losses = []
    self.act_seconds = []

  def step(self) -> float:
    """One timed step; returns its seconds."""
    self.step_count += 1
    start = time.perf_counter()
    act_key, update_key = jax.random.split(
        jax.random.fold_in(self.key, self.step_count))
    batch, info = self.agent.act(self.state, self.task_batch, act_key,
                                 teacher_params=self.teacher_params)
    # The update would wait for the rollout anyway; blocking here only
    # splits the step's time into sampling and the rest.
    jax.block_until_ready(batch)
    self.act_seconds.append(time.perf_counter() - start)
    self.state, metrics = self.agent.update(self.state, batch,
                                            self.teacher_params, update_key)
    loss = float(metrics["loss/total"])
    seconds = time.perf_counter() - start
    assert info["rollout/length"] == self.new_tokens, info
    self.losses.append(loss)
    return seconds

  def loop_seconds(self, steps: int, ahead: bool) -> float:
    """Seconds per step over `steps` steps driven as `runners/loop.py`
    drives them: `rollouts.Rollouts` builds each batch, nothing is read on
    the host until the last update has run, and with `ahead`
    (`--async_rollouts`) the batch of step t + 1 is sampled while update t
    runs, from the parameters update t starts from. The first step (in
    `ahead` mode, sampled without overlap) is not timed."""
    rollouts = rollouts_lib.Rollouts(
        self.agent, itertools.repeat(self.task_batch), root_key=self.key,
        ahead=ahead, mesh=None, task=None,
        teacher_params=self.teacher_params, reward_params=None)
    first, last = self.step_count + 1, self.step_count + 1 + steps
    losses, lengths = [], []
    try:
      for step in range(first, last + 1):
        if step == first + 1:
          jax.block_until_ready(self.state)
          start = time.perf_counter()
        _, update_key = rollouts_lib.step_keys(self.key, step)
        batch, info = rollouts.get(step, self.state)
        rollouts.start_next(step, self.state, last)
        self.state, metrics = self.agent.update(
            self.state, batch, self.teacher_params, update_key)
        rollouts.prefetch()
        losses.append(metrics["loss/total"])
        lengths.append(info["rollout/length"])
      jax.block_until_ready((self.state, losses))
      seconds = (time.perf_counter() - start) / steps
    finally:
      rollouts.close()
    self.step_count = last
    assert all(float(n) == self.new_tokens for n in lengths), lengths
    assert all(np.isfinite(float(x)) for x in losses), losses
    return seconds


def run_trl(student_dir, teacher_dir, prompts, args, workdir) -> dict:
  """Runs GKDTrainer for warm-up + timed steps; returns their times."""
  import datasets  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from trl.experimental import gkd  # pylint: disable=g-import-not-at-top

  load = lambda d: transformers.AutoModelForCausalLM.from_pretrained(
      d, dtype=torch.float32)
  student, teacher = load(student_dir), load(teacher_dir)

  batch, prompt_len = prompts.shape
  new = args.new_tokens

  def collate(features):
    # The GKD collator's fields, from token ids (no chat template): the
    # completion columns are placeholders that on-policy generation
    # replaces; their labels give the Trainer the token count it normalises
    # the loss with.
    p = torch.as_tensor([f["prompt_ids"] for f in features])
    completion = torch.zeros((len(features), new), dtype=torch.long)
    input_ids = torch.cat([p, completion], 1)
    labels = input_ids.clone()
    labels[:, :prompt_len] = -100
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                labels=labels, prompts=p,
                prompt_attention_mask=torch.ones_like(p))

  total = args.warmup + args.steps
  cuda = torch.cuda.is_available()
  data = datasets.Dataset.from_dict(
      {"prompt_ids": np.tile(prompts, (total, 1)).tolist()})
  config = gkd.GKDConfig(
      output_dir=workdir, per_device_train_batch_size=batch, max_steps=total,
      lmbda=1.0, beta=args.beta, temperature=1.0, max_new_tokens=new,
      learning_rate=1e-5, weight_decay=0.0, max_grad_norm=1.0,
      use_cpu=not cuda, report_to=[], save_strategy="no", logging_steps=10**6,
      disable_tqdm=True, dataloader_num_workers=0, seed=0, bf16=False,
      fp16=False, gradient_checkpointing=args.trl_gradient_checkpointing)
  trainer = gkd.GKDTrainer(
      model=student, teacher_model=teacher, args=config, data_collator=collate,
      train_dataset=data, processing_class=word_tokenizer(
          student.config.vocab_size))
  # The Trainer copies the tokenizer's EOS into the models' generation
  # configs, and GKDTrainer copies it into its own: remove it everywhere.
  trainer.generation_config.eos_token_id = None
  for model in (student, teacher):
    model.generation_config.eos_token_id = None

  generate = trainer.generate_on_policy_outputs

  def checked_generate(model, inputs, generation_config):
    start = time.perf_counter()
    ids, mask, labels = generate(model, inputs, generation_config)
    generate_seconds.append(time.perf_counter() - start)
    assert ids.shape == (batch, prompt_len + new), ids.shape
    assert int((labels != -100).sum()) == batch * new
    assert generation_config.eos_token_id is None
    return ids, mask, labels

  trainer.generate_on_policy_outputs = checked_generate
  step_seconds, generate_seconds = [], []
  trl_losses = []

  class Timer(transformers.TrainerCallback):

    def on_step_begin(self, *unused_args, **unused_kwargs):
      self.start = time.perf_counter()

    def on_step_end(self, unused_args, state, *unused, **unused_kwargs):
      if cuda:
        torch.cuda.synchronize()  # the optimizer step's kernels
      seconds = time.perf_counter() - self.start
      if state.global_step > args.warmup:
        step_seconds.append(seconds)

  trainer.add_callback(Timer())
  original_training_step = trainer.training_step

  def training_step(*a, **k):
    loss = original_training_step(*a, **k)
    trl_losses.append(float(loss))
    return loss

  trainer.training_step = training_step
  trainer.train()
  return dict(seconds=step_seconds, sampling=generate_seconds[args.warmup:],
              loss0=trl_losses[0])


def run_ours(student_dir, teacher_dir, prompts, args) -> dict:
  """Runs gkdrl's agent for warm-up + timed steps; returns their times."""
  ours = Ours(student_dir, teacher_dir, prompts, args)
  for _ in range(args.warmup):
    ours.step()  # the first compiles the sampler and the update
  seconds = [ours.step() for _ in range(args.steps)]
  result = dict(seconds=seconds, sampling=ours.act_seconds[args.warmup:],
                loss0=ours.losses[0], scratch=cpu_memory.summary())
  for mode, ahead in LOOP_MODES.items():
    ours.loop_seconds(1, ahead)  # compiles the state copies of `ahead`
    result[mode] = ours.loop_seconds(args.steps, ahead)
  return result


# Rows of gkdrl stepped as the training loop does (`Ours.loop_seconds`).
LOOP_MODES = {"loop": False, "async": True}


def weight_check(student_dir, prompts) -> float:
  """Largest |difference| of the two libraries' student logits."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  model, params = networks.from_pretrained(student_dir)
  ours = np.asarray(model.apply(params, prompts))
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      student_dir, dtype=torch.float32)
  with torch.no_grad():
    theirs = hf(torch.as_tensor(prompts)).logits.numpy()
  return float(np.abs(ours - theirs).max())


def forward_flops(spec, role: str, batch: int, length: int,
                  outputs: int) -> float:
  """Matrix-product FLOPs of one forward pass of a `SIZES` model, counting
  only what its outputs need.

  `length` tokens per row give keys and values in every layer; the
  outputs are the final hidden states and logits of the last `outputs`
  tokens. So every layer but the last runs its projections, MLP and the
  two attention products (full [L, L] scores) for all `length` tokens, and
  the last layer its queries, attention output and MLP for the `outputs`
  alone (its keys and values for all), as does the unembedding.
  """
  d, n, h, kv, ff = spec[role]
  head = d // h
  queries_out_mlp = d * h * head + h * head * d + 3 * d * ff
  keys_values = 2 * d * kv * head
  full_layer = (2 * batch * length * (queries_out_mlp + keys_values)
                + 2 * 2 * batch * h * length * length * head)
  last_layer = (2 * batch * length * keys_values
                + 2 * batch * outputs * queries_out_mlp
                + 2 * 2 * batch * h * outputs * length * head)
  return ((n - 1) * full_layer + last_layer
          + 2 * batch * outputs * d * spec["vocab"])


def roofline(args) -> dict:
  """Seconds below which no implementation of the step can go here.

  Counted on this machine's measured rates, in this process, so under the
  load both sides see: the FLOPs of the update (the student's forward and
  backward pass, three times its forward; the teacher's forward pass; both
  over the P + T - 1 tokens before the completion's last, with the last
  layer's queries, attention output and MLP and the unembedding at the T
  completion positions only, `forward_flops`) and of the sampler's prefill
  (P tokens, one output) at the rate of a `[B (P + T), D] x [D, F]`
  float32 product of the student's shapes, and the sampler's T decode
  steps streaming the student's float32 weights at the bandwidth of a
  `[V, D] x [D, B]` product (its unembedding). Attention over the cache
  and the loss are left out.
  Each rate is that of the fastest of 20 calls; `main` measures them
  before and after the runs and keeps the better of each
  (`bound_seconds`). Beside the bound it also returns
  `streaming_loop_seconds` (`loop_streaming_s`), printed as context.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  spec = SIZES[args.size]
  b, p, t = args.batch_size, args.prompt_length, args.new_tokens
  d, n, h, kv, ff = spec["student"]
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (b * (p + t), d))
  w = jax.random.normal(keys[1], (d, ff))
  product = jax.jit(jnp.dot)

  def fastest(fn, repeats: int = 20) -> float:
    # The fastest call: what the machine can do between other jobs' work.
    fn()  # compiles
    return min(timing.median_seconds(fn, repeats=1) for _ in range(repeats))

  matmul_s = fastest(lambda: product(x, w).block_until_ready())
  flop_rate = 2 * x.shape[0] * d * ff / matmul_s
  unembed = jax.random.normal(keys[2], (spec["vocab"], d))
  hidden = jax.random.normal(keys[3], (d, b))
  stream_s = fastest(lambda: product(unembed, hidden).block_until_ready())
  bandwidth = unembed.nbytes / stream_s
  head = d // h
  student_bytes = 4 * (spec["vocab"] * d + n * (
      d * h * head + 2 * d * kv * head + h * head * d + 3 * d * ff + 2 * d))
  # The completion's last token predicts nothing: the update needs the
  # hidden states of the T tokens before it (the last prompt token on).
  update = (3 * forward_flops(spec, "student", b, p + t - 1, t)
            + forward_flops(spec, "teacher", b, p + t - 1, t))
  prefill = forward_flops(spec, "student", b, p, 1)
  return dict(flop_rate=flop_rate, bandwidth=bandwidth, update_flops=update,
              prefill_flops=prefill, streamed_bytes=t * student_bytes,
              loop_streaming_s=streaming_loop_seconds(args))


def streaming_loop_seconds(args) -> float:
  """Seconds of T decode-like steps that only read the student's weights.

  Context for the sampler's part of the bound, not part of it: that part
  streams the student's weights at the rate of one `[V, D] x [D, B]`
  product called again and again, whose 4 V D bytes may stay in the caches.
  Here one jitted loop of T steps reads every weight matrix of the student
  (its shapes, float32) once a step in `[B, D]`-row products, as the
  sampler's decode steps do, so the caches hold only what fits of the
  whole model; no attention over a cache, no sampling. The fastest of 3
  calls.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  spec = SIZES[args.size]
  b, t = args.batch_size, args.new_tokens
  d, n, h, kv, ff = spec["student"]
  head = d // h
  shapes = [(d, (h + 2 * kv) * head), (h * head, d), (d, 2 * ff), (ff, d)]
  keys = iter(jax.random.split(jax.random.key(1), n * len(shapes) + 2))
  layers = [[0.02 * jax.random.normal(next(keys), shape) for shape in shapes]
            for _ in range(n)]
  unembed = 0.02 * jax.random.normal(next(keys), (spec["vocab"], d))
  x0 = jax.random.normal(next(keys), (b, d))

  @jax.jit
  def loop(layers, unembed, x):
    def step(_, x):
      for qkv, out, gate_up, down in layers:
        queries, keys_values = jnp.split(x @ qkv, [h * head], axis=-1)
        mixed = queries + keys_values.sum(axis=-1, keepdims=True)
        x = x + 1e-3 * mixed @ out
        gate, up = jnp.split(x @ gate_up, 2, axis=-1)
        x = x + 1e-3 * (gate * up) @ down
      logits = unembed @ x.T  # [V, B], the sampler's form
      return x + 1e-3 * logits.max(axis=0)[:, None]
    return jax.lax.fori_loop(0, t, step, x)

  jax.block_until_ready(loop(layers, unembed, x0))  # compiles
  seconds = []
  for _ in range(3):
    start = time.perf_counter()
    jax.block_until_ready(loop(layers, unembed, x0))
    seconds.append(time.perf_counter() - start)
  return min(seconds)


def bound_seconds(first: dict, second: dict) -> dict:
  """The update's and the sampler's bounds at the better of two rates."""
  flop_rate = max(first["flop_rate"], second["flop_rate"])
  bandwidth = max(first["bandwidth"], second["bandwidth"])
  return dict(first, flop_rate=flop_rate, bandwidth=bandwidth,
              loop_streaming_s=min(first["loop_streaming_s"],
                                   second["loop_streaming_s"]),
              update_s=first["update_flops"] / flop_rate,
              sampling_s=(first["prefill_flops"] / flop_rate
                          + first["streamed_bytes"] / bandwidth))


def measure(side: str, directory: str, argv: list[str]) -> dict:
  """Runs one side in its own process; returns its times or its error."""
  result = subprocess.run(
      [sys.executable, __file__, f"--worker={side}",
       f"--model_dir={directory}", *argv], capture_output=True, text=True)
  if result.returncode != 0:
    return {"error": timing.error_line(result.stderr)}
  return json.loads(result.stdout.strip().splitlines()[-1])


def prompts_of(args) -> np.ndarray:
  rng = np.random.default_rng(0)
  vocab = SIZES[args.size]["vocab"]
  return rng.integers(4, vocab, (args.batch_size, args.prompt_length))



def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small", choices=sorted(SIZES))
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=64)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--beta", type=float, default=0.5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--compute_dtype", default="float32")
  parser.add_argument("--torch_threads", type=int, default=2,
                      help="torch.set_num_threads; 0 keeps torch's default")
  parser.add_argument(
      "--trl_gradient_checkpointing", action="store_true",
      help="TRL's SFTConfig default (True) recomputes activations in the "
      "backward pass and generates without a KV cache; off by default here")
  parser.add_argument(
      "--cpu_scratch_reuse", action=argparse.BooleanOptionalAction,
      default=True, help="gkdrl's worker calls gkdrl.runners.cpu_memory."
      "keep_scratch_memory() first, as the runners do (a no-op off a Linux "
      "CPU); --no-cpu_scratch_reuse leaves it out")
  parser.add_argument("--json", default="", help="also write rows here")
  parser.add_argument("--quick", action="store_true",
                      help="1 round of 1 warm-up step and 3 timed steps")
  parser.add_argument("--worker", choices=["ours", "trl"],
                      help=argparse.SUPPRESS)
  parser.add_argument("--model_dir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.quick:
    args.warmup, args.steps, args.rounds = 1, 3, 1
  argv = [f"--{name}={getattr(args, name)}" for name in (
      "size", "batch_size", "prompt_length", "new_tokens", "beta", "warmup",
      "steps", "compute_dtype", "torch_threads")]
  if not args.cpu_scratch_reuse:
    argv.append("--no-cpu_scratch_reuse")
  if args.trl_gradient_checkpointing:
    argv.append("--trl_gradient_checkpointing")
  import torch  # pylint: disable=g-import-not-at-top
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  prompts = prompts_of(args)
  if args.worker:
    student_dir, teacher_dir = (os.path.join(args.model_dir, role)
                                for role in ("student", "teacher"))
    if args.worker == "ours":
      cpu_memory.keep_scratch_memory(args.cpu_scratch_reuse)
      result = run_ours(student_dir, teacher_dir, prompts, args)
    else:
      result = run_trl(student_dir, teacher_dir, prompts, args,
                       args.model_dir)
    print(json.dumps(result))
    return
  try:
    import trl  # pylint: disable=g-import-not-at-top
    trl_version = trl.__version__
  except Exception as e:  # pylint: disable=broad-except
    trl_version = f"unavailable ({type(e).__name__}: {e})"
  vocab = SIZES[args.size]["vocab"]
  device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
            else "cpu")
  print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; jax {jax.__version__} "
        f"({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ['OMP_WAIT_POLICY']}, {device}), trl {trl_version}")
  print(f"# {args.size}: V {vocab}, student {SIZES[args.size]['student']}"
        f", teacher {SIZES[args.size]['teacher']} (d, layers, heads, kv, "
        f"ff); B {args.batch_size}, P {args.prompt_length}, T "
        f"{args.new_tokens}, JSD(beta={args.beta}), {args.compute_dtype}; "
        f"{args.rounds} rounds of {args.steps} steps after {args.warmup} "
        f"warm-up, each side in its own process", flush=True)
  runs = {"trl": [], "ours": []}
  first_bound = roofline(args)  # again after the runs; the faster counts
  with tempfile.TemporaryDirectory() as directory:
    student_dir, _ = write_models(args.size, directory)
    print(f"# student logits, gkdrl vs transformers on the prompts: max "
          f"|diff| {weight_check(student_dir, prompts):.2e}", flush=True)
    for _ in range(args.rounds):
      for side in ("trl", "ours"):
        if side == "trl" and runs["trl"] and "error" in runs["trl"][-1]:
          continue
        runs[side].append(measure(side, directory, argv))
  errors = [r["error"] for r in runs["trl"] + runs["ours"] if "error" in r]
  for error in errors:
    print(f"# a side failed: {error}")
  scratch = {r["scratch"] for r in runs["ours"] if "error" not in r}
  for line in sorted(scratch):
    print(f"# gkdrl: {line}")
  rows = []
  for side, impl in (("ours", "gkdrl"), ("trl", "trl")):
    done = [r for r in runs[side] if "error" not in r]
    if not done:
      continue
    seconds = statistics.median([t for r in done for t in r["seconds"]])
    rows.append(dict(
        impl=impl, seconds=seconds, steps_per_s=1 / seconds,
        sampling_s=statistics.median([t for r in done for t in r["sampling"]]),
        loss0=done[0]["loss0"],
        rounds=[round(statistics.median(r["seconds"]), 3) for r in done]))
    if side == "ours":
      for mode in LOOP_MODES:
        seconds = statistics.median([r[mode] for r in done])
        rows.append(dict(impl=f"gkdrl/{mode}", seconds=seconds,
                         steps_per_s=1 / seconds, sampling_s=None,
                         loss0=None,
                         rounds=[round(r[mode], 3) for r in done]))
  trl_s = rows[-1]["seconds"] if rows and rows[-1]["impl"] == "trl" else None
  print(f"{'impl':<12}{'s/step':>9}{'steps/s':>9}{'tok/s':>9}{'vs trl':>9}"
        f"{'sampling s':>12}{'rest s':>9}{'loss 1':>9}")
  tokens = args.batch_size * args.new_tokens
  for row in rows:
    row["ratio"] = trl_s / row["seconds"] if trl_s else None
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
    split = (f"{'-':>12}{'-':>9}{'-':>9}" if row["sampling_s"] is None else
             f"{row['sampling_s']:>12.3f}"
             f"{row['seconds'] - row['sampling_s']:>9.3f}"
             f"{row['loss0']:>9.4f}")
    print(f"{row['impl']:<12}{row['seconds']:>9.3f}"
          f"{row['steps_per_s']:>9.3f}{tokens / row['seconds']:>9.1f}"
          f"{ratio:>9}{split}")
  bound = bound_seconds(first_bound, roofline(args))
  print(f"# roofline here, now: {bound['flop_rate'] / 1e9:.0f} GFLOP/s "
        f"(float32 product), {bound['bandwidth'] / 1e9:.1f} GB/s (weight "
        f"streaming); update {bound['update_flops'] / 1e9:.1f} GFLOP >= "
        f"{bound['update_s']:.3f} s, sampling >= {bound['sampling_s']:.3f} s")
  loop_rate = bound["streamed_bytes"] / bound["loop_streaming_s"]
  loop_sampling_s = (bound["prefill_flops"] / bound["flop_rate"]
                     + bound["loop_streaming_s"])
  print(f"# not in the bound: the student's "
        f"{bound['streamed_bytes'] / args.new_tokens / 1e6:.1f} MB of "
        f"weights read once a token in a loop of [B, D]-row products: "
        f"{loop_rate / 1e9:.1f} GB/s, sampling >= {loop_sampling_s:.3f} s "
        f"at that rate")
  bound_s = bound["update_s"] + bound["sampling_s"]
  for row in rows:
    row["of_bound"] = bound_s / row["seconds"]
    split = "" if row["sampling_s"] is None else (
        f"; sampling {bound['sampling_s'] / row['sampling_s']:.0%}, rest "
        f"{bound['update_s'] / (row['seconds'] - row['sampling_s']):.0%}")
    print(f"# {row['impl']}: step at {row['of_bound']:.0%} of the bound "
          f"({bound_s:.3f} s){split}")
  print("# median s/step of each round: " + ", ".join(
      f"{row['impl']} {row['rounds']}" for row in rows) +
        f"; load average {os.getloadavg()[0]:.1f}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(size=args.size, rows=rows, runs=runs, bound=bound), f)


if __name__ == "__main__":
  main()
