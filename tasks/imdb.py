"""IMDB movie reviews (Maas et al. 2011) as SST-2-style sentiment: `imdb_reviews`.

Inputs are the review text; targets 'negative' / 'positive' (SST-2's words,
so sentiment prompts can be recycled and evaluated across the two). Sources:
TFDS `imdb_reviews/plain_text:1.0.0` or the aclImdb release (`sources.py`).
Splits: train, test (25,000 reviews each); metric: accuracy.
"""
import functools

from tasks import metrics
from tasks import postprocessors
from tasks import preprocessors
from tasks import registry
from tasks import sources

TASK = 'imdb_reviews'
LABELS = ('negative', 'positive')

registry.add_task(
    TASK,
    source=sources.switchable_source(local=sources.IMDB_FORMAT, splits=('train', 'test'),
                                     tfds_name='imdb_reviews/plain_text:1.0.0'),
    preprocessors=[functools.partial(preprocessors.sentiment, label_names=LABELS)],
    postprocess_fn=functools.partial(postprocessors.class_id, label_names=LABELS),
    metric_fns=[metrics.accuracy], label_words=LABELS)
