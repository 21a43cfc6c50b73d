"""GLUE (TFDS `glue/<task>:2.0.0`; SST-2 and QQP also from the GLUE tsv release).

Formats, label words, postprocessors and metrics are T5's (`glue_<task>_v002`
in `t5/data/tasks.py`, `glue_utils.py`): the task name, then every text field
sorted by name, and the class name as the target.

  task                       inputs                                    targets                         metrics
  glue_cola_v2               cola sentence: ...                        unacceptable / acceptable       matthews_corrcoef
  glue_sst2_v2               sst2 sentence: ...                        negative / positive             accuracy
  glue_mrpc_v2               mrpc sentence1: ... sentence2: ...        not_equivalent / equivalent     f1, accuracy
  glue_qqp_v2                qqp question1: ... question2: ...         not_duplicate / duplicate       f1, accuracy
  glue_stsb_v2               stsb sentence1: ... sentence2: ...        '0.0', '0.2', ..., '5.0'        pearson, spearman
  glue_mnli_v2               mnli hypothesis: ... premise: ...         entailment / neutral / contr.   accuracy
  glue_mnli_{matched,mismatched}_v2   (MNLI's validation/test sets; no train split)
  glue_qnli_v2               qnli question: ... sentence: ...          entailment / not_entailment     accuracy
  glue_rte_v2                rte sentence1: ... sentence2: ...         entailment / not_entailment     accuracy
  glue_wnli_v2               wnli sentence1: ... sentence2: ...        not_entailment / entailment     accuracy
  glue_ax_v2                 mnli hypothesis: ... premise: ...         (diagnostic, test only)         -

glue_mnli_v2's 'validation' is MNLI's matched validation set (its TFDS splits
`validation_mismatched`, `test_matched`, `test_mismatched` are kept).

Variants (`tasks.variants`): `<task>_taskless` for every task, and QQP's
other verbalizers from the recycling code (`glue_qqp_v2_taskless_0_1`,
`..._unique_duplicate`, `..._not_spc_duplicate_duplicate`).
Only SST-2 and QQP have local readers; the other tasks read TFDS.
"""
import functools

from tasks import metrics
from tasks import postprocessors
from tasks import preprocessors
from tasks import registry
from tasks import sources
from tasks import variants

SPLITS = ('train', 'validation', 'test')

STSB_LABELS = tuple(f'{i / 5:.1f}' for i in range(26))  # T5 rounds scores to 0.2.

#  task -> (label names, metrics, T5's task-name prefix)
TASKS = {
    'cola': (('unacceptable', 'acceptable'), [metrics.matthews_corrcoef], 'cola'),
    'sst2': (('negative', 'positive'), [metrics.accuracy], 'sst2'),
    'mrpc': (('not_equivalent', 'equivalent'), [metrics.f1_with_invalid, metrics.accuracy],
             'mrpc'),
    'qqp': (('not_duplicate', 'duplicate'), [metrics.f1_with_invalid, metrics.accuracy], 'qqp'),
    'stsb': (STSB_LABELS, [metrics.pearson_corrcoef, metrics.spearman_corrcoef], 'stsb'),
    'mnli': (('entailment', 'neutral', 'contradiction'), [metrics.accuracy], 'mnli'),
    'mnli_matched': (('entailment', 'neutral', 'contradiction'), [metrics.accuracy], 'mnli'),
    'mnli_mismatched': (('entailment', 'neutral', 'contradiction'), [metrics.accuracy], 'mnli'),
    'qnli': (('entailment', 'not_entailment'), [metrics.accuracy], 'qnli'),
    'rte': (('entailment', 'not_entailment'), [metrics.accuracy], 'rte'),
    'wnli': (('not_entailment', 'entailment'), [metrics.accuracy], 'wnli'),
    'ax': (('entailment', 'neutral', 'contradiction'), [], 'mnli'),  # Test labels are hidden.
}

