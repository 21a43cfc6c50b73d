"""Numpy batches for the trainer, from SeqIO tasks or from tokenized examples.

An example is a dict with `inputs` and `targets` token-id sequences (EOS
included, as SeqIO's tasks produce them); other keys ride along for
postprocessing. `to_batch` applies the encoder-decoder conversion of SeqIO's
`EncDecFeatureConverter` (without packing) in numpy:

  encoder_input_tokens  = inputs, padded/truncated to the input length
  decoder_target_tokens = targets, padded/truncated to the target length
  decoder_input_tokens  = targets shifted right, starting with 0
  decoder_loss_weights  = 1 where the target is not padding

SeqIO (and with it TensorFlow) is imported only by the functions that read
tasks, so the core runs without it.

Multi-host. Training: each process reads its own shard of the stream and
yields its rows of every global batch. Evaluation and inference: every process
reads the whole split (`seqio_examples(..., per_host=False)`; evaluation untrimmed, at the
lengths of its longest example, `evaluation.eval_lengths`), builds the same
global batches and feeds its contiguous rows (`host_rows`); the replicated
outputs then line up with the same examples on every process, and every
process runs the same number of steps (no shards of unequal length to hang on).
"""
import itertools
import logging
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import jax
import numpy as np

Example = Mapping[str, Any]


def _fit(ids: Sequence[int], length: int) -> np.ndarray:
  out = np.zeros((length,), np.int32)
  ids = np.asarray(ids, np.int32)[:length]
  out[:len(ids)] = ids
  return out


def to_batch(examples: Sequence[Example], feature_lengths: Mapping[str, int],
             decoder_start_id: int = 0) -> Dict[str, np.ndarray]:
  """Examples -> dict of [batch, length] int32 arrays with t5x's feature names.

  `decoder_start_id` opens `decoder_input_tokens` (T5's is padding, 0).
  """
  inputs = np.stack([_fit(ex['inputs'], feature_lengths['inputs']) for ex in examples])
  targets = np.stack([_fit(ex['targets'], feature_lengths['targets']) for ex in examples])
  decoder_inputs = np.full_like(targets, decoder_start_id)
  decoder_inputs[:, 1:] = targets[:, :-1]
  return {'encoder_input_tokens': inputs, 'decoder_input_tokens': decoder_inputs,
          'decoder_target_tokens': targets, 'decoder_loss_weights': (targets > 0).astype(np.int32)}


def batches(examples: Iterable[Example], batch_size: int, feature_lengths: Mapping[str, int],
            *, pad_last: bool = False,
            convert: Optional[Callable[..., Dict[str, np.ndarray]]] = None
            ) -> Iterator[Dict[str, np.ndarray]]:
  """Groups examples into fixed-shape batches.

  Args:
    examples: any iterable of examples.
    batch_size: rows per batch (this host's rows in a multi-host run).
    feature_lengths: {'inputs': L, 'targets': T}.
    pad_last: emit the final partial batch padded with empty rows (their loss
      weights are 0) and a `valid` mask, as evaluation needs every example.
    convert: the feature conversion (default: T5's, `to_batch` above; a
      model family's `to_batch` for the others, `models/family.py`).
  """
  it = iter(examples)
  while True:
    chunk = list(itertools.islice(it, batch_size))
    if not chunk:
      return
    valid = np.arange(batch_size) < len(chunk)
    if len(chunk) < batch_size:
      if not pad_last:
        return
      chunk += [{'inputs': [], 'targets': []}] * (batch_size - len(chunk))
    batch = (convert or to_batch)(chunk, feature_lengths)
    if pad_last:
      batch['valid'] = valid
    yield batch


def shuffled_epochs(examples: Sequence[Example], seed: int, start: int = 0,
                    shard_index: int = 0, num_shards: int = 1) -> Iterator[Example]:
  """Endless reshuffled passes over in-memory examples, from position `start`.

  Deterministic in (seed, position): resuming at `start = steps * batch_size`
  continues exactly where an uninterrupted run would be.
  """
  examples = list(examples)[shard_index::num_shards]
  if not examples:
    raise ValueError('No examples to train on (after sharding over hosts).')
  epoch, offset = divmod(start, len(examples))
  while True:
    order = np.random.default_rng([seed, epoch]).permutation(len(examples))
    for i in order[offset:]:
      yield examples[i]
    epoch, offset = epoch + 1, 0


