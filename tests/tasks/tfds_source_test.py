"""The default TFDS source, through `tfds.testing.mock_data` (random examples, real schemas).

Checks the builder names, versions and splits exist, the schemas reach our
preprocessors, and that the source switch applies after import.
"""
import re

import pytest
import tensorflow_datasets as tfds

import tasks

LENGTHS = {'inputs': 64, 'targets': 8}


@pytest.fixture(autouse=True)
def tfds_source(sentencepiece_model):
  tasks.set_vocabulary(str(sentencepiece_model))
  tasks.set_data_source(None)  # TFDS, whatever $PROMPT_RECYCLING_DATA_DIR says.
  yield
  tasks.reset_data_source()
  tasks.set_vocabulary(None)


def take(name, split, n=2):
  with tfds.testing.mock_data(num_examples=n):
    ds = tasks.get_task(name).get_dataset(LENGTHS, split=split, shuffle=False)
    return [{k: (v.decode('utf-8') if isinstance(v, bytes) else v) for k, v in ex.items()}
            for ex in ds.take(n).as_numpy_iterator()]


# (task, split, the inputs' format).
CASES = [
    ('glue_sst2_v2', 'train', r'sst2 sentence: .*'),
    ('glue_qqp_v2', 'validation', r'qqp question1: .* question2: .*'),
    ('super_glue_rte_v102', 'validation', r'rte hypothesis: .* premise: .*'),
    ('super_glue_boolq_v102', 'train', r'boolq passage: .* question: .*'),
    ('super_glue_cb_v102', 'validation', r'cb hypothesis: .* premise: .*'),
    ('super_glue_copa_v102', 'train', r'copa choice1: .* choice2: .* premise: .* question: .*'),
    ('super_glue_wic_v102', 'validation', r'wic sentence1: .* sentence2: .* word: .*'),
    ('super_glue_wsc_v102', 'validation', r'wsc text: .*'),
    ('super_glue_multirc_v102', 'validation', r'multirc question: .* answer: .* paragraph: .*'),
    ('imdb_reviews', 'test', r'.*'),
]


@pytest.mark.parametrize('name,split,pattern', CASES, ids=[c[0] for c in CASES])
def test_classification_task_from_tfds(name, split, pattern):
  examples = take(name, split)
  assert len(examples) == 2
  for ex in examples:
    assert re.fullmatch(pattern, ex['inputs_pretokenized'], flags=re.DOTALL)
    assert ex['targets_pretokenized'] in tasks.label_words(name)
    assert ex['inputs'][-1] == 1 and ex['targets'][-1] == 1  # EOS


def test_record_from_tfds():
  examples = take('super_glue_record_v102', 'validation')
  for ex in examples:
    assert ex['inputs_pretokenized'].startswith('record query: ')
    assert ' entities: ' in ex['inputs_pretokenized']
    # One example per gold answer: the target is one of the answers.
    assert ex['targets_pretokenized'].encode() in list(ex['answers'])


def test_switching_to_local_files_after_import(tmp_path):
  """The same registered task reads TFDS, then the local directory once it is set."""
  assert take('glue_sst2_v2', 'validation')
  tasks.set_data_source(local_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'sst2' / 'dev.tsv'))):
    take('glue_sst2_v2', 'validation')
