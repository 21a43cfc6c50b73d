"""Every task built from the real release files in ../shared/data (`set_data_source(local_dir)`).

Skipped, with the reason, in a checkout without ../shared/data.
"""
import gzip
import json
import shutil

import numpy as np
import pytest

from conftest import shared_path
import tasks

LENGTHS = {'inputs': 64, 'targets': 8}


@pytest.fixture(autouse=True)
def local_data(sentencepiece_model):
  tasks.set_vocabulary(str(sentencepiece_model))
  tasks.set_data_source(local_dir=str(shared_path()))
  yield shared_path()
  tasks.reset_data_source()
  tasks.set_vocabulary(None)


def take(name, split, n=2):
  ds = tasks.get_task(name).get_dataset(LENGTHS, split=split, shuffle=False)
  return [{k: (v.decode('utf-8') if isinstance(v, bytes) else v) for k, v in ex.items()}
          for ex in ds.take(n).as_numpy_iterator()]


def check_tokens(ex):
  """Token ids are the vocabulary's encoding of the texts, trimmed, then EOS (1)."""
  for key, length in LENGTHS.items():
    ids = ex[key].tolist()
    expected = tasks.VOCABULARY.encode(ex[f'{key}_pretokenized'])[:length - 1] + [1]
    assert ids == expected, key


# (task, split, first two examples' (inputs prefix, target)) from the real files.
CLASSIFICATION = [
    ('glue_sst2_v2', 'validation',
     [("sst2 sentence: it 's a charming and often affecting journey . ", 'positive'),
      ('sst2 sentence: unflinchingly bleak and desperate ', 'negative')]),
    ('super_glue_rte_v102', 'validation',
     [('rte hypothesis: Christopher Reeve had an accident. premise: Dana Reeve, the widow',
       'not_entailment'),
      ('rte hypothesis: Bacteria is winning the war against antibiotics. premise: Yet,',
       'entailment')]),
    ('super_glue_cb_v102', 'validation',
     [('cb hypothesis: Valence was helping premise: Valence the void-brain,', 'contradiction'),
      ('cb hypothesis: there is a shipment premise: ``Who knows?', 'neutral')]),
    ('super_glue_copa_v102', 'validation',
     [('copa choice1: The toilet filled with water. choice2: Water flowed from the spout. '
       'premise: The man turned on the faucet. question: effect', 'choice2'),
      ('copa choice1: She poured milk in the bowl. choice2: She lost her appetite. '
       'premise: The girl found a bug in her cereal. question: effect', 'choice2')]),
    ('super_glue_wic_v102', 'validation',
     [('wic sentence1: An emerging professional class. sentence2: Apologizing for losing your '
       'temper, even though you were badly provoked, showed real class. word: class', 'False'),
      ('wic sentence1: Businessmen of every stripe joined in opposition to the proposal. '
       'sentence2: They earned their stripes in Kuwait. word: stripe', 'False')]),
    ('super_glue_boolq_v102', 'validation',
     [('boolq passage: Ethanol fuel -- All biomass goes through', 'False'),
      ("boolq passage: Property tax -- Property tax or 'house tax' is", 'True')]),
    ('super_glue_wsc_v102', 'validation',
     [('wsc text: Bernard , who had not told the government official', 'False'),
      ("wsc text: * Mr. Moncrieff * visited Chester 's luxurious New York apartment", 'True')]),
    ('imdb_reviews', 'test',
     [('Once again Mr. Costner has dragged out a movie for far longer than necessary.',
       'negative'),
      ("This is a pale imitation of 'Officer and a Gentleman.'", 'negative')]),
]


@pytest.mark.parametrize('name,split,expected', CLASSIFICATION, ids=[c[0] for c in CLASSIFICATION])
def test_classification_task_formats_real_examples(name, split, expected):
  examples = take(name, split)
  assert [(ex['inputs_pretokenized'][:len(p)], ex['targets_pretokenized'])
          for ex, (p, _) in zip(examples, expected)] == expected
  labels = tasks.label_words(name)
  for ex in examples:
    assert ex['targets_pretokenized'] in labels
    check_tokens(ex)


