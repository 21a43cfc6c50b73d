"""ReCoRD's target length, measured on the real files: no answer is cut in training or decoding.

The full ReCoRD release is not local; the FewGLUE 32-query train and dev32
files are (official format). Their answers, in T5 tokens with EOS, run past the
stock 8 target tokens; the task declares `RECORD_TARGET_LENGTH` and training
(`data.task_feature_lengths`) and decoding (`evaluation.eval_lengths`) use it.
"""
import json
import logging

import pytest

from conftest import shared_path
from prompt_recycling import data

pytest.importorskip('seqio')
import tasks  # pylint: disable=g-import-not-at-top

STOCK = {'inputs': 512, 'targets': 8}  # runs/prompt_finetune.gin's TASK_FEATURE_LENGTHS.
RECORD = 'super_glue_record_v102'


@pytest.fixture(scope='module')
def record_dir(tmp_path_factory):
  partial = shared_path('superglue_fewshot_partial', 'ReCoRD')
  root = tmp_path_factory.mktemp('record')
  (root / 'superglue' / 'ReCoRD').mkdir(parents=True)
  (root / 'superglue' / 'ReCoRD' / 'val.jsonl').symlink_to(partial / 'dev32.jsonl')
  (root / 'superglue' / 'ReCoRD' / 'train.jsonl').symlink_to(partial / 'train.jsonl')
  tasks.set_vocabulary(str(shared_path('t5', 'sentencepiece.model')))
  tasks.set_data_source(local_dir=str(root))
  yield partial
  tasks.reset_data_source()
  tasks.set_vocabulary(None)


def _raw_lengths(path, t5_vocab):
  """Independently of the task: each query's distinct answers and every entity of a file, in
  T5 tokens + EOS (the same answer text at two places of a passage is one target)."""
  answers, entities = [], []
  for line in path.read_text().splitlines():
    row = json.loads(line)
    text = row['passage']['text']
    entities += [len(t5_vocab.encode(text[e['start']:e['end'] + 1])) + 1
                 for e in row['passage']['entities']]
    answers += [len(t5_vocab.encode(a)) + 1 for qa in row['qas']
                for a in {a['text'] for a in qa['answers']}]
  return answers, entities


@pytest.mark.parametrize('split,file', [('train', 'train.jsonl'), ('validation', 'dev32.jsonl')])
def test_no_record_answer_or_entity_exceeds_the_declared_length(record_dir, t5_vocab, split, file):
  answers, entities = _raw_lengths(record_dir / file, t5_vocab)
  examples = list(data.seqio_examples(RECORD, split, None, shuffle=False, per_host=False))
  # The task's targets are the answers, whole: one example per answer.
  assert sorted(len(ex['targets']) for ex in examples) == sorted(answers)
  assert max(answers) == {'train': 11, 'validation': 8}[split]  # As super_glue.py states.
  assert max(answers) <= max(entities) < tasks.super_glue.RECORD_TARGET_LENGTH
  assert max(answers) > STOCK['targets'] or split == 'validation'  # The stock 8 cuts one.


@pytest.mark.parametrize('name', [RECORD, f'{RECORD}_taskless', 'super_glue_v102_proportional'])
def test_training_lengths_fit_record_answers(name, caplog):
  with caplog.at_level(logging.WARNING):
    lengths = data.task_feature_lengths(name, STOCK)
  assert lengths == {'inputs': 512, 'targets': tasks.super_glue.RECORD_TARGET_LENGTH}
  assert f"{name}: TASK_FEATURE_LENGTHS['targets']=8 would cut its answers" in caplog.text
  assert data.task_feature_lengths(name, {'inputs': 512, 'targets': 64})['targets'] == 64


def test_other_tasks_keep_the_configured_lengths():
  assert data.task_feature_lengths('glue_sst2_v2', STOCK) == STOCK
  assert tasks.registry.target_length('glue_sst2_v2') is None


def test_record_trains_on_whole_answers(record_dir):
  """Read for training at the raised lengths, every answer keeps all its tokens."""
  lengths = data.task_feature_lengths(RECORD, STOCK)
  trimmed = list(data.seqio_examples(RECORD, 'train', lengths, shuffle=False, per_host=False))
  whole = list(data.seqio_examples(RECORD, 'train', None, shuffle=False, per_host=False))
  assert [list(ex['targets']) for ex in trimmed] == [list(ex['targets']) for ex in whole]
  batch = data.to_batch(trimmed, lengths)
  assert (batch['decoder_target_tokens'] == 1).sum() == len(trimmed)  # Every EOS survives.
  at_stock = list(data.seqio_examples(RECORD, 'train', STOCK, shuffle=False, per_host=False))
  assert [list(ex['targets']) for ex in at_stock] != [list(ex['targets']) for ex in whole]
