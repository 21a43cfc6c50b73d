"""Task names, label words, lookups and the two settings."""
import pytest

from conftest import shared_path
import tasks
from tasks import settings

SUPER_GLUE = ['super_glue_boolq_v102', 'super_glue_cb_v102', 'super_glue_copa_v102',
              'super_glue_multirc_v102', 'super_glue_record_v102', 'super_glue_rte_v102',
              'super_glue_wic_v102', 'super_glue_wsc_v102']


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch):
  monkeypatch.delenv(settings.VOCAB_ENV, raising=False)
  monkeypatch.delenv(settings.DATA_DIR_ENV, raising=False)
  tasks.reset_data_source()
  tasks.set_vocabulary(None)
  yield
  tasks.reset_data_source()
  tasks.set_vocabulary(None)


GLUE = ['glue_ax_v2', 'glue_cola_v2', 'glue_mnli_matched_v2', 'glue_mnli_mismatched_v2',
        'glue_mnli_v2', 'glue_mrpc_v2', 'glue_qnli_v2', 'glue_qqp_v2', 'glue_rte_v2',
        'glue_sst2_v2', 'glue_stsb_v2', 'glue_wnli_v2']
OTHERS = ['super_glue_axb_v102', 'super_glue_axg_v102', 'super_glue_wsc_v102_simple_train',
          'super_glue_wsc_v102_simple_eval', 'dpr_v001_simple', 'imdb_reviews']
VERBALIZERS = ['glue_qqp_v2_taskless_0_1', 'glue_qqp_v2_taskless_unique_duplicate',
               'glue_qqp_v2_taskless_not_spc_duplicate_duplicate', 'imdb_reviews_taskless_0_1']


def test_registered_names():
  names = tasks.names()
  base = SUPER_GLUE + GLUE + OTHERS
  expected = base + [tasks.variants.taskless_name(n) for n in base] + VERBALIZERS
  assert set(expected + ['super_glue_v102_proportional', 'lama_trex', 'lama_trex_soft']) <= set(names)
  assert len([n for n in names if n.startswith('lama_trex_P')]) == 41
  assert len([n for n in names if n.startswith('lama_trex_soft_P')]) == 41
  assert len(names) == len(expected) + 1 + 2 * 41 + 2


def test_super_glue_mixture_is_t5s():
  # t5/data/glue_utils.py: SUPER_GLUE_WEIGHT_MAPPING.
  rates = {t.name: tasks.get_task('super_glue_v102_proportional').get_rate(t)
           for t in tasks.get_task('super_glue_v102_proportional').tasks}
  assert rates == {
      'dpr_v001_simple': 1_322., 'super_glue_wsc_v102_simple_train': 259.,
      'super_glue_wsc_v102_simple_eval': 0., 'super_glue_boolq_v102': 9_427.,
      'super_glue_cb_v102': 250., 'super_glue_copa_v102': 400.,
      'super_glue_multirc_v102': 27_243., 'super_glue_record_v102': 138_854.,
      'super_glue_rte_v102': 2_490., 'super_glue_wic_v102': 5_428.,
      'super_glue_axb_v102': 0., 'super_glue_axg_v102': 0.}


@pytest.mark.parametrize('name,splits', [
    ('glue_sst2_v2_taskless', {'train': 'train[:-1000]', 'validation': 'train[-1000:]',
                               'test': 'validation'}),
    ('glue_qqp_v2_taskless', {'train': 'train[:-10000]', 'validation': 'train[-10000:]',
                              'test': 'validation'}),
    ('super_glue_record_v102_taskless', {'train': 'train[:-10000]',
                                         'validation': 'train[-10000:]', 'test': 'validation'}),
    ('super_glue_cb_v102_taskless', {'train': 'train', 'validation': 'validation',
                                     'test': 'validation'}),  # 250 examples: nothing to hold out.
    ('imdb_reviews', {'train': 'train[:-1000]', 'validation': 'train[-1000:]', 'test': 'test'}),
])
def test_held_out_splits_are_the_recycling_codes(name, splits, monkeypatch):
  read = []

  class FakeTfds:

    def get_dataset(self, split, shuffle, seed):
      del shuffle, seed
      read.append(split)

  monkeypatch.setattr(tasks.sources, '_tfds_source', lambda *args: FakeTfds())
  source = tasks.get_task(name).source
  for split in splits:
    source.get_dataset(split=split, shuffle=False)
  assert dict(zip(splits, read)) == splits
  assert len(tasks.get_task('lama_trex').tasks) == 41


def test_lama_relations_are_those_of_the_release():
  relations = sorted(p.name for p in shared_path('lama', 'trex_original').iterdir() if p.is_dir())
  assert sorted(tasks.lama.RELATIONS) == relations