def host_rows(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """This process's contiguous rows of a global batch that every process built alike.

  `partitioning.shard_batch` reassembles the global batch from these slices in
  process order, so the result is the same batch on any number of hosts.

  Raises:
    ValueError: if the batch's rows do not split evenly over the processes.
  """
  n, i = jax.process_count(), jax.process_index()
  rows = host_batch_size(len(next(iter(batch.values()))))
  return {k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}


def host_batch_size(global_batch_size: int) -> int:
  """Rows this process contributes to each global batch."""
  if global_batch_size % jax.process_count():
    raise ValueError(f'BATCH_SIZE={global_batch_size} is not divisible by the '
                     f'{jax.process_count()} processes.')
  return global_batch_size // jax.process_count()


# --- SeqIO ------------------------------------------------------------------

def configure_tasks(vocabulary_path: Optional[str] = None, data_dir: Optional[str] = None) -> None:
  """Points the `tasks` package at a SentencePiece model and, optionally, local data files.

  Without `data_dir` the tasks read TFDS; with it, the datasets' original
  release files under that directory (see `tasks.set_data_source`).
  """
  import tasks  # pylint: disable=g-import-not-at-top
  if vocabulary_path:
    tasks.set_vocabulary(vocabulary_path)
  if data_dir:
    tasks.set_data_source(local_dir=data_dir)


def get_task(name: str):
  """The registered SeqIO task or mixture `name`; unknown names list close matches."""
  import difflib  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top,unused-import  (registers our tasks)
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    raise ValueError(f'Unknown task or mixture {name!r}. Close matches: {close or "none"}. '
                     f'Run `python -m tasks.show_tasks` to list all {len(known)}.') from None


def task_feature_lengths(task_name: str, feature_lengths: Mapping[str, int]) -> Dict[str, int]:
  """TASK_FEATURE_LENGTHS for training on a task, raised where its answers need more.

  A task whose answers run longer than the stock target length declares how
  many tokens they need (`tasks.registry.target_length`: ReCoRD's entity
  names); 'targets' is raised to that, with a log line, so no answer is cut.
  """
  import tasks  # pylint: disable=g-import-not-at-top
  lengths = dict(feature_lengths)
  needed = tasks.registry.target_length(task_name)
  if needed and lengths['targets'] < needed:
    logging.warning("%s: TASK_FEATURE_LENGTHS['targets']=%d would cut its answers (up to %d "
                    'tokens with EOS): using %d.', task_name, lengths['targets'], needed, needed)
    lengths['targets'] = needed
  return lengths


def longest(examples: Sequence[Example]) -> Dict[str, int]:
  """{'inputs': L, 'targets': T}: the longest of each among `examples`, in tokens."""
  return {k: max(len(ex[k]) for ex in examples) for k in ('inputs', 'targets')}


def seqio_examples(task_name: str, split: str, feature_lengths: Optional[Mapping[str, int]], *,
                   shuffle: bool, seed: Optional[int] = None, repeat: bool = False,
                   skip: int = 0, per_host: bool = True) -> Iterator[Dict[str, Any]]:
  """Tokenized examples of a SeqIO task, as numpy dicts.

  Args:
    task_name: a registered task or mixture.
    split: e.g. 'train', 'validation'.
    feature_lengths: {'inputs': L, 'targets': T}; longer sequences are
      trimmed. None: nothing is trimmed (evaluation, `longest`).
    shuffle, seed: SeqIO's deterministic shuffling.
    repeat: loop over the data forever (training).
    skip: examples of this host's stream to skip (resuming at a data position).
    per_host: this process's shard (training); False: the whole split on
      every process (evaluation and inference; see the module docstring).
  """
  import seqio  # pylint: disable=g-import-not-at-top
  task = get_task(task_name)
  shard = None
  if per_host:
    shard = seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
  lengths = None if feature_lengths is None else dict(feature_lengths)
  ds = task.get_dataset(lengths, split=split, shuffle=shuffle, seed=seed,
                        shard_info=shard, num_epochs=None if repeat else 1, use_cached=False)
  if skip:
    ds = ds.skip(skip)
  for ex in ds.as_numpy_iterator():
    yield {k: (v.decode('utf-8') if isinstance(v, bytes) else v) for k, v in ex.items()}


def take(examples: Iterable[Example], n: Optional[int]) -> List[Example]:
  """The first `n` examples (all when `n` is None)."""
  return list(examples if n is None else itertools.islice(examples, n))


def sample(examples: Iterable[Example], n: Optional[int], seed: int = 0) -> List[Example]:
  """`n` examples drawn uniformly without replacement (seeded), in their original order.

  For evaluating on part of a split: splits are often sorted by label (IMDB's
  test split starts with 12,500 negative reviews), so the first `n` can be
  one class only. Reads the whole split; all examples when `n` is None or
  not smaller than the split.
  """
  examples = list(examples)
  if n is None or n >= len(examples):
    return examples
  keep = np.sort(np.random.default_rng(seed).choice(len(examples), n, replace=False))
  return [examples[i] for i in keep]
