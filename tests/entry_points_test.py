"""The real commands, as a user runs them: train, kill, resume, eval, infer, bad inputs.

Where only a command's behaviour is checked, not its command line (a refusal
raised inside the program), its flags are parsed and run in the test's process
(`conftest.entry_point_arguments`), sparing an interpreter's start-up.
"""
import csv
import importlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, entry_point_arguments, gin_parsed, shared_path
from prompt_recycling import checkpoints
from prompt_recycling import data
from prompt_recycling import vocabulary
from prompt_recycling.models import t5

pytest.importorskip('seqio')


def _command(module, *flags):
  return [sys.executable, '-m', f'prompt_recycling.{module}', *flags]


def _train_flags(model_dir, steps, **extra):
  # SST-2's validation split (872 rows) stands in for its training split: the path is the
  # same, and the whole-split shuffle of the 67,349 training rows costs ~10 CPU-seconds a
  # run, more than a run's steps.
  flags = ['--gin_file=gin_configs/test/tiny_checkpoint_prompt.gin',
           '--gin_file=gin_configs/runs/prompt_finetune.gin',
           f"--gin.MODEL_DIR='{model_dir}'",
           "--gin.MIXTURE_OR_TASK_NAME='glue_sst2_v2'",
           f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')}'",
           f'--gin.TRAIN_STEPS={steps}', '--gin.BATCH_SIZE=8',
           "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
           '--gin.train.save_every=6', '--gin.train.eval_every=None',
           '--gin.train.best_metric=None', '--gin.train.log_every=1',
           f"--gin.train.vocabulary_path='{shared_path('t5', 'sentencepiece.model')}'",
           f"--gin.train.data_dir='{shared_path()}'", "--gin.train.train_split='validation'"]
  return flags + [f'--gin.{k}={v}' for k, v in extra.items()]


def _env():
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  env.pop('XLA_FLAGS', None)  # One device per process, as a plain user run.
  return env


def _run(cmd, **kwargs):
  result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
                          **kwargs)
  return result


def _final_prompt(model_dir, step):
  return np.load(pathlib.Path(model_dir) / 'numpy_checkpoints' / f'checkpoint_{step}' / 'prompt.npy')


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  """MODEL_DIR of an uninterrupted 12-step run of the train command (read, never written, by
  the tests): the killed run's reference, and the export `eval` and `infer` read."""
  model_dir = tmp_path_factory.mktemp('trained') / 'run'
  trained = _run(_command('train', *_train_flags(model_dir, 12)))
  assert trained.returncode == 0, trained.stderr[-3000:]
  return model_dir


def test_sigkill_then_rerun_equals_uninterrupted(trained_run, tmp_path):
  assert (trained_run / 'config.gin').exists()  # The operative config is written.

  killed_dir = tmp_path / 'killed'
  proc = subprocess.Popen(_command('train', *_train_flags(killed_dir, 12)), cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed_dir / 'checkpoints' / '6').exists():  # orbax renames a step dir when done.
    assert proc.poll() is None and time.time() < deadline, 'the run ended before step 6'
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed_dir / 'numpy_checkpoints' / 'checkpoint_12').exists()

  resumed = _run(_command('train', *_train_flags(killed_dir, 12)))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming' in (killed_dir / 'log.txt').read_text()  # Details go to the run's log.
  assert 'Resuming' not in resumed.stderr  # Not to the terminal.
  np.testing.assert_array_equal(_final_prompt(trained_run, 12), _final_prompt(killed_dir, 12))