def test_wsc_marks_the_noun_phrase_and_the_pronoun():
  ex = take('super_glue_wsc_v102', 'validation', 1)[0]
  assert ex['inputs_pretokenized'].endswith(
      'Still, * anyone * who knew that he was 19 years old could take his claim away from '
      '# him # .')


def test_test_split_targets_are_unknown():
  ex = take('super_glue_rte_v102', 'test', 1)[0]
  assert ex['targets_pretokenized'] == '<unk>'
  assert ex['inputs_pretokenized'].startswith('rte hypothesis: Shukla is related to Mangla.')


def test_multirc_one_example_per_answer_with_question_ids():
  examples = take('super_glue_multirc_v102', 'validation', 5)
  assert [ex['targets_pretokenized'] for ex in examples[:4]] == ['False', 'True', 'True', 'False']
  assert examples[0]['inputs_pretokenized'].startswith(
      'multirc question: Would the mass of a baseball affect how much force you have to use to '
      'pick it up? answer: No paragraph: What causes a change in motion?')
  assert [(int(ex['idx/paragraph']), int(ex['idx/question']), int(ex['idx/answer']))
          for ex in examples] == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 1, 4)]


def test_multirc_metric_on_the_whole_validation_split():
  """Perfect predictions score 100; one wrong option costs exactly one of the 953 questions."""
  task = tasks.get_task('super_glue_multirc_v102')
  ds = task.get_dataset(LENGTHS, split='validation', shuffle=False)
  examples = [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()}
              for ex in ds.as_numpy_iterator()]
  assert len(examples) == 4848
  texts = [ex['targets_pretokenized'] for ex in examples]
  targets = [task.postprocess_fn(t, example=ex, is_target=True) for t, ex in zip(texts, examples)]
  perfect = [task.postprocess_fn(t, example=ex, is_target=False) for t, ex in zip(texts, examples)]
  [metric_fn] = task.metric_fns
  assert metric_fn(targets, perfect) == {'f1': 100.0, 'exact_match': 100.0}
  one_wrong = list(perfect)
  one_wrong[0] = {'value': 1 - perfect[0]['value']}
  assert metric_fn(targets, one_wrong)['exact_match'] == pytest.approx(100 * 952 / 953)


def test_boolq_train_is_missing_and_the_error_says_where_it_belongs(local_data):
  with pytest.raises(FileNotFoundError) as e:
    take('super_glue_boolq_v102', 'train')
  message = str(e.value)
  assert str(local_data / 'superglue' / 'BoolQ' / 'train.jsonl') in message
  assert 'https://super.gluebenchmark.com/tasks' in message


@pytest.fixture
def record_dir(tmp_path):
  """The FewGLUE ReCoRD subsets (official format) laid out as the official release."""
  partial = shared_path('superglue_fewshot_partial', 'ReCoRD')
  (tmp_path / 'superglue' / 'ReCoRD').mkdir(parents=True)
  (tmp_path / 'superglue' / 'ReCoRD' / 'val.jsonl').symlink_to(partial / 'dev32.jsonl')
  (tmp_path / 'superglue' / 'ReCoRD' / 'train.jsonl').symlink_to(partial / 'train.jsonl')
  return tmp_path


