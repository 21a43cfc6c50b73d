"""Training a mixture with the default run file evaluates each task with its own metrics.

The run trains and evaluates a mixture of 3 LAMA relations (as `lama_trex` is made of
41): reading and ranking all 41 relations' splits costs a minute, and every relation
goes through the same code. The average over all 41 is checked on cheap results below.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, shared_path

pytest.importorskip('seqio')

RELATIONS = ('P19', 'P20', 'P103')
MIXTURE = 'lama_trex_three_relations'  # Registered by the command below, in its own process.
# The real train entry point on a mixture of three `lama_trex` relations, with LAMA's
# candidates fixed to a short list so that ranking them stays fast (`tasks.set_lama_candidates`).
_TRAIN = f"""
import sys
import gin
import tasks
from prompt_recycling import gin_setup
from prompt_recycling import train as train_lib
tasks.set_lama_candidates(sys.argv[1].split(','))
tasks.registry.add_mixture({MIXTURE!r}, [tasks.lama.task_name(r) for r in {RELATIONS!r}],
                           default_rate=1.0)
train = gin.configurable(train_lib.train)
gin_setup.parse(['gin_configs/test/tiny_checkpoint_prompt.gin',
                 'gin_configs/runs/prompt_finetune.gin'], sys.argv[2:])
train()
"""
CANDIDATES = 'English,French,London,Paris,Italy,Canada,Japan,football'


def test_lama_mixture_reports_p_at_1_per_relation_and_their_average(tmp_path):
  model_dir = tmp_path / 'run'
  bindings = [f"MODEL_DIR='{model_dir}'", f"MIXTURE_OR_TASK_NAME='{MIXTURE}'",
              f"INITIAL_CHECKPOINT_PATH='{shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')}'",
              'TRAIN_STEPS=2', 'BATCH_SIZE=8', "TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
              'train.eval_examples=2', 'train.progress=False', "EVAL_MODE='rank'",
              "train.best_metric='p@1'",  # Selection is opt-in; a mixture selects on 'average'.
              "train.report_split='test'",  # Selection never on the reported split.
              f"train.vocabulary_path='{shared_path('t5', 'sentencepiece.model')}'",
              f"train.data_dir='{shared_path('lama').parent}'"]
  # One CPU device, as a user (and as tests/entry_points_test.py: the same train step, which
  # the test run's compilation cache then holds once).
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  result = subprocess.run([sys.executable, '-c', _TRAIN, CANDIDATES, *bindings], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**env, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(REPO)})
  assert result.returncode == 0, result.stderr[-3000:]
  best = json.loads((model_dir / 'best.json').read_text())
  assert best['metric'] == 'average' and best['step'] == 2
  per_relation = [best['metrics'][f'lama_trex_{r}/p@1'] for r in RELATIONS]
  assert best['value'] == pytest.approx(np.mean(per_relation))
  assert best['metrics']['p@1'] == pytest.approx(np.mean(per_relation))
  # Two examples a relation: each relation's P@1 is 0, 50 or 100.
  assert set(per_relation) <= {0.0, 50.0, 100.0}
  # Each relation scored by its own metric function: its exact match is reported too.
  assert all(f'lama_trex_{r}/exact_match' in best['metrics'] for r in RELATIONS)


def test_lama_average_is_p_at_1_over_the_41_relations():
  """`lama_trex`'s tasks, each scored by LAMA's metric, then the mixture's averages."""
  import tasks  # pylint: disable=g-import-not-at-top
  from tasks import metrics  # pylint: disable=g-import-not-at-top
  mixture = tasks.get_task(tasks.lama.MIXTURE)
  assert [t.name for t in mixture.tasks] == [tasks.lama.task_name(r) for r in tasks.lama.RELATIONS]
  assert len(mixture.tasks) == 41
  results, expected = {}, []
  for i, task in enumerate(mixture.tasks):
    relation = task.name.rsplit('_', 1)[1]
    hits = i % 4  # 0 to 3 of 4 facts right: P@1 0, 25, 50 or 75.
    targets = [{'object': 'Paris', 'relation': relation}] * 4
    predictions = ['Paris'] * hits + ['paris'] * (4 - hits)  # Case differs: a P@1 miss.
    results[task.name] = task.metric_fns[0](targets, predictions)
    expected.append(25.0 * hits)
  out = metrics.mixture_metrics(results)
  assert out['average'] == pytest.approx(np.mean(expected))  # 36.59: all 41 terms (40 give 37.5).
  assert out['p@1'] == pytest.approx(np.mean(expected))
  assert out['exact_match'] == 100.0  # Lenient matching forgives the case.
  assert [out[f'{t.name}/p@1'] for t in mixture.tasks] == expected
