"""The stock fine-tuning config's evaluation, run on every registered task with local data.

`gin_configs/runs/prompt_finetune.gin` evaluates `train.eval_split` with
`train.eval_mode` and keeps the best `train.best_metric`; a task that cannot be
evaluated that way would fail at its first evaluation, after a run's first
1,000 steps. Here each task is evaluated that way on 4 examples, with the real
tiny T5X checkpoint and a 5-token prompt. Tasks without local data (read from
TFDS) and mixtures are listed, not run.
"""
import ast
import re

import numpy as np
import pytest

from conftest import REPO
from conftest import shared_path
from prompt_recycling import checkpoints
from prompt_recycling import evaluation
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling.models import t5

pytest.importorskip('seqio')
import tasks  # pylint: disable=g-import-not-at-top

FINETUNE_GIN = REPO / 'gin_configs' / 'runs' / 'prompt_finetune.gin'


def _gin_value(name: str):
  match = re.search(rf'^{re.escape(name)}\s*=\s*(.+)$', FINETUNE_GIN.read_text(), re.MULTILINE)
  assert match, f'{name} is not set in {FINETUNE_GIN}'
  value = match.group(1).strip()
  if value.startswith('%'):  # A macro: its own binding in the same file.
    return _gin_value(value[1:])
  return ast.literal_eval(value)


STOCK = {'split': _gin_value('train.eval_split'), 'mode': _gin_value('train.eval_mode'),
         'lengths': _gin_value('TASK_FEATURE_LENGTHS'), 'best': _gin_value('train.best_metric')}

# Tasks with no train split: a stock config cannot train them, only evaluate them.
EVAL_ONLY = re.compile(r'(_axb_|_axg_|glue_ax_|_mnli_matched_|_mnli_mismatched_|_simple_eval)')


def _has_local(name: str, split: str) -> bool:
  task = tasks.get_task(name)
  if split not in task.source.splits:
    return False
  try:
    next(iter(task.source.get_dataset(split=split, shuffle=False)))
  except FileNotFoundError:
    return False
  except ValueError as e:
    if 'no local reader' in str(e):
      return False
    raise
  return True


@pytest.fixture(scope='module')
def tiny():
  tasks.set_vocabulary(str(shared_path('t5', 'sentencepiece.model')))
  tasks.set_data_source(local_dir=str(shared_path()))
  params, config = checkpoints.load_params(str(shared_path('t5', 'test_t5_1_1_tiny',
                                                           'checkpoint_3')))
  steps = trainer.Steps(t5.T5(config), prompts.prompt_tuning(5), None, partitioning.make_mesh(1))
  frozen = steps.put_frozen(params)
  prompt = np.random.default_rng(0).normal(size=(5, config.emb_dim)).astype(np.float32)
  yield steps, trainer.put_on_mesh({'prompt': prompt}, steps.params_shardings), frozen
  tasks.reset_data_source()
  tasks.set_vocabulary(None)


TASKS = [n for n in tasks.names() if not tasks.registry.is_mixture(n)
         and not n.startswith('lama_')]  # LAMA's evaluation is tests/tasks/lama (issue 11).


# T5's WSC training half: trained in the SuperGLUE mixture, evaluated as `..._simple_eval`.
TRAIN_ONLY = ('super_glue_wsc_v102_simple_train', 'super_glue_wsc_v102_simple_train_taskless')


def test_every_trainable_task_offers_the_stock_eval_split():
  missing = [n for n in TASKS if 'train' in tasks.get_task(n).source.splits and n not in TRAIN_ONLY
             and STOCK['split'] not in tasks.get_task(n).source.splits]
  assert not missing, f'no {STOCK["split"]!r} split: {missing}'


@pytest.mark.parametrize('name', [n for n in TASKS if n not in TRAIN_ONLY])
def test_stock_evaluation_runs(name, tiny, monkeypatch):
  # The first 4 examples rather than a random 4 of the whole split: the same
  # evaluation, without tokenizing every example of the split (seconds, not minutes).
  monkeypatch.setattr(evaluation.data, 'sample', lambda examples, n, seed=0: evaluation.data.take(
      examples, n))
  if EVAL_ONLY.search(name):
    split = tasks.get_task(name).source.splits[0]
    mode = STOCK['mode'] if tasks.label_words(name) else 'decode'
  else:
    split, mode = STOCK['split'], STOCK['mode']
  if not _has_local(name, split):
    pytest.skip(f'{name} {split!r}: no local data (read from TFDS)')
  evaluate = evaluation.task_evaluator(name, split=split, feature_lengths=STOCK['lengths'],
                                       mode=mode, batch_size=8, max_examples=4)
  metrics = evaluate(*tiny, 0)
  task = tasks.get_task(name)
  if task.metric_fns and not EVAL_ONLY.search(name):
    # The stock file selects on nothing by default (best_metric None); every task reports a metric.
    assert STOCK['best'] in metrics if STOCK['best'] else set(metrics) - {'num_examples'}, (
        name, metrics)
  assert all(np.isfinite(v) or k.startswith(('auc', 'normed_auc')) for k, v in metrics.items()), (
      name, metrics)


@pytest.mark.parametrize('name', ['super_glue_record_v102', 'super_glue_record_v102_taskless'])
def test_stock_evaluation_ranks_record_entities(name, tiny, tmp_path, monkeypatch):
  """ReCoRD from the 32-query FewGLUE files (the full release is not local), laid out as
  the official one: ranked over each query's entities (rank_eval_test checks that
  candidates longer than the targets length are scored uncut)."""
  fewshot = shared_path('superglue_fewshot_partial', 'ReCoRD')
  record_dir = tmp_path / 'superglue' / 'ReCoRD'
  record_dir.mkdir(parents=True)
  (record_dir / 'train.jsonl').symlink_to(fewshot / 'train.jsonl')
  (record_dir / 'val.jsonl').symlink_to(fewshot / 'dev32.jsonl')
  tasks.set_data_source(local_dir=str(tmp_path))
  monkeypatch.setattr(evaluation.data, 'sample', lambda examples, n, seed=0: evaluation.data.take(
      examples, n))
  scored = []
  score = evaluation.rank_scores
  monkeypatch.setattr(evaluation, 'rank_scores', lambda *a, **k: scored.append(a[4]) or score(
      *a, **k))
  try:
    evaluate = evaluation.task_evaluator(name, split=STOCK['split'],
                                         feature_lengths=STOCK['lengths'], mode='rank',
                                         batch_size=8, max_examples=2)
    metrics = evaluate(*tiny, 0)
  finally:
    tasks.set_data_source(local_dir=str(shared_path()))
  assert set(metrics) == {'em', 'f1', 'num_examples'} and metrics['num_examples'] == 2
  assert len(scored[0]) == 2 and all(len(example) > 2 for example in scored[0])
