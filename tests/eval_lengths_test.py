"""Evaluation lengths as t5x evaluates: no input truncated, no gold target cut by decoding.

t5x's evaluators leave `task_feature_lengths` None, so SeqIO measures the
longest example and decodes up to the longest target (issue 14, item 6). Here on
the real SST-2 validation split (24 of its 872 inputs run past 64 tokens, to 84) and
the real FewGLUE ReCoRD files, through the tiny T5X checkpoint.
"""
import csv
import logging

import numpy as np
import pytest

from conftest import shared_path
from prompt_recycling import data
from prompt_recycling import evaluation

pytest.importorskip('seqio')
import tasks  # pylint: disable=g-import-not-at-top

SHORT = {'inputs': 64, 'targets': 8}  # What a small run trains at (the demo's inputs length).


@pytest.fixture(scope='module')
def local_tasks():
  tasks.set_vocabulary(str(shared_path('t5', 'sentencepiece.model')))
  tasks.set_data_source(local_dir=str(shared_path()))
  yield
  tasks.reset_data_source()
  tasks.set_vocabulary(None)


@pytest.fixture(scope='module')
def tiny(local_tasks, tiny_prompted):
  del local_tasks  # The tasks read the local files while these tests run.
  return tiny_prompted


@pytest.fixture(scope='module')
def sst2_validation(local_tasks):
  return list(data.seqio_examples('glue_sst2_v2', 'validation', None, shuffle=False,
                                  per_host=False))


def _dev_tsv_input_lengths(t5_vocab):
  """Independently of the task: 'sst2 sentence: ...' of each dev.tsv row, in T5 tokens + EOS."""
  with shared_path('sst2', 'dev.tsv').open() as f:
    rows = list(csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
  return [len(t5_vocab.encode(f'sst2 sentence: {r["sentence"]}')) + 1 for r in rows]


def test_sst2_validation_is_evaluated_at_its_longest_input(sst2_validation, t5_vocab, caplog):
  expected = _dev_tsv_input_lengths(t5_vocab)
  assert [len(ex['inputs']) for ex in sst2_validation] == expected  # Read untrimmed.
  longer = sum(n > SHORT['inputs'] for n in expected)
  assert longer == 24 and max(expected) == 84
  with caplog.at_level(logging.INFO):
    lengths = evaluation.eval_lengths(sst2_validation, SHORT, 'glue_sst2_v2 validation')
  # Decoding runs to the longest gold target ('negative' / 'positive' + EOS), no further.
  assert lengths == {'inputs': 84, 'targets': max(len(ex['targets']) for ex in sst2_validation)}
  assert ("24 of 872 examples have inputs longer than TASK_FEATURE_LENGTHS['inputs']=64 "
          '(longest 84 tokens): evaluated uncut') in caplog.text
  assert 'targets longer' not in caplog.text


def test_an_explicit_cap_cuts_with_a_warning(sst2_validation, caplog):
  with caplog.at_level(logging.WARNING):
    lengths = evaluation.eval_lengths(sst2_validation, SHORT, 'glue_sst2_v2 validation',
                                      max_lengths={'inputs': 70})
  assert lengths['inputs'] == 70
  cut = sum(len(ex['inputs']) > 70 for ex in sst2_validation)
  assert f'{cut} of 872 examples have inputs longer than the evaluation cap 70' in caplog.text


def test_the_evaluator_scores_long_inputs_whole(tiny, monkeypatch):
  """The task evaluator, configured at 64 input tokens, scores the 24 longer inputs on their
  whole inputs: the same scores as with room to spare, not those of the first 64 tokens."""
  long_only = lambda examples, n, seed=0: [ex for ex in examples if len(ex['inputs']) > 64]
  monkeypatch.setattr(evaluation.data, 'sample', long_only)
  seen = []
  score = evaluation.rank_scores
  monkeypatch.setattr(evaluation, 'rank_scores', lambda *a, **k: seen.append((a, k)) or score(
      *a, **k))
  evaluate = evaluation.task_evaluator('glue_sst2_v2', split='validation', feature_lengths=SHORT,
                                       mode='rank', batch_size=8)
  metrics = evaluate(*tiny, 0)
  assert metrics['num_examples'] == 24
  (args, kwargs), = seen
  examples, candidates = args[3], args[4]
  assert kwargs['feature_lengths']['inputs'] == 84
  evaluated = np.stack(score(*args[:5], batch_size=8,
                             feature_lengths=kwargs['feature_lengths']))
  roomy = np.stack(score(*args[:5], batch_size=8, feature_lengths={'inputs': 128, 'targets': 8}))
  cut = np.stack(score(*tiny, examples, candidates, batch_size=8, feature_lengths=SHORT))
  np.testing.assert_allclose(evaluated, roomy, rtol=1e-5, atol=1e-5)
  assert np.abs(cut - roomy).max() > 1e-3


@pytest.fixture
def record_dir(tmp_path, local_tasks):
  """The FewGLUE ReCoRD subsets (official format) laid out as the official release."""
  partial = shared_path('superglue_fewshot_partial', 'ReCoRD')
  (tmp_path / 'superglue' / 'ReCoRD').mkdir(parents=True)
  (tmp_path / 'superglue' / 'ReCoRD' / 'val.jsonl').symlink_to(partial / 'dev32.jsonl')
  (tmp_path / 'superglue' / 'ReCoRD' / 'train.jsonl').symlink_to(partial / 'train.jsonl')
  tasks.set_data_source(local_dir=str(tmp_path))
  yield tmp_path
  tasks.set_data_source(local_dir=str(shared_path()))


def test_record_decodes_past_its_longest_answer(tiny, record_dir, monkeypatch):
  """Decoding ReCoRD at the stock 8 target tokens would cut answers: it runs to the task's
  declared answer length (32), beyond every gold answer of the split."""
  monkeypatch.setattr(evaluation.data, 'sample', lambda examples, n, seed=0: data.take(
      examples, n))
  seen = []
  predict = evaluation.greedy_predict
  monkeypatch.setattr(evaluation, 'greedy_predict', lambda *a, **k: seen.append(
      (a[3], k['feature_lengths'])) or predict(*a, **k))
  evaluate = evaluation.task_evaluator('super_glue_record_v102', split='validation',
                                       feature_lengths=SHORT, mode='decode', batch_size=8,
                                       max_examples=8)
  metrics = evaluate(*tiny, 0)
  assert set(metrics) == {'em', 'f1', 'num_examples'}
  (examples, lengths), = seen
  gold = list(data.seqio_examples('super_glue_record_v102', 'validation', None, shuffle=False,
                                  per_host=False))
  assert lengths['targets'] == tasks.super_glue.RECORD_TARGET_LENGTH
  assert lengths['targets'] >= max(len(ex['targets']) for ex in gold)
  assert lengths['inputs'] == max(len(ex['inputs']) for ex in examples) > SHORT['inputs']
