"""SuperGLUE v1.0.2 tasks, `super_glue_<task>_v102`, and their proportional mixture.

Formats as T5's (see `preprocessors.py`); targets are TFDS's class names.
Sources: TFDS `super_glue/<config>:1.0.2` (WSC: `wsc.fixed`), or the official
jsonl files under `superglue/<Task>/` (`tasks.set_data_source`).

  task                       label words                              metrics
  super_glue_boolq_v102      False True                               accuracy
  super_glue_cb_v102         entailment contradiction neutral         macro_f1, accuracy
  super_glue_copa_v102       choice1 choice2                          accuracy
  super_glue_multirc_v102    False True (per answer option)           f1a, exact_match
  super_glue_record_v102     - (generative: an entity)                em, f1
  super_glue_rte_v102        entailment not_entailment                accuracy
  super_glue_wic_v102        False True                               accuracy
  super_glue_wsc_v102        False True                               accuracy
"""
import functools

from tasks import metrics
from tasks import postprocessors
from tasks import preprocessors
from tasks import registry
from tasks import sources

SPLITS = ('train', 'validation', 'test')

# Field order in the inputs: by name, except where T5 fixed one (WiC).
_FIELDS = {
    'boolq': ('passage', 'question'),
    'cb': ('hypothesis', 'premise'),
    'copa': ('choice1', 'choice2', 'premise', 'question'),
    'rte': ('hypothesis', 'premise'),
    'wic': ('sentence1', 'sentence2', 'word'),
}

_CLASSIFICATION_METRICS = {
    'boolq': [metrics.accuracy],
    'cb': [metrics.macro_f1(num_classes=3), metrics.accuracy],
    'copa': [metrics.accuracy],
    'rte': [metrics.accuracy],
    'wic': [metrics.accuracy],
    'wsc': [metrics.accuracy],
}

# Training examples per task (ReCoRD: one per gold answer, as it is trained),
# the weights of the proportional mixture, as T5's.
TRAIN_EXAMPLES = {
    'boolq': 9_427, 'cb': 250, 'copa': 400, 'multirc': 27_243, 'record': 138_854,
    'rte': 2_490, 'wic': 5_428, 'wsc': 554,
}

MIXTURE = 'super_glue_v102_proportional'


def task_name(config: str) -> str:
  return f'super_glue_{config}_v102'


def _register(config: str) -> None:
  tfds_config = 'wsc.fixed' if config == 'wsc' else config
  source = sources.switchable_source(local=sources.super_glue_format(config), splits=SPLITS,
                                     tfds_name=f'super_glue/{tfds_config}:1.0.2')
  if config == 'multirc':
    registry.add_task(task_name(config), source=source, preprocessors=[preprocessors.multirc],
                      postprocess_fn=postprocessors.multirc, metric_fns=[metrics.multirc],
                      label_words=('False', 'True'))
  elif config == 'record':
    registry.add_task(task_name(config), source=source, preprocessors=[preprocessors.record],
                      postprocess_fn=postprocessors.record, metric_fns=[metrics.record],
                      label_words=None)
  else:
    labels = sources.SUPER_GLUE_LABELS[config]
    if config == 'wsc':
      formatter = preprocessors.wsc
    else:
      formatter = functools.partial(preprocessors.text_to_text, prefix=config,
                                    feature_names=_FIELDS[config], label_names=labels)
    registry.add_task(task_name(config), source=source, preprocessors=[formatter],
                      postprocess_fn=functools.partial(postprocessors.class_id, label_names=labels),
                      metric_fns=_CLASSIFICATION_METRICS[config], label_words=labels)


for _config in TRAIN_EXAMPLES:
  _register(_config)

registry.add_mixture(MIXTURE, [(task_name(c), float(n)) for c, n in TRAIN_EXAMPLES.items()])