# Text fields, sorted by name (T5's order when none is given).
FIELDS = {
    'cola': ('sentence',), 'sst2': ('sentence',), 'mrpc': ('sentence1', 'sentence2'),
    'qqp': ('question1', 'question2'), 'stsb': ('sentence1', 'sentence2'),
    'mnli': ('hypothesis', 'premise'), 'mnli_matched': ('hypothesis', 'premise'),
    'mnli_mismatched': ('hypothesis', 'premise'), 'qnli': ('question', 'sentence'),
    'rte': ('sentence1', 'sentence2'), 'wnli': ('sentence1', 'sentence2'),
    'ax': ('hypothesis', 'premise'),
}

# Training examples (TFDS glue 2.0.0), for held-out splits and mixture weights.
TRAIN_EXAMPLES = {
    'cola': 8_551, 'sst2': 67_349, 'mrpc': 3_668, 'qqp': 363_846, 'stsb': 5_749,
    'mnli': 392_702, 'qnli': 104_743, 'rte': 2_490, 'wnli': 635,
}

# Split names a task offers -> TFDS's (identity when absent).
_SPLITS = {
    'mnli': {'train': 'train', 'validation': 'validation_matched',
             'validation_mismatched': 'validation_mismatched', 'test': 'test_matched',
             'test_matched': 'test_matched', 'test_mismatched': 'test_mismatched'},
    'mnli_matched': {'validation': 'validation', 'test': 'test'},
    'mnli_mismatched': {'validation': 'validation', 'test': 'test'},
    'ax': {'test': 'test'},
}

# The recycling code's QQP verbalizers (`prompt_tuning/recycling/data/qqp.py`),
# beyond TFDS's class names.
QQP_VERBALIZERS = (('0', '1'), ('unique', 'duplicate'), ('not duplicate', 'duplicate'))


def task_name(task: str) -> str:
  return f'glue_{task}_v2'


def _source(task: str, split_specs=None):
  local = sources.glue_format(task) if task in ('sst2', 'qqp') else None
  native = _SPLITS.get(task, {s: s for s in SPLITS})
  specs = variants.resolve(split_specs or {s: s for s in native}, native)
  return sources.switchable_source(local=local, splits=tuple(specs), split_specs=specs,
                                   tfds_name=f'glue/{task}:2.0.0', name=f'GLUE {task}')


def _formatter(task: str, labels):
  if task == 'stsb':
    return preprocessors.stsb
  return functools.partial(preprocessors.text_to_text, prefix=TASKS[task][2],
                           feature_names=FIELDS[task], label_names=labels)


def _postprocessor(task: str, labels):
  if task == 'stsb':
    return postprocessors.string_to_float
  return functools.partial(postprocessors.class_id, label_names=labels)


def _register(name: str, task: str, labels, *, taskless: bool, split_specs=None) -> None:
  formatters = [_formatter(task, labels)]
  if taskless:
    formatters.append(preprocessors.remove_first_text_token)
  registry.add_task(name, source=_source(task, split_specs), preprocessors=formatters,
                    postprocess_fn=_postprocessor(task, labels), metric_fns=TASKS[task][1],
                    label_words=labels)


for _task, (_labels, _, _) in TASKS.items():
  _register(task_name(_task), _task, _labels, taskless=False)
  _register(variants.taskless_name(task_name(_task)), _task, _labels, taskless=True,
            split_specs=variants.held_out_splits(TRAIN_EXAMPLES.get(_task),
                                                 variants.held_out_size(task_name(_task)),
                                                 _SPLITS.get(_task)))

for _labels in QQP_VERBALIZERS:
  _register(variants.verbalizer_name(task_name('qqp'), _labels), 'qqp', _labels, taskless=True,
            split_specs=variants.held_out_splits(TRAIN_EXAMPLES['qqp'],
                                                 variants.held_out_size(task_name('qqp'))))
