"""README command 1, `python -m prompt_recycling.demo`, end to end at a tiny budget.

The demo's own `main` (as `python -m` runs it: one process, one CPU device) on
the shipped models, data sample and vocabulary, with 2 tuning steps, one seed,
and evaluation on 32 sampled validation sentences (`protocol.run`'s
max_eval_examples) instead of all 872.
"""
import csv
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip('seqio')

RECYCLERS = ('v2v-lin', 'lin-comb', 'v2v-nn', 'neural-projector', 'relative', 'nearest-neighbor')

_DEMO = """
import sys
from absl import app
from prompt_recycling import demo, protocol
run = protocol.run
protocol.run = lambda **kwargs: run(**kwargs, max_eval_examples=32, progress=False)
app.run(demo.main, argv=['demo', '--output_dir=' + sys.argv[1], '--train_steps=2', '--seeds=0'])
"""


def test_demo_tunes_recycles_evaluates_and_prints_the_table(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # One device, as a user.
  result = subprocess.run([sys.executable, '-c', _DEMO, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with (tmp_path / 'results.csv').open() as f:
    rows = list(csv.DictReader(f))
  by_recycler = {r['recycler']: r for r in rows}
  assert set(RECYCLERS) <= set(by_recycler), sorted(by_recycler)
  assert {'baseline', 'tuned on the target'} <= set(by_recycler)
  for name in RECYCLERS:
    row = by_recycler[name]
    assert (row['source'], row['target']) == ('A', 'B')
    correct = float(row['accuracy']) * 32 / 100  # 32 sentences: a whole number right.
    assert correct == pytest.approx(round(correct), abs=1e-3)
    assert f'| A -> B | {name} |' in result.stdout
  assert (tmp_path / 'summary.png').is_file()
  assert 'What these numbers are' in result.stdout
