"""SuperGLUE v1.0.2 tasks, `super_glue_<task>_v102`, DPR and T5's SuperGLUE mixture.

Formats as T5's (`t5/data/tasks.py`, `glue_utils.py`; see `preprocessors.py`);
targets are TFDS's class names; metric names are T5's.
Sources: TFDS `super_glue/<config>:1.0.2` (WSC: `wsc.fixed`), or the official
jsonl files under `superglue/<Task>/` (`tasks.set_data_source`).

  task                              label words                        metrics
  super_glue_boolq_v102             False True                         accuracy
  super_glue_cb_v102                entailment contradiction neutral   mean_3class_f1, accuracy
  super_glue_copa_v102              choice1 choice2                    accuracy
  super_glue_multirc_v102           False True (per answer option)     f1 (F1a), exact_match
  super_glue_record_v102            - (an entity of the query)         em, f1
  super_glue_rte_v102               entailment not_entailment          accuracy
  super_glue_wic_v102               False True                         accuracy
  super_glue_wsc_v102               False True                         accuracy
  super_glue_axb_v102, _axg_v102    entailment not_entailment (as RTE; test split only)
                                    AX-b: matthews_corrcoef; AX-g: accuracy
  super_glue_wsc_v102_simple_train  'wsc: ... *he* ...' -> the referent (train, right referents)
  super_glue_wsc_v102_simple_eval   same, all candidates -> accuracy of naming the right one
  dpr_v001_simple                   Definite Pronoun Resolution as wsc_simple (TFDS only)

`super_glue_wsc_v102` (classification over the marked spans) is this
project's; T5 and the prompt-tuning code score WSC as `wsc_simple`, which
`super_glue_v102_proportional` trains and evaluates, as T5's mixture:
proportional to the training examples, with DPR, and the zero-weight
members evaluated only (`wsc_simple_eval`, AX-b, AX-g).

ReCoRD is ranked over its query's entities (`candidates_feature='entities'`)
and trained and decoded with at least `RECORD_TARGET_LENGTH` target tokens.
AX-b and AX-g carry labels in their release; T5 gives them no metric, we give
them their leaderboard metrics (named deviation). DPR has no validation split:
its 'validation' reads its test split (named deviation), as T5 evaluates it.
Every task has a `_taskless` variant (`tasks.variants`).
"""
import functools

import seqio

from tasks import metrics
from tasks import postprocessors
from tasks import preprocessors
from tasks import registry
from tasks import sources
from tasks import variants

SPLITS = ('train', 'validation', 'test')

# Field order in the inputs: by name, except where T5 fixed one (WiC).
_FIELDS = {
    'boolq': ('passage', 'question'),
    'cb': ('hypothesis', 'premise'),
    'copa': ('choice1', 'choice2', 'premise', 'question'),
    'rte': ('hypothesis', 'premise'),
    'wic': ('sentence1', 'sentence2', 'word'),
    'axb': ('hypothesis', 'premise'),
    'axg': ('hypothesis', 'premise'),
}

_CLASSIFICATION_METRICS = {
    'boolq': [metrics.accuracy],
    'cb': [metrics.mean_multiclass_f1(num_classes=3), metrics.accuracy],
    'copa': [metrics.accuracy],
    'rte': [metrics.accuracy],
    'wic': [metrics.accuracy],
    'wsc': [metrics.accuracy],
    'axb': [metrics.matthews_corrcoef],
    'axg': [metrics.accuracy],
}

# Training examples per task (ReCoRD: one per gold answer, as it is trained),
# the weights of the proportional mixture, as T5's.
TRAIN_EXAMPLES = {
    'boolq': 9_427, 'cb': 250, 'copa': 400, 'multirc': 27_243, 'record': 138_854,
    'rte': 2_490, 'wic': 5_428, 'wsc': 554,
}
# Rows of the train split before ReCoRD's one-per-answer expansion (held-out splits).
_TRAIN_ROWS = {**TRAIN_EXAMPLES, 'record': 100_730}
WSC_SIMPLE_TRAIN_EXAMPLES = 259
DPR_TRAIN_EXAMPLES = 1_322

# ReCoRD's answers are entity names of the passage, longer than the stock 8
# target tokens: in the local FewGLUE files (32 + 32 queries) the longest answer is
# 11 T5 tokens with EOS ('Olimpija Ljubljana') and the longest entity 14; the
# full release is not local, so twice that leaves room for its longer names
# (tests/tasks/target_length_test.py measures the files). Training and
# decoding use at least this many target tokens (`registry.target_length`).
RECORD_TARGET_LENGTH = 32

