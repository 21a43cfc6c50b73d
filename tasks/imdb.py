"""IMDB movie reviews (Maas et al. 2011) as SST-2-style sentiment: `imdb_reviews`.

Inputs are the review text; targets 'negative' / 'positive' (SST-2's words,
so sentiment prompts can be recycled and evaluated across the two). Sources:
TFDS `imdb_reviews/plain_text:1.0.0` or the aclImdb release (`sources.py`).
Metric: accuracy.

IMDB has no validation split; as in the recycling code
(`prompt_tuning/recycling/data/imdb.py`), 'train' is the first 24,000 training
reviews, 'validation' the last 1,000, and 'test' the 25,000 test reviews (what
the recycling experiments report). The inputs have no task name, so
`imdb_reviews_taskless` is the same task under the variants' name, and
`imdb_reviews_taskless_0_1` the recycling code's '0' / '1' verbalizer.
"""
import functools

from tasks import metrics
from tasks import postprocessors
from tasks import preprocessors
from tasks import registry
from tasks import sources
from tasks import variants

TASK = 'imdb_reviews'
LABELS = ('negative', 'positive')
VERBALIZERS = (LABELS, ('0', '1'))
TRAIN_EXAMPLES = 25_000
SPLIT_SPECS = variants.held_out_splits(TRAIN_EXAMPLES, variants.held_out_size(TASK),
                                       native={'train': 'train', 'test': 'test'}, report='test')


def _register(name: str, labels) -> None:
  registry.add_task(
      name,
      source=sources.switchable_source(local=sources.IMDB_FORMAT, splits=tuple(SPLIT_SPECS),
                                       split_specs=SPLIT_SPECS,
                                       tfds_name='imdb_reviews/plain_text:1.0.0'),
      preprocessors=[functools.partial(preprocessors.sentiment, label_names=labels)],
      postprocess_fn=functools.partial(postprocessors.class_id, label_names=labels),
      metric_fns=[metrics.accuracy], label_words=labels)


_register(TASK, LABELS)
_register(variants.taskless_name(TASK), LABELS)
_register(variants.verbalizer_name(TASK, ('0', '1')), ('0', '1'))
