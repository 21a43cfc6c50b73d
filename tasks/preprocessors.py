"""Text-to-text formats: raw examples (TFDS schema) -> {'inputs', 'targets', ...}.

The formats are T5's (Raffel et al. 2020, App. D), which the prompt-tuning
paper trained on: the task name, then each field as `name: text`, and the
class's name as the target, e.g.

  sst2 sentence: it 's a charming journey .                     -> positive
  rte hypothesis: Bacteria is winning ... premise: Yet, we now ... -> entailment
  wsc text: ... * the lemon trees * , but # they # came out ...   -> False
  record query: ... @placeholder ... entities: A, B passage: ...   -> B

Fields are ordered by name unless a task fixes an order (MultiRC, WiC), as T5
did. Test examples without labels get the target '<unk>'. Each function is a
SeqIO preprocessor over a `tf.data.Dataset` of TFDS-schema examples; the keys
that postprocessors need for grouping (`idx/...`, `answers`, `predicate_id`)
are kept beside `inputs` and `targets`.
"""
from typing import Optional, Sequence

import seqio
import tensorflow as tf

UNKNOWN_TARGET = '<unk>'
LAMA_SENTINEL = '<extra_id_0>'


def _label_text(label: tf.Tensor, label_names: Sequence[str]) -> tf.Tensor:
  """Class id -> its name; -1 (no label, test splits) -> '<unk>'."""
  label = tf.cast(label, tf.int32)
  name = tf.gather(tf.constant(list(label_names)), tf.maximum(label, 0))
  return tf.where(label < 0, tf.constant(UNKNOWN_TARGET), name)


def _fields(x, prefix: str, feature_names: Sequence[str]) -> tf.Tensor:
  """'prefix name1: text1 name2: text2 ...'."""
  parts = [prefix] if prefix else []
  for name in feature_names:
    parts += [f'{name}:', x[name]]
  return tf.strings.join(parts, separator=' ')


@seqio.map_over_dataset
def text_to_text(x, *, prefix: str, feature_names: Sequence[str], label_names: Sequence[str]):
  """Classification example -> T5's 'prefix f1: ... f2: ...' -> label name.

  Args:
    x: an example with the `feature_names` string fields, `label` and `idx`.
    prefix: the task name T5 puts first ('rte', 'sst2', ...).
    feature_names: the fields, in order.
    label_names: class names by class id.

  Returns:
    {'inputs', 'targets', 'idx'} strings (and the integer idx).
  """
  return {'inputs': _fields(x, prefix, feature_names),
          'targets': _label_text(x['label'], label_names),
          'idx': x['idx']}


@seqio.map_over_dataset
def multirc(x):
  """MultiRC answer option -> 'multirc question: ... answer: ... paragraph: ...' -> False/True.

  The paragraphs' HTML (`<br>`, `<b>Sent 1: </b>`) is removed; the paragraph,
  question and answer ids are kept as `idx/paragraph`, `idx/question`,
  `idx/answer`, by which the metrics group answers into questions.
  """
  inputs = _fields(x, 'multirc', ('question', 'answer', 'paragraph'))
  inputs = tf.strings.regex_replace(inputs, '<br>', ' ')
  inputs = tf.strings.regex_replace(inputs, '</?b>', '')
  return {'inputs': inputs, 'targets': _label_text(x['label'], ('False', 'True')),
          'idx/paragraph': x['idx']['paragraph'], 'idx/question': x['idx']['question'],
          'idx/answer': x['idx']['answer']}


def _mark_words(words: tf.Tensor, start: tf.Tensor, num_words: tf.Tensor, mark: str) -> tf.Tensor:
  """Surrounds words[start:start + num_words] with `mark `...` mark`."""
  position = tf.range(tf.size(words))
  words = tf.where(position == start, tf.strings.join([mark, words], separator=' '), words)
  return tf.where(position == start + num_words - 1,
                  tf.strings.join([words, mark], separator=' '), words)