@pytest.mark.parametrize('name,words', [
    ('glue_sst2_v2', ['negative', 'positive']),
    ('imdb_reviews', ['negative', 'positive']),
    ('glue_qqp_v2', ['not_duplicate', 'duplicate']),
    ('super_glue_rte_v102', ['entailment', 'not_entailment']),
    ('super_glue_cb_v102', ['entailment', 'contradiction', 'neutral']),
    ('super_glue_copa_v102', ['choice1', 'choice2']),
    ('super_glue_boolq_v102', ['False', 'True']),
    ('super_glue_multirc_v102', ['False', 'True']),
    ('super_glue_wic_v102', ['False', 'True']),
    ('super_glue_wsc_v102', ['False', 'True']),
    ('super_glue_record_v102', None),
    ('super_glue_v102_proportional', None),
    ('glue_mrpc_v2', ['not_equivalent', 'equivalent']),
    ('glue_rte_v2_taskless', ['entailment', 'not_entailment']),
    ('glue_wnli_v2', ['not_entailment', 'entailment']),
    ('glue_mnli_v2', ['entailment', 'neutral', 'contradiction']),
    ('super_glue_axb_v102', ['entailment', 'not_entailment']),
    ('glue_qqp_v2_taskless_not_spc_duplicate_duplicate', ['not duplicate', 'duplicate']),
    ('imdb_reviews_taskless_0_1', ['0', '1']),
])
def test_label_words(name, words):
  assert tasks.label_words(name) == words
  assert tasks.verbalizers(name) == words


def test_label_words_are_a_copy():
  tasks.label_words('glue_sst2_v2').append('neutral')
  assert tasks.label_words('glue_sst2_v2') == ['negative', 'positive']


def test_unknown_task_lists_close_matches():
  with pytest.raises(ValueError, match=r"Unknown task or mixture 'super_glue_rte_v2'\. "
                                       r'Did you mean: super_glue_rte_v102'):
    tasks.get_task('super_glue_rte_v2')
  with pytest.raises(ValueError, match="Unknown task or mixture 'glue_sst2'.*glue_sst2_v2"):
    tasks.label_words('glue_sst2')
  with pytest.raises(ValueError, match='python -m tasks.show_tasks'):
    tasks.get_task('no_such_thing_at_all')


def test_vocabulary_must_be_configured(tmp_path):
  with pytest.raises(ValueError, match='tasks.set_vocabulary.*PROMPT_RECYCLING_VOCAB'):
    tasks.VOCABULARY.encode('positive')
  tasks.set_vocabulary(str(tmp_path / 'nope.model'))
  with pytest.raises(FileNotFoundError, match='nope.model'):
    tasks.VOCABULARY.encode('positive')


def test_vocabulary_from_the_environment(monkeypatch, sentencepiece_model):
  monkeypatch.setenv(settings.VOCAB_ENV, str(sentencepiece_model))
  assert tasks.VOCABULARY.encode('positive') == [1465]
  assert tasks.VOCABULARY.vocab_size == 32100  # 32,000 pieces + 100 sentinels.
  assert tasks.VOCABULARY.sentencepiece_model_file == str(sentencepiece_model)
  # An explicit setting wins over the environment.
  tasks.set_vocabulary('/nonexistent/sp.model')
  with pytest.raises(FileNotFoundError, match='set by tasks.set_vocabulary'):
    tasks.VOCABULARY.encode('positive')


def test_data_source_precedence(monkeypatch, tmp_path):
  assert not tasks.data_source().is_local  # TFDS by default.
  monkeypatch.setenv(settings.DATA_DIR_ENV, str(tmp_path))
  assert tasks.data_source().local_dir == str(tmp_path)
  tasks.set_data_source(None)  # An explicit call wins: TFDS.
  assert not tasks.data_source().is_local
  tasks.set_data_source(local_dir='/elsewhere', tfds_data_dir=None)
  assert tasks.data_source().local_dir == '/elsewhere'
  tasks.reset_data_source()
  assert tasks.data_source().local_dir == str(tmp_path)


def test_missing_data_directory_names_the_expected_files(tmp_path, sentencepiece_model):
  tasks.set_vocabulary(str(sentencepiece_model))
  tasks.set_data_source(local_dir=str(tmp_path))
  task = tasks.get_task('super_glue_rte_v102')
  with pytest.raises(FileNotFoundError) as e:
    task.get_dataset({'inputs': 8, 'targets': 4}, split='validation', shuffle=False)
  message = str(e.value)
  assert f'{tmp_path}/superglue/RTE/val.jsonl' in message
  assert f'{tmp_path}/RTE/val.jsonl' in message
  assert 'https://super.gluebenchmark.com/tasks' in message
  task = tasks.get_task('imdb_reviews')
  expected = r'imdb/train\.jsonl\.gz[\s\S]*aclImdb/train[\s\S]*aclImdb_v1'
  with pytest.raises(FileNotFoundError, match=expected):
    task.get_dataset({'inputs': 8, 'targets': 4}, split='train', shuffle=False)


def test_vocabulary_survives_copies(sentencepiece_model):
  """Gin deep-copies configurable arguments; a copy follows the setting as the original does."""
  import copy  # pylint: disable=g-import-not-at-top
  import pickle  # pylint: disable=g-import-not-at-top
  tasks.set_vocabulary(str(sentencepiece_model))
  for clone in (copy.deepcopy(tasks.VOCABULARY), pickle.loads(pickle.dumps(tasks.VOCABULARY))):
    assert clone == tasks.VOCABULARY
    assert clone.encode('negative') == tasks.VOCABULARY.encode('negative') == [2841]
