"""`eval` and `infer --multihost` on 2 processes (gloo, 2 CPU devices each) equal one process.

The two processes run the real commands. The one-process reference is the same
command's gin files and bindings parsed and run in the test's own process
(`conftest.entry_point_arguments`; its 8 CPU devices): the command line of
each is tested in tests/entry_points_test.py, and two more interpreters here
would cost their start-up (TensorFlow, SeqIO) for nothing this test checks.
Evaluation: SST-2's whole validation split, 872 examples at batch 32, so the
last global batch holds 8 real rows, all in process 0's half (process 1 feeds
padding only). Inference: 13 examples at batch 8, the last batch split 4 real
rows / 1 real row.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, entry_point_arguments, shared_path

pytest.importorskip('seqio')

TIMEOUT_S = 600  # A hang guard, generous for a loaded 2-core machine.


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _flags(module, prompt, out, batch_size, max_examples):
  fn = {'eval': 'evaluate', 'infer': 'infer'}[module]
  return ['--gin_file=gin_configs/test/tiny_checkpoint_prompt.gin',
          f'--gin_file=gin_configs/runs/prompt_{module}.gin',
          "--gin.MIXTURE_OR_TASK_NAME='glue_sst2_v2'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')}'",
          f"--gin.PROMPT_FILE='{prompt}'", f'--gin.BATCH_SIZE={batch_size}',
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}", "--gin.EVAL_MODE='rank'",
          f"--gin.{fn}.vocabulary_path='{shared_path('t5', 'sentencepiece.model')}'",
          f"--gin.{fn}.data_dir='{shared_path()}'", f'--gin.{fn}.max_examples={max_examples}',
          f"--gin.EVAL_OUTPUT='{out}'" if module == 'eval' else f"--gin.INFER_OUTPUT='{out}'"]


def _run_here(module, flags):
  """What `python -m prompt_recycling.<module> *flags` computes, run in this process."""
  from prompt_recycling import eval as eval_lib  # pylint: disable=g-import-not-at-top
  from prompt_recycling import infer as infer_lib  # pylint: disable=g-import-not-at-top
  fn = {'eval': eval_lib.evaluate, 'infer': infer_lib.infer}[module]
  fn(**entry_point_arguments(module, flags))


def _run(module, flags, num_processes):
  """Runs `python -m prompt_recycling.<module> --multihost` as `num_processes` processes; never
  hangs."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
         'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo'}
  cmd = [sys.executable, '-m', f'prompt_recycling.{module}', *flags]
  port = _free_port()
  cmds = [cmd + ['--multihost', f'--coordinator_address=127.0.0.1:{port}',
                 f'--num_processes={num_processes}', f'--process_id={i}']
          for i in range(num_processes)]
  procs = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for c in cmds]
  try:
    for p in procs:
      out, _ = p.communicate(timeout=TIMEOUT_S)
      assert p.returncode == 0, out.decode()[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.fixture(scope='module')
def prompt(tmp_path_factory):
  path = tmp_path_factory.mktemp('prompt') / 'prompt.npy'
  # Large enough to move the tiny model's predictions off a constant answer.
  np.save(path, 3 * np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
  return path


def test_eval_two_processes_equal_one(tmp_path, prompt, restore_task_settings):
  one, two = tmp_path / 'one.json', tmp_path / 'two.json'
  _run_here('eval', _flags('eval', prompt, one, 32, None))
  _run('eval', _flags('eval', prompt, two, 32, None), 2)
  one, two = json.loads(one.read_text()), json.loads(two.read_text())
  # Every prediction-based metric is identical; AUC, from float32 scores of batches laid out
  # over other devices, agrees to ~1e-6 relative.
  assert {k: v for k, v in one.items() if 'auc' not in k} == {
      k: v for k, v in two.items() if 'auc' not in k}
  assert one == pytest.approx(two, rel=1e-5)
  assert 0 < one['accuracy'] < 100


def test_infer_two_processes_equal_one(tmp_path, prompt, restore_task_settings):
  one, two = tmp_path / 'one.jsonl', tmp_path / 'two.jsonl'
  _run_here('infer', _flags('infer', prompt, one, 8, 13))
  _run('infer', _flags('infer', prompt, two, 8, 13), 2)
  rows = [json.loads(line) for line in one.read_text().splitlines()]
  assert len(rows) == 13
  assert len({r['prediction'] for r in rows}) > 1  # Predictions vary with the input.
  assert two.read_text() == one.read_text()
