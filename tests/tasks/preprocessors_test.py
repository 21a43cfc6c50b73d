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
