"""Two processes (gloo collectives, 2 CPU devices each) train exactly as one process does."""
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import shared_path

SCRIPT = pathlib.Path(__file__).parent / 'scripts' / 'multiprocess_train.py'


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run(out_dir, num_processes):
  out_dir.mkdir()
  port = _free_port()
  env = {**os.environ, 'PYTHONPATH': str(SCRIPT.parents[2])}
  env.pop('XLA_FLAGS', None)
  procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(out_dir), str(i), str(num_processes),
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(num_processes)]
  try:
    for p in procs:
      out, _ = p.communicate(timeout=600)
      assert p.returncode == 0, out.decode()[-3000:]
  finally:  # A failed or stuck process must not leave its peers waiting on it.
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return np.load(out_dir / 'result.npz')


def test_two_processes_equal_one(tmp_path):
  shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')
  shared_path('sst2', 'train.tsv')
  one = _run(tmp_path / 'one', 1)      # 2 devices, 1 process
  two = _run(tmp_path / 'two', 2)      # 2 x 2 devices, 2 processes
  assert len(one['losses']) == 6
  np.testing.assert_allclose(one['losses'], two['losses'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(one['prompt'], two['prompt'], rtol=1e-4, atol=1e-5)
