"""A LoRA run through the runner: merged export, PEFT files, resume, CLIs."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy

from gkdrl import networks
from gkdrl.runners import checkpointing
from gkdrl.runners import train
from tests.runners import runners_test

LORA = dict(agent="gkd", lmbda=1.0, lora_rank=4, lora_alpha=8.0,
            learning_rate=3e-2, warmup_steps=0)


@pytest.fixture(scope="module")
def shared():
  return {}


@pytest.fixture(scope="module")
def lora_run(model_dirs, tmp_path_factory, shared):
  workdir = tmp_path_factory.mktemp("lora") / "run"
  train.run(runners_test.values(model_dirs, workdir, **LORA),
            progress=False, shared=shared)
  return workdir


def test_merged_export_holds_the_trained_student(model_dirs, lora_run):
  config = json.loads((lora_run / "config.json").read_text())
  assert config["agent_config"]["lora_rank"] == 4
  checkpointer = checkpointing.Checkpointer(lora_run)
  merged = checkpointer.restore_params(4, lora_alpha=8.0)
  checkpointer.close()
  _, exported = networks.from_pretrained(lora_run / "student_hf")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7),
               exported, merged)
  _, initial = networks.from_pretrained(model_dirs[1])
  query = "lm/layers/attention/query"
  assert np.abs(exported[query]["w"] - initial[query]["w"]).max() > 1e-4
  # Only adapted projections moved.
  np.testing.assert_array_equal(exported["lm/embed"]["embeddings"],
                                initial["lm/embed"]["embeddings"])


def test_a_lora_checkpoint_needs_its_alpha(lora_run):
  checkpointer = checkpointing.Checkpointer(lora_run)
  with pytest.raises(ValueError, match="lora_alpha=None is not allowed"):
    checkpointer.restore_params(4)
  checkpointer.close()


@pytest.mark.torch
def test_merged_export_loads_in_transformers(lora_run, torch):
  import transformers  # pylint: disable=g-import-not-at-top
  from tests.networks import hf_models  # pylint: disable=g-import-not-at-top
  model, params = networks.from_pretrained(lora_run / "student_hf")
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(
      lora_run / "student_hf")
  hf_model.eval()
  tokens = np.random.default_rng(0).integers(
      3, model.config.vocab_size, (2, 6))
  mask = np.ones_like(tokens, bool)
  expected = hf_models.hf_logits(hf_model, tokens, mask, torch)
  np.testing.assert_allclose(model.apply(params, tokens, mask), expected,
                             atol=1e-4)


def test_peft_adapters_are_written(lora_run):
  directory = lora_run / "student_lora"
  config = json.loads((directory / "adapter_config.json").read_text())
  assert (config["r"], config["lora_alpha"]) == (4, 8.0)
  tensors = safetensors.numpy.load_file(
      str(directory / "adapter_model.safetensors"))
  stem = "base_model.model.model.layers.0.mlp.down_proj"
  assert tensors[f"{stem}.lora_A.weight"].shape[0] == 4
  assert tensors[f"{stem}.lora_B.weight"].shape[1] == 4
  assert np.abs(tensors[f"{stem}.lora_B.weight"]).max() > 0  # trained


def test_lora_resume_reaches_the_same_final_state(model_dirs, lora_run,
                                                  tmp_path, shared):
  # The run as a kill after checkpoint 2 would have left it.
  resumed = tmp_path / "resumed"
  shutil.copytree(lora_run, resumed)
  shutil.rmtree(resumed / "checkpoints" / "4")
  shutil.rmtree(resumed / "student_hf")
  train.run(runners_test.values(model_dirs, resumed, **LORA),
            progress=False, shared=shared)
  steps = [r["step"] for r in runners_test._metrics(resumed)]  # pylint: disable=protected-access
  assert steps == [1, 2, 3, 4]
  a = runners_test._weights(lora_run)  # pylint: disable=protected-access
  b = runners_test._weights(resumed)  # pylint: disable=protected-access
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)


def test_cli_trains_lora_and_evaluates_its_checkpoint(model_dirs, tmp_path):
  teacher, student = model_dirs
  workdir = tmp_path / "cli"
  result = runners_test._cli(  # pylint: disable=protected-access
      "gkdrl.runners.train", f"--workdir={workdir}", f"--teacher={teacher}",
      f"--student={student}", "--agent=gkd", "--lora_rank=4",
      "--lora_targets=query,value", "--lora_base_dtype=bfloat16",
      "--steps=2", "--batch_size=4", "--save_every=2", "--eval_examples=4",
      "--eval_samples_per_prompt=1", "--max_new_tokens=6")
  assert result.returncode == 0, result.stderr[-3000:]
  peft = json.loads((workdir / "student_lora" / "adapter_config.json")
                    .read_text())
  assert sorted(peft["target_modules"]) == ["q_proj", "v_proj"]
  output = tmp_path / "ckpt.json"
  result = runners_test._cli(  # pylint: disable=protected-access
      "gkdrl.runners.evaluate", f"--workdir={workdir}", "--step=2",
      "--eval_examples=4", "--max_new_tokens=6", f"--output={output}")
  assert result.returncode == 0, result.stderr[-3000:]
  from_hf = runners_test._cli(  # pylint: disable=protected-access
      "gkdrl.runners.evaluate", f"--workdir={workdir}", "--eval_examples=4",
      "--max_new_tokens=6", f"--output={tmp_path / 'hf.json'}")
  assert from_hf.returncode == 0, from_hf.stderr[-3000:]
  assert (json.loads(output.read_text())["greedy"]
          == json.loads((tmp_path / "hf.json").read_text())["greedy"])


def test_bad_lora_flag_fails_before_any_work(tmp_path):
  result = runners_test._cli(  # pylint: disable=protected-access
      "gkdrl.runners.train", f"--workdir={tmp_path / 'w'}",
      "--lora_targets=q_proj")
  assert result.returncode != 0
  assert "lora_targets=['q_proj'] is not allowed" in result.stderr
  assert not pathlib.Path(tmp_path / "w" / "checkpoints").exists()