def test_record_one_example_per_answer(record_dir):
  tasks.set_data_source(local_dir=str(record_dir))
  examples = take('super_glue_record_v102', 'validation', 3)
  # The first query has the answers {'Benazir Bhutto', 'Bhutto'}: two examples.
  assert [ex['targets_pretokenized'] for ex in examples[:2]] == ['Benazir Bhutto', 'Bhutto']
  assert [(int(ex['idx/passage']), int(ex['idx/query']))
          for ex in examples[:2]] == [(12705, 19617)] * 2
  assert [a.decode() for a in examples[0]['answers']] == ['Benazir Bhutto', 'Bhutto']
  inputs = examples[0]['inputs_pretokenized']
  assert inputs.startswith("record query: They will sew our lips, but we will chant, 'Long live "
                           "@placeholder.' entities: ")
  assert 'Benazir Bhutto, ' in inputs and 'passage: Islamabad, Pakistan (CNN)' in inputs
  # '@highlight' separators become sentence breaks.
  assert '@highlight' not in inputs
  assert ("mother's killing and asked why there have been no convictions for the crime. "
          'NEW: Kill') in inputs
  assert tasks.label_words('super_glue_record_v102') is None
  task = tasks.get_task('super_glue_record_v102')
  targets = [task.postprocess_fn(ex['targets_pretokenized'], example=ex, is_target=True)
             for ex in examples]
  assert task.metric_fns[0](targets, ['Bhutto', 'nonsense', 'nonsense'])['em'] == 50.0


def test_qqp_from_a_glue_tsv(tmp_path):
  """No QQP release here: a GLUE-format QQP dir, including a malformed row, as written by GLUE."""
  (tmp_path / 'QQP').mkdir()
  (tmp_path / 'QQP' / 'dev.tsv').write_text(
      'id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n'
      '201359\t303345\t303346\tWhy are African-Americans so beautiful?\t'
      'Why are hispanics so beautiful?\t0\n'
      '9\t19\t20\tIs "x" a word?\n'  # Malformed: skipped.
      '263843\t69383\t380476\tI want to pursue PhD in Computer Science about social network, '
      'what is the open problem in social networks?\tI handle social media for a non-profit. '
      'Should I start going to social media networking events? Are there any good ones in the '
      'bay area?\t1\n')
  tasks.set_data_source(local_dir=str(tmp_path))
  examples = take('glue_qqp_v2', 'validation', 5)
  assert [ex['targets_pretokenized'] for ex in examples] == ['not_duplicate', 'duplicate']
  assert examples[0]['inputs_pretokenized'] == (
      'qqp question1: Why are African-Americans so beautiful? question2: Why are hispanics so '
      'beautiful?')
  assert tasks.label_words('glue_qqp_v2') == ['not_duplicate', 'duplicate']


def test_imdb_from_the_aclimdb_tree(tmp_path, local_data):
  """The aclImdb release layout gives the same examples as its jsonl re-packaging."""
  with gzip.open(local_data / 'imdb' / 'test.jsonl.gz', 'rt', encoding='utf-8') as f:
    rows = [json.loads(next(f)) for _ in range(2)]
  for row in rows:
    folder = tmp_path / 'aclImdb' / 'test' / ('pos' if row['label'] else 'neg')
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f'{row["id"]}.txt').write_text(row['text'], encoding='utf-8')
  tasks.set_data_source(local_dir=str(tmp_path))
  examples = take('imdb_reviews', 'test')
  # Both orders are negatives first, each by review id.
  assert [ex['inputs_pretokenized'] for ex in examples] == [r['text'] for r in rows]
  assert [ex['targets_pretokenized'] for ex in examples] == [
      'positive' if r['label'] else 'negative' for r in rows]


def read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def test_every_lama_relation_builds_with_its_template(local_data):
  relations = read_jsonl(local_data / 'lama' / 'relations.jsonl')
  templates = {r['relation']: r['template'] for r in relations}
  for relation in tasks.lama.RELATIONS:
    [fact] = read_jsonl(local_data / 'lama' / 'trex_original' / relation / 'test.jsonl')[:1]
    [ex] = take(f'lama_trex_{relation}', 'test', 1)
    expected = templates[relation].replace('[X]', fact['sub']).replace('[Y]', '<extra_id_0>')
    assert ex['inputs_pretokenized'] == expected, relation
    assert ex['targets_pretokenized'] == fact['obj'], relation
    assert ex['predicate_id'] == relation
    assert 32099 in ex['inputs'].tolist()  # <extra_id_0>, T5's first sentinel.
    check_tokens(ex)


