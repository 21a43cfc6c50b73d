"""README command 1 (the demo) end to end at a tiny budget, as a user runs it."""
import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

pytest.importorskip('seqio')


def _demo(tmp_path, *flags):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # One CPU device, as a user.
  return subprocess.run([sys.executable, '-m', 'prompt_recycling.demo',
                         f'--output_dir={tmp_path / "demo"}', *flags],
                        cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def test_demo_runs_the_whole_protocol_quietly(tmp_path, tiny_t5x_checkpoint):
  # The real tiny T5X checkpoint stands in for A and B (fast); the shipped C is unused.
  result = _demo(tmp_path, f'--model_a={tiny_t5x_checkpoint}', f'--model_b={tiny_t5x_checkpoint}',
                 '--targets=B', '--train_steps=2', '--seeds=0', '--eval_examples=24')
  assert result.returncode == 0, result.stderr[-3000:]
  # The table with intervals, the verdict and what the numbers are not.
  assert '| A -> B | v2v-lin | 2 |' in result.stdout and '[95% CI]' in result.stdout
  assert 'zero-shot' in result.stdout and "What they are not: the papers' numbers" in result.stdout
  # A and B are the same checkpoint here: the token map between them is exact.
  assert 'Token map A -> B' in result.stdout and 'cosine 1.00 with' in result.stdout
  # The closing text states this run's settings, not the defaults.
  assert ('2 10-token prompts tuned on model A for 2 steps' in result.stdout
          and 'a seeded sample of 24 of the 872 sentences' in result.stdout), result.stdout[-1500:]
  # Quiet terminal: no INFO lines (orbax, trainer); they are in the run's log instead.
  # (TensorFlow's C++ start-up lines, 'I0000 00:00:...', come before any Python runs.)
  python_info = re.compile(r'^I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\]')
  assert not [l for l in result.stderr.splitlines() if python_info.match(l)]
  assert python_info.match((tmp_path / 'demo' / 'log.txt').read_text().splitlines()[0]) is None
  assert 'INFO' in (tmp_path / 'demo' / 'log.txt').read_text()
  with (tmp_path / 'demo' / 'results.csv').open() as f:
    rows = list(csv.DictReader(f))
  recyclers = {r['recycler'] for r in rows if r['source'] == 'A' and r['target'] == 'B'}
  assert recyclers == {'v2v-lin', 'lin-comb', 'v2v-nn', 'neural-projector', 'relative',
                       'nearest-neighbor'}
  assert {r['num_examples'] for r in rows} == {'24'}
  assert (tmp_path / 'demo' / 'summary.png').stat().st_size > 10_000


@pytest.mark.parametrize('flags, message', [
    (['--model_a=/no/such/checkpoint'], '/no/such/checkpoint'),
    (['--targets=D'], "unknown ['D']"),
    (['--targets=B,C', '--model_c=/missing/c'], '/missing/c'),
])
def test_demo_user_mistakes_are_one_line(tmp_path, flags, message):
  result = _demo(tmp_path, *flags)
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr and message in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')


def test_verdict_reads_the_intervals():
  from prompt_recycling import demo  # pylint: disable=g-import-not-at-top
  from prompt_recycling import results as results_lib  # pylint: disable=g-import-not-at-top
  R = results_lib.Result
  rows = results_lib.summarize([
      R('-', 'B', results_lib.BASELINE, '-', 63.5, 872),
      R('B', 'B', results_lib.TUNED, 'p', 80.0, 872),
      R('-', 'C', results_lib.BASELINE, '-', 65.8, 872),
      R('C', 'C', results_lib.TUNED, 'p', 58.8, 872),  # Wilson intervals do not overlap: below.
      *[R('A', 'B', 'v2v-lin', f'p{i}', 70.0 + i % 2, 872) for i in range(10)],
      *[R('A', 'B', 'relative', f'p{i}', 50.0 + i % 2, 872) for i in range(10)],
      *[R('A', 'C', 'v2v-lin', f'p{i}', 60.0 + 8 * (i % 2), 872) for i in range(10)]])
  text = demo.verdict(rows)
  assert 'a prompt tuned on B: 80.0% (clearly above it)' in text
  assert 'a prompt tuned on C: 58.8% (clearly below it)' in text
  assert 'beyond the noise: v2v-lin; below it: relative' in text
  assert 'beyond the noise: none; below it: none' in text  # A -> C: 64 +- 3 overlaps 65.8.
  assert 'worse than chance' not in demo.verdict(rows, chance=50.9)  # Both zero-shots above it.


def test_verdict_says_when_beating_a_zero_shot_below_chance_is_no_transfer():
  """The shipped C answers SST-2 at 39.3% without a prompt: landing at chance beats that."""
  from prompt_recycling import demo  # pylint: disable=g-import-not-at-top
  from prompt_recycling import results as results_lib  # pylint: disable=g-import-not-at-top
  R = results_lib.Result
  rows = results_lib.summarize([
      R('-', 'C', results_lib.BASELINE, '-', 39.3, 872),
      *[R('A', 'C', 'relative', f'p{i}', 48.5 + i % 2, 872) for i in range(10)],
      *[R('A', 'C', 'v2v-lin', f'p{i}', 60.0 + i % 2, 872) for i in range(10)]])
  text = demo.verdict(rows, chance=50.9)
  assert 'mean above zero-shot beyond the noise: relative, v2v-lin;' in text
  assert 'C answers worse than chance (50.9%' in text
  assert text.endswith('means above chance beyond the noise: v2v-lin.')
  assert 'worse than chance' not in demo.verdict(rows)  # No chance given: the paper's rule alone.


def test_majority_accuracy_is_the_frequent_label_share_of_the_evaluated_sentences(
    restore_task_settings):
  pytest.importorskip('seqio')
  from prompt_recycling import data, demo  # pylint: disable=g-import-not-at-top
  data.configure_tasks(str(demo.ASSETS / 't5' / 'sentencepiece.model'), str(demo.ASSETS / 'data'))
  # SST-2 validation: 444 positive, 428 negative.
  assert demo.majority_accuracy('glue_sst2_v2', 'validation', None) == pytest.approx(100 * 444 / 872)
  sample = demo.majority_accuracy('glue_sst2_v2', 'validation', 100)
  assert 50 <= sample < 65  # A seeded 100 of the 872: the majority share, near half.


def test_vocabulary_map_fit_tells_a_rotation_from_unrelated_tables():
  from prompt_recycling import demo  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  table = rng.normal(size=(32128, 16)).astype(np.float32)
  rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  assert demo.vocabulary_map_fit(table, table @ rotation) > 0.99
  unrelated = rng.normal(size=(32128, 24)).astype(np.float32)  # Another width, as A -> C.
  assert abs(demo.vocabulary_map_fit(table, unrelated)) < 0.1