MIXTURE = 'super_glue_v102_proportional'
WSC_SIMPLE_TRAIN = 'super_glue_wsc_v102_simple_train'
WSC_SIMPLE_EVAL = 'super_glue_wsc_v102_simple_eval'
DPR = 'dpr_v001_simple'
DIAGNOSTICS = ('axb', 'axg')


def task_name(config: str) -> str:
  return f'super_glue_{config}_v102'


def _source(config: str, split_specs=None, splits=SPLITS):
  tfds_config = 'wsc.fixed' if config == 'wsc' else config
  specs = dict(split_specs or {s: s for s in splits})
  return sources.switchable_source(local=sources.super_glue_format(config), splits=tuple(specs),
                                   split_specs=specs,
                                   tfds_name=f'super_glue/{tfds_config}:1.0.2')


def _taskless(formatters, taskless: bool):
  return [*formatters, preprocessors.remove_first_text_token] if taskless else list(formatters)


def _register(config: str, *, taskless: bool = False) -> None:
  name = task_name(config)
  if config in DIAGNOSTICS:
    source = _source(config, splits=('test',))
  elif taskless:
    source = _source(config, variants.held_out_splits(_TRAIN_ROWS[config],
                                                      variants.held_out_size(name)))
  else:
    source = _source(config)
  if taskless:
    name = variants.taskless_name(name)
  if config == 'multirc':
    registry.add_task(name, source=source,
                      preprocessors=_taskless([preprocessors.multirc], taskless),
                      postprocess_fn=postprocessors.multirc, metric_fns=[metrics.multirc],
                      label_words=('False', 'True'))
    return
  if config == 'record':
    registry.add_task(name, source=source,
                      preprocessors=_taskless([preprocessors.record], taskless),
                      postprocess_fn=postprocessors.record, metric_fns=[metrics.record],
                      label_words=None, candidates_feature='entities',
                      target_length=RECORD_TARGET_LENGTH)
    return
  labels = sources.SUPER_GLUE_LABELS[config]
  if config == 'wsc':
    formatters = [preprocessors.wsc]
  else:
    formatters = []
    if config == 'axb':  # Cast as RTE, T5's rekeying.
      formatters.append(functools.partial(
          seqio.preprocessors.rekey, key_map={'premise': 'sentence1', 'hypothesis': 'sentence2',
                                              'label': 'label', 'idx': 'idx'}))
    prefix = 'rte' if config in DIAGNOSTICS else config
    formatters.append(functools.partial(preprocessors.text_to_text, prefix=prefix,
                                        feature_names=_FIELDS[config], label_names=labels))
  registry.add_task(name, source=source, preprocessors=_taskless(formatters, taskless),
                    postprocess_fn=functools.partial(postprocessors.class_id, label_names=labels),
                    metric_fns=_CLASSIFICATION_METRICS[config], label_words=labels)


def _register_wsc_simple(*, taskless: bool = False) -> None:
  suffix = variants.TASKLESS_SUFFIX if taskless else ''
  registry.add_task(
      WSC_SIMPLE_TRAIN + suffix, source=_source('wsc', splits=('train',)),
      preprocessors=_taskless([functools.partial(preprocessors.wsc_simple,
                                                 correct_referent_only=True)], taskless),
      postprocess_fn=postprocessors.wsc_simple, metric_fns=[], label_words=None)
  registry.add_task(
      WSC_SIMPLE_EVAL + suffix, source=_source('wsc', splits=('validation', 'test')),
      preprocessors=_taskless([preprocessors.wsc_simple], taskless),
      postprocess_fn=postprocessors.wsc_simple, metric_fns=[metrics.accuracy], label_words=None)
  registry.add_task(
      DPR + suffix,
      source=sources.switchable_source(
          local=None, splits=SPLITS, split_specs={'validation': 'test'},
          tfds_name='definite_pronoun_resolution:1.1.0', name='Definite Pronoun Resolution'),
      preprocessors=_taskless([preprocessors.dpr_simple], taskless),
      postprocess_fn=postprocessors.as_text_output, metric_fns=[metrics.accuracy],
      label_words=None, candidates_feature='candidates')


for _config in (*TRAIN_EXAMPLES, *DIAGNOSTICS):
  _register(_config)
  _register(_config, taskless=True)
_register_wsc_simple()
_register_wsc_simple(taskless=True)

registry.add_mixture(MIXTURE, [
    (DPR, float(DPR_TRAIN_EXAMPLES)),
    (WSC_SIMPLE_TRAIN, float(WSC_SIMPLE_TRAIN_EXAMPLES)),
    (WSC_SIMPLE_EVAL, 0.0),
    *[(task_name(c), float(n)) for c, n in TRAIN_EXAMPLES.items() if c != 'wsc'],
    *[(task_name(c), 0.0) for c in DIAGNOSTICS],
])
