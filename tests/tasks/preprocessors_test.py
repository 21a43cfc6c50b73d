"""Formatting corner cases the real files here do not contain, on in-memory examples."""
import tensorflow as tf

from tasks import preprocessors


def run(preprocessor, example):
  ds = preprocessor(tf.data.Dataset.from_tensors(example))
  return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()}
          for ex in ds.as_numpy_iterator()]


def test_multirc_removes_the_paragraph_html():
  [ex] = run(preprocessors.multirc, {
      'paragraph': '<b>Sent 1: </b>It rained.<br><b>Sent 2: </b>We stayed in.<br>',
      'question': 'Why?', 'answer': 'Rain', 'label': tf.constant(1, tf.int64),
      'idx': {'paragraph': 4, 'question': 9, 'answer': 30}})
  assert ex['inputs'] == ('multirc question: Why? answer: Rain paragraph: Sent 1: It rained. '
                          'Sent 2: We stayed in. ')
  assert (ex['targets'], ex['idx/paragraph'], ex['idx/question'], ex['idx/answer']) == (
      'True', 4, 9, 30)


def test_wsc_pronoun_before_the_noun_phrase():
  [ex] = run(preprocessors.wsc, {
      'text': 'When he arrived , the old man sat down .', 'span1_index': 4,
      'span1_text': 'the old man', 'span2_index': 1, 'span2_text': 'he',
      'label': tf.constant(1, tf.int64), 'idx': 0})
  assert ex['inputs'] == 'wsc text: When # he # arrived , * the old man * sat down .'
  assert ex['targets'] == 'True'


def test_record_query_without_answers_gives_one_unknown_target():
  [ex] = run(preprocessors.record, {
      'passage': 'Rain in Oslo.\n@highlight\nOslo wet', 'query': '@placeholder is wet',
      'entities': ['Oslo'], 'answers': tf.constant([], tf.string),
      'idx': {'passage': 1, 'query': 2}})
  assert ex['inputs'] == ('record query: @placeholder is wet entities: Oslo '
                          'passage: Rain in Oslo. Oslo wet')
  assert ex['targets'] == '<unk>'
  assert list(ex['answers']) == []


def test_lama_inserts_the_subject_verbatim():
  example = {'sub_label': r'AC\1DC \\ $0', 'obj_label': 'Sydney', 'predicate_id': 'P740',
             'template': '[X] was founded in [Y] .'}
  [ex] = run(lambda ds: preprocessors.lama(ds, soft=False), example)
  assert ex['inputs'] == r'AC\1DC \\ $0 was founded in <extra_id_0> .'
  [ex] = run(lambda ds: preprocessors.lama(ds, soft=True), example)
  assert (ex['inputs'], ex['targets']) == (r'AC\1DC \\ $0', 'Sydney')


def test_dpr_marks_the_first_pronoun_and_targets_the_right_candidate():
  # T5's `definite_pronoun_resolution_simple` docstring example.
  [ex] = run(preprocessors.dpr_simple, {
      'sentence': 'Bob asked Tom if he can lend some money.', 'pronoun': 'he',
      'candidates': ['Bob', 'Tom'], 'label': tf.constant(1, tf.int64)})
  assert ex['inputs'] == 'wsc: Bob asked Tom if *he* can lend some money.'
  assert ex['targets'] == 'Tom'


def test_wsc_simple_splits_punctuation_off_the_pronoun_and_keeps_right_referents():
  examples = [
      {'text': 'John laughed . "Good for him," he said.', 'span1_index': 0, 'span1_text': 'John',
       'span2_index': 5, 'span2_text': 'him', 'label': tf.constant(1, tf.int64), 'idx': 0},
      {'text': 'Some day they might want to use it , but', 'span1_index': 0,
       'span1_text': 'Some day', 'span2_index': 6, 'span2_text': 'it',
       'label': tf.constant(0, tf.int64), 'idx': 1},
  ]
  ds = tf.data.Dataset.from_tensor_slices({k: [e[k] for e in examples] for k in examples[0]})
  out = [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in e.items()}
         for e in preprocessors.wsc_simple(ds).as_numpy_iterator()]
  # T5 special-cases both: 'Good for X ,"' and the index one word before 'it'.
  assert out[0]['inputs'] == 'wsc: John laughed . "Good for *him* ," he said.'
  assert out[1]['inputs'] == 'wsc: Some day they might want to use *it* , but'
  assert [e['targets'] for e in out] == ['John', 'Some day']
  kept = list(preprocessors.wsc_simple(ds, correct_referent_only=True).as_numpy_iterator())
  assert [e['idx'] for e in kept] == [0]


def test_stsb_rounds_to_a_fifth():
  [ex] = run(preprocessors.stsb, {'sentence1': 'A man.', 'sentence2': 'A dog.',
                                  'label': tf.constant(3.47, tf.float32), 'idx': 2})
  assert ex['inputs'] == 'stsb sentence1: A man. sentence2: A dog.'
  assert ex['targets'] == '3.4'


def test_taskless_removes_only_the_task_name():
  [ex] = run(preprocessors.remove_first_text_token,
             {'inputs': 'rte hypothesis: a b premise: c', 'targets': 'entailment'})
  assert ex == {'inputs': 'hypothesis: a b premise: c', 'targets': 'entailment'}