@seqio.map_over_dataset
def wsc(x):
  """WSC -> 'wsc text: ... * noun phrase * ... # pronoun # ...' -> False/True.

  The spans are located by their word index in the space-separated text (the
  release's convention), the noun phrase marked with '*' and the pronoun with
  '#', as T5's `wsc` format. A span whose index is out of range stays unmarked.
  """
  words = tf.strings.split(x['text'], sep=' ')
  span1_words = tf.size(tf.strings.split(x['span1_text'], sep=' '))
  span2_words = tf.size(tf.strings.split(x['span2_text'], sep=' '))
  words = _mark_words(words, x['span1_index'], span1_words, '*')
  words = _mark_words(words, x['span2_index'], span2_words, '#')
  text = tf.strings.reduce_join(words, separator=' ')
  return {'inputs': tf.strings.join(['wsc text:', text], separator=' '),
          'targets': _label_text(x['label'], ('False', 'True')),
          'idx': x['idx']}


def record(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD query -> 'record query: ... entities: e1, e2 passage: ...' -> an answer.

  One example per gold answer (one with target '<unk>' when there is none, as
  on the test split), all carrying the full `answers` list, the query's
  `entities` (the candidates of rank classification, as the recycling code's
  ReCoRD fork keeps them) and the `idx/passage`, `idx/query` ids by which the
  metric counts each query once.
  The passage's '@highlight' separators become sentence breaks.
  """

  def one_per_answer(x):
    passage = tf.strings.regex_replace(x['passage'], r'([.?!"\'])\n@highlight\n', r'\1 ')
    passage = tf.strings.regex_replace(passage, r'\n@highlight\n', '. ')
    inputs = tf.strings.join(
        ['record query:', x['query'], 'entities:',
         tf.strings.reduce_join(x['entities'], separator=', '), 'passage:', passage],
        separator=' ')
    answers = x['answers']
    targets = tf.cond(tf.size(answers) > 0, lambda: answers,
                      lambda: tf.constant([UNKNOWN_TARGET]))
    copies = tf.size(targets)
    return tf.data.Dataset.from_tensor_slices({
        'inputs': tf.fill([copies], inputs),
        'targets': targets,
        'answers': tf.tile(answers[tf.newaxis], [copies, 1]),
        'entities': tf.tile(x['entities'][tf.newaxis], [copies, 1]),
        'idx/passage': tf.fill([copies], x['idx']['passage']),
        'idx/query': tf.fill([copies], x['idx']['query']),
    })

  return dataset.flat_map(one_per_answer)


@seqio.map_over_dataset
def sentiment(x, *, text_key: str = 'text', prefix: Optional[str] = None,
              label_names: Sequence[str] = ('negative', 'positive')):
  """Review -> its text (optionally after `prefix`) -> 'negative'/'positive'.

  IMDB is not one of T5's tasks; as in the prompt-recycling experiments the
  input is the review itself and the labels are SST-2's words, so a prompt
  trained on one can be evaluated on the other.
  """
  inputs = x[text_key] if not prefix else tf.strings.join([prefix, x[text_key]], separator=' ')
  return {'inputs': inputs, 'targets': _label_text(x['label'], label_names)}


def _literal_rewrite(text: tf.Tensor) -> tf.Tensor:
  """Escapes RE2 rewrite syntax (backslashes) so `text` is inserted verbatim."""
  return tf.strings.regex_replace(text, r'\\', r'\\\\')


@seqio.map_over_dataset
def lama(x, *, soft: bool = False):
  """LAMA fact -> cloze for an encoder-decoder -> the object.

  With the manual template: '[X] was born in [Y] .' -> 'Dante was born in
  <extra_id_0> .', the blank being T5's first sentinel as in span corruption.
  With `soft`, the input is the subject alone: a soft prompt replaces the
  template.

  Args:
    x: {'sub_label', 'obj_label', 'predicate_id', 'template'} strings.
    soft: input just the subject.

  Returns:
    {'inputs', 'targets', 'predicate_id', 'sub_label'}.
  """
  if soft:
    inputs = x['sub_label']
  else:
    inputs = tf.strings.regex_replace(x['template'], r'\[X\]', _literal_rewrite(x['sub_label']))
    inputs = tf.strings.regex_replace(inputs, r'\[Y\]', LAMA_SENTINEL)
  return {'inputs': inputs, 'targets': x['obj_label'], 'predicate_id': x['predicate_id'],
          'sub_label': x['sub_label']}


@seqio.map_over_dataset
def remove_first_text_token(x, key: str = 'inputs'):
  """Drops the first space-separated word of `x[key]`: the task name T5 puts first.

  The taskless format of the prompt-tuning code ('rte hypothesis: ...' ->
  'hypothesis: ...'), so that only the prompt tells the model the task.
  """
  return {**x, key: tf.strings.regex_replace(x[key], r'^[^ ]* ', '', replace_global=False)}


@seqio.map_over_dataset
def stsb(x):
  """STS-B pair -> 'stsb sentence1: ... sentence2: ...' -> the score rounded to 0.2, e.g. '3.4'.

  T5's format: a 26-way classification over '0.0', '0.2', ..., '5.0'.
  """
  return {'inputs': _fields(x, 'stsb', ('sentence1', 'sentence2')),
          'targets': tf.strings.as_string(tf.round(x['label'] * 5) / 5, precision=1),
          'idx': x['idx']}


WSC_SIMPLE_PREFIX = 'wsc:'


def _mark_pronoun(x) -> tf.Tensor:
  """WSC text with its pronoun (span2) as '*pronoun*', by its word index.

  Where the indexed word only starts with the pronoun ('him,"'), the rest is
  split off ('*him* ,"'); where the index points one word early (the release's
  'use it'), the next word is taken: T5 special-cases these two examples.
  """
  words = tf.strings.split(x['text'], sep=' ')
  pronoun = x['span2_text']
  index = tf.cast(x['span2_index'], tf.int32)
  following = tf.gather(words, tf.minimum(index + 1, tf.size(words) - 1))
  index = tf.where(tf.logical_and(tf.not_equal(words[index], pronoun),
                                  tf.equal(following, pronoun)), index + 1, index)
  word = words[index]
  rest = tf.strings.substr(word, tf.strings.length(pronoun), -1)
  marked = tf.strings.join(['*', pronoun, '*'])
  starts_with_pronoun = tf.equal(tf.strings.substr(word, 0, tf.strings.length(pronoun)), pronoun)
  marked = tf.where(tf.logical_and(starts_with_pronoun, tf.strings.length(rest) > 0),
                    tf.strings.join([marked, rest], separator=' '), marked)
  words = tf.concat([words[:index], [marked], words[index + 1:]], axis=0)
  return tf.strings.reduce_join(words, separator=' ')


def wsc_simple(dataset: tf.data.Dataset, correct_referent_only: bool = False) -> tf.data.Dataset:
  """WSC -> 'wsc: ... *pronoun* ...' -> the candidate referent (span1), T5's `wsc_simple`.

  The model generates the referent; the postprocessor (`postprocessors.wsc_simple`)
  says whether the generation names the candidate, compared with the label.
  Training uses only the examples whose candidate is the right referent
  (`correct_referent_only`, 259 of WSC's 554).
  """
  if correct_referent_only:
    dataset = dataset.filter(lambda x: tf.equal(x['label'], 1))

  def format_example(x):
    return {'inputs': tf.strings.join([WSC_SIMPLE_PREFIX, _mark_pronoun(x)], separator=' '),
            'targets': x['span1_text'], 'label': x['label'], 'idx': x['idx']}

  return dataset.map(format_example, num_parallel_calls=tf.data.AUTOTUNE)


@seqio.map_over_dataset
def dpr_simple(x):
  """Definite Pronoun Resolution -> 'wsc: ... *pronoun* ...' -> the right candidate.

  The first occurrence of the pronoun followed by a space, '.' or ',' is
  marked, as T5's `definite_pronoun_resolution_simple`; the two `candidates`
  are kept for rank classification.
  """
  pattern = tf.strings.join([r' (', x['pronoun'], r')( |\.|,)'])
  sentence = tf.strings.regex_replace(x['sentence'], pattern, r' *\1*\2', replace_global=False)
  return {'inputs': tf.strings.join([WSC_SIMPLE_PREFIX, sentence], separator=' '),
          'targets': tf.gather(x['candidates'], x['label']), 'candidates': x['candidates']}