def test_eval_and_infer_read_the_numpy_export(trained_run, tmp_path):
  prompt = trained_run / 'numpy_checkpoints' / 'checkpoint_6' / 'prompt.npy'  # As a 6-step run's.
  # The model's gin file first, then the run's (as README and the module docstrings say):
  # the other way round, the model file's sampled-vocab init overrides the run file's
  # from_file init and PROMPT_FILE is silently ignored.
  model = '--gin_file=gin_configs/test/tiny_checkpoint_prompt.gin'
  common = ["--gin.MIXTURE_OR_TASK_NAME='glue_sst2_v2'",
            f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')}'",
            f"--gin.PROMPT_FILE='{prompt}'", '--gin.BATCH_SIZE=8',
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}"]
  data_flags = lambda fn: [f"--gin.{fn}.vocabulary_path='{shared_path('t5', 'sentencepiece.model')}'",
                           f"--gin.{fn}.data_dir='{shared_path()}'", f'--gin.{fn}.max_examples=16']
  out = tmp_path / 'eval.json'
  # Rank classification (the run file's default is t5x's greedy decoding + exact match).
  evaluated = _run(_command('eval', model, '--gin_file=gin_configs/runs/prompt_eval.gin', *common,
                            *data_flags('evaluate'), f"--gin.EVAL_OUTPUT='{out}'",
                            "--gin.EVAL_MODE='rank'"))
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  metrics = json.loads(out.read_text())
  assert (metrics['task'], metrics['split'], metrics['mode']) == ('glue_sst2_v2', 'validation', 'rank')

  predictions = tmp_path / 'predictions.jsonl'
  inferred = _run(_command('infer', model, '--gin_file=gin_configs/runs/prompt_infer.gin', *common,
                           *data_flags('infer'), f"--gin.INFER_OUTPUT='{predictions}'"))
  assert inferred.returncode == 0, inferred.stderr[-3000:]
  rows = [json.loads(line) for line in predictions.read_text().splitlines()]

  # Both commands recomputed here from the files alone: the real SST-2 dev rows, the tiny
  # checkpoint and the exported prompt through the model's forward pass (no evaluation.py,
  # no KV-cached decoding).
  with shared_path('sst2', 'dev.tsv').open() as f:
    dev = [(r['sentence'], ['negative', 'positive'][int(r['label'])])
           for r in csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE)]
  vocab = vocabulary.get_vocabulary(str(shared_path('t5', 'sentencepiece.model')))
  params, config = checkpoints.load_params(str(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')))
  apply = jax.jit(t5.T5(config).apply)
  exported = np.load(prompt)

  def logits(sentences, decoder_inputs, inputs_length):
    """Inputs cut at `inputs_length` tokens (EOS last), or uncut (None)."""
    ids = [vocab.encode(f'sst2 sentence: {s}') for s in sentences]
    length = inputs_length or max(len(i) for i in ids) + 1
    enc = np.asarray([(i[:length - 1] + [1] + [0] * length)[:length] for i in ids], np.int32)
    prefix = np.broadcast_to(exported, (len(sentences),) + exported.shape)
    return np.asarray(apply({'params': params}, enc, np.asarray(decoder_inputs, np.int32),
                            prefix=prefix), np.float64)

  # eval: rank classification of evaluate.max_examples=16 drawn with data.sample's seed 0, the
  # inputs uncut (as t5x evaluates; TASK_FEATURE_LENGTHS cuts training's inputs only).
  picked = data.sample(dev, 16, seed=0)
  scores = []
  for word in ('negative', 'positive'):
    target = vocab.encode(word) + [1]
    log_probs = logits([s for s, _ in picked], [[0] + target[:-1]] * len(picked), None)
    top = log_probs.max(-1, keepdims=True)
    log_probs -= top + np.log(np.exp(log_probs - top).sum(-1, keepdims=True))
    scores.append(log_probs[:, np.arange(len(target)), target].sum(-1))
  scores = np.stack(scores, 1)
  assert np.abs(scores[:, 0] - scores[:, 1]).min() > 1e-4  # No near-ties to flip.
  correct = [['negative', 'positive'][i] == label for i, (_, label) in zip(scores.argmax(1), picked)]
  assert metrics['accuracy'] == pytest.approx(100 * np.mean(correct))

  # infer: greedy decoding (teacher-forced, one full pass per step) of the first 16 dev rows.
  first = dev[:16]
  tokens = np.zeros((16, 4), np.int64)
  for step in range(4):
    decoder_inputs = np.concatenate([np.zeros((16, 1), np.int64), tokens[:, :-1]], axis=1)
    tokens[:, step] = logits([s for s, _ in first], decoder_inputs, 32)[:, step].argmax(-1)
  cut = [list(row[:list(row).index(1)]) if 1 in row else list(row) for row in tokens]  # At EOS.
  decoded = [vocab.decode([int(t) for t in row]) for row in cut]
  assert len(set(decoded)) > 1  # Predictions that vary with the input: their agreement is telling.
  assert [r['inputs'] for r in rows] == [f'sst2 sentence: {s}' for s, _ in first]
  assert [r['target'] for r in rows] == [label for _, label in first]
  assert [r['prediction'] for r in rows] == decoded


def test_unknown_task_lists_close_matches(tmp_path, restore_task_settings):
  # A refusal raised inside the program, so run in this process (module docstring); how a
  # command prints a user error (one line, status 2) is tested in gin_configs_test.
  from prompt_recycling import train  # pylint: disable=g-import-not-at-top
  flags = [f for f in _train_flags(tmp_path / 'bad', 3) if 'MIXTURE_OR_TASK_NAME' not in f]
  with pytest.raises(ValueError) as refused:
    train.train(**entry_point_arguments('train', [*flags, "--gin.MIXTURE_OR_TASK_NAME='glue_sst_v2'"]))
  assert "Unknown task or mixture 'glue_sst_v2'" in str(refused.value)
  assert 'glue_sst2_v2' in str(refused.value)  # The close match is named.


def test_model_dir_of_another_run_is_refused(trained_run, restore_task_settings):
  from prompt_recycling import run_dir  # pylint: disable=g-import-not-at-top
  from prompt_recycling import train  # pylint: disable=g-import-not-at-top
  before = sorted(p.relative_to(trained_run) for p in trained_run.rglob('*'))
  with pytest.raises(run_dir.RunMismatchError, match='already holds a different run'):
    train.train(**entry_point_arguments('train', _train_flags(trained_run, 12, PROMPT_LENGTH=7)))
  assert _final_prompt(trained_run, 12).shape == (5, 4)
  assert sorted(p.relative_to(trained_run) for p in trained_run.rglob('*')) == before


@pytest.mark.parametrize('module', ['eval', 'infer'])
def test_prompt_file_overridden_by_a_later_gin_file_is_refused(tmp_path, module):
  """Run file before model file: the model file's sampled-vocab init would replace PROMPT_FILE."""
  prompt = tmp_path / 'prompt.npy'
  np.save(prompt, np.zeros((5, 32), np.float32))
  out = tmp_path / 'out.json'
  flags = [f'--gin_file=gin_configs/runs/prompt_{module}.gin',
           '--gin_file=gin_configs/test/tiny_checkpoint_prompt.gin',
           "--gin.MIXTURE_OR_TASK_NAME='glue_sst2_v2'",
           f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')}'",
           f"--gin.PROMPT_FILE='{prompt}'", f"--gin.EVAL_OUTPUT='{out}'",
           f"--gin.INFER_OUTPUT='{out}'"]
  # The command's `main`, under the gin its flags configure: it refuses before anything is read.
  with pytest.raises(ValueError) as refused, gin_parsed(module, flags):
    importlib.import_module(f'prompt_recycling.{module}').main([])
  assert f"PROMPT_FILE='{prompt}' is set, but prompts.prompt_tuning.init is bound to" in str(
      refused.value)
  assert 'pass the model gin file' in str(refused.value)
  assert not out.exists()
