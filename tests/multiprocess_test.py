"""Two processes (gloo collectives, 2 CPU devices each) train through `train.train`'s own batching.

`train.py` gives each host its own shard of the training split and shuffles
it there (as t5x with SeqIO's `ShardInfo`), so a 2-process run cannot see the
batches a 1-process run sees: the 1-process run shuffles the whole split. What
must hold instead, and is asserted here:

  * the hosts read disjoint examples (no host repeats another's work);
  * the 2-process run takes exactly the steps one process takes on the global
    batches the hosts' streams make together (host 0's rows, then host 1's:
    the order `partitioning.shard_batch` assembles them in): the same losses at
    every step and the same prompt after 3 and 6 steps, to float tolerance
    (the reductions run over 2 processes instead of one).

The reference reads each host's shard through the same `data.seqio_examples`
call `train.py` makes, as process i of 2 (see tests/scripts/multiprocess_train.py).
"""
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import shared_path

pytest.importorskip('seqio')

SCRIPT = pathlib.Path(__file__).parent / 'scripts' / 'multiprocess_train.py'
TIMEOUT_S = 600  # A hang guard, generous for a loaded 2-core machine.


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(*args):
  env = {**os.environ, 'PYTHONPATH': str(SCRIPT.parents[2]), 'JAX_PLATFORMS': 'cpu',
         'TF_CPP_MIN_LOG_LEVEL': '3'}
  env.pop('XLA_FLAGS', None)
  return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(procs):
  try:
    for p in procs:
      out, _ = p.communicate(timeout=TIMEOUT_S)
      assert p.returncode == 0, out.decode()[-3000:]
  finally:  # A failed or stuck process must not leave its peers waiting on it.
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _prompt(out_dir, step):
  return np.load(out_dir / 'model' / 'numpy_checkpoints' / f'checkpoint_{step}' / 'prompt.npy')


def test_two_processes_take_the_steps_of_one_on_the_hosts_shards(tmp_path):
  shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')
  shared_path('sst2', 'dev.tsv')
  two, ref = tmp_path / 'two', tmp_path / 'reference'
  port = _free_port()
  _wait([_start('train', two, i, 2, port) for i in range(2)] + [_start('reference', ref, 2)])

  hosts = np.load(ref / 'result.npz')['host_inputs']  # [host, 6 steps x 4 rows, length]
  assert hosts.shape[:2] == (2, 24)
  host0, host1 = ({row.tobytes() for row in h} for h in hosts)
  assert len(host0) > 20 and len(host1) > 20 and not host0 & host1

  losses, ref_losses = np.load(two / 'result.npz')['losses'], np.load(ref / 'result.npz')['losses']
  assert len(losses) == 6 and len(set(losses.round(6))) == 6  # Six different batches.
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-5)
  for step in (3, 6):
    np.testing.assert_allclose(_prompt(two, step), _prompt(ref, step), rtol=1e-4, atol=1e-5)
  assert np.abs(_prompt(two, 6) - _prompt(two, 3)).max() > 1e-3  # The prompt did train.