def test_every_soft_lama_relation_builds_with_the_subject_alone(local_data):
  for relation in tasks.lama.RELATIONS:
    [fact] = read_jsonl(local_data / 'lama' / 'trex_original' / relation / 'train.jsonl')[:1]
    [ex] = take(f'lama_trex_soft_{relation}', 'train', 1)
    assert (ex['inputs_pretokenized'], ex['targets_pretokenized']) == (fact['sub'], fact['obj'])


def test_lama_candidates_are_the_relations_objects(local_data):
  objects = set()
  for split in ('train', 'dev', 'test'):
    path = local_data / 'lama' / 'trex_original' / 'P19' / f'{split}.jsonl'
    objects |= {r['obj'] for r in read_jsonl(path)}
  words = tasks.label_words('lama_trex_P19')
  assert words == sorted(objects)
  # Rank classification over the candidates, then the task's own metric: P@1.
  examples = take('lama_trex_P19', 'test', 4)
  task = tasks.get_task('lama_trex_P19')
  gold = [words.index(ex['targets_pretokenized']) for ex in examples]
  scores = np.full((4, len(words)), -10.0)
  scores[np.arange(4), gold] = -1.0
  scores[3, 0] = 0.0  # The 4th example's best candidate is wrong.
  predictions = tasks.metrics.rank_classification(scores, words)
  targets = [task.postprocess_fn(ex['targets_pretokenized'], example=ex, is_target=True)
             for ex in examples]
  assert task.metric_fns[0](targets, predictions)['p@1'] == 75.0


def test_lama_candidate_vocabulary(tmp_path):
  (tmp_path / 'vocab.txt').write_text('Paris\nRome\n\n')
  tasks.set_lama_candidates(tmp_path / 'vocab.txt')
  try:
    assert tasks.label_words('lama_trex_P19') == ['Paris', 'Rome']
  finally:
    tasks.set_lama_candidates(None)
  with pytest.raises(FileNotFoundError, match='one candidate per line'):
    tasks.set_lama_candidates(tmp_path / 'missing.txt')


def test_lama_in_its_original_release_format(tmp_path, local_data):
  """LAMA's own TREx/<P>.jsonl ({"sub_label", "obj_label", "uuid"}; test only)."""
  (tmp_path / 'lama' / 'TREx').mkdir(parents=True)
  shutil.copy(local_data / 'lama' / 'relations.jsonl', tmp_path / 'lama')
  shutil.copy(local_data / 'lama' / 'trex_lms_vocab_pararel' / 'P20.jsonl',
              tmp_path / 'lama' / 'TREx')
  [fact] = read_jsonl(tmp_path / 'lama' / 'TREx' / 'P20.jsonl')[:1]
  tasks.set_data_source(local_dir=str(tmp_path))
  [ex] = take('lama_trex_P20', 'test', 1)
  assert ex['inputs_pretokenized'] == f'{fact["sub_label"]} died in <extra_id_0> .'
  assert ex['targets_pretokenized'] == fact['obj_label']
  with pytest.raises(FileNotFoundError, match='trex_original/P20/train.jsonl'):
    take('lama_trex_P20', 'train', 1)


def test_lama_needs_local_files():
  tasks.set_data_source(None)
  with pytest.raises(ValueError, match='has no TFDS builder'):
    take('lama_trex_P19', 'test', 1)


def test_shuffled_reads_shuffle_the_whole_split():
  """IMDB's release is sorted (12,500 negatives first): shuffled reads mix labels, per seed."""
  task = tasks.get_task('imdb_reviews')

  def first_labels(seed):
    ds = task.get_dataset(LENGTHS, split='train', shuffle=True, seed=seed)
    return [ex['targets_pretokenized'].decode() for ex in ds.take(20).as_numpy_iterator()]

  labels = first_labels(seed=3)
  assert {'negative', 'positive'} <= set(labels)
  assert first_labels(seed=3) == labels
