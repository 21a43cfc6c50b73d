"""GLUE SST-2 and QQP (TFDS `glue/<task>:2.0.0`, or the GLUE tsv release).

  task           inputs                                   targets                    metrics
  glue_sst2_v2   sst2 sentence: ...                       negative / positive        accuracy
  glue_qqp_v2    qqp question1: ... question2: ...        not_duplicate / duplicate  f1, accuracy
"""
import functools

from tasks import metrics
from tasks import postprocessors
from tasks import preprocessors
from tasks import registry
from tasks import sources

SPLITS = ('train', 'validation', 'test')

#  task -> (input fields, label names, metrics)
_TASKS = {
    'sst2': (('sentence',), ('negative', 'positive'), [metrics.accuracy]),
    'qqp': (('question1', 'question2'), ('not_duplicate', 'duplicate'),
            [metrics.f1_with_invalid, metrics.accuracy]),
}


def task_name(task: str) -> str:
  return f'glue_{task}_v2'


for _task, (_fields, _labels, _metrics) in _TASKS.items():
  registry.add_task(
      task_name(_task),
      source=sources.switchable_source(local=sources.glue_format(_task), splits=SPLITS,
                                       tfds_name=f'glue/{_task}:2.0.0'),
      preprocessors=[functools.partial(preprocessors.text_to_text, prefix=_task,
                                       feature_names=_fields, label_names=_labels)],
      postprocess_fn=functools.partial(postprocessors.class_id, label_names=_labels),
      metric_fns=_metrics, label_words=_labels)
