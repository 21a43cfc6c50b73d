"""Evaluating a prompt: rank classification or greedy decoding, then the task's metrics.

Rank classification scores every candidate target (the task's label words)
for every example and predicts the most likely; decoding generates with the
KV cache. Both produce strings that go through the task's postprocessor and
metric functions, so the numbers are the task's official ones whichever way
the predictions were made. Nothing here imports SeqIO: a task is passed as
its pieces (`decode`, `postprocess`, `metric_fns`); `task_evaluator` reads a
registered task or mixture (each task of a mixture with its own metrics, then
their macro averages, `tasks.metrics.mixture_metrics`).

Multi-host: every process holds all the examples and builds the same global
batches; it feeds its own rows (`data.host_rows`) and reads the replicated
scores or tokens of the whole batch, so every process predicts every example
exactly as one process does (see `data`'s module docstring).
"""
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

from prompt_recycling import data
from prompt_recycling import partitioning

Example = Mapping[str, Any]


def _global_batches(examples: Sequence[Example], batch_size: int, lengths: Mapping[str, int],
                    steps, convert: Optional[Callable[..., Dict[str, np.ndarray]]] = None):
  """(this process's rows as a global array, [batch_size] valid mask of the global batch).

  The model family's feature conversion (`steps.family.to_batch`, or
  `convert`) builds the batches. The last batch is padded with empty rows; all
  processes see the same examples, so they run the same number of steps.
  """
  data.host_batch_size(batch_size)  # Fails early when the rows do not split over processes.
  for batch in data.batches(examples, batch_size, lengths, pad_last=True,
                            convert=convert or steps.family.to_batch):
    valid = batch.pop('valid')
    yield partitioning.shard_batch(data.host_rows(batch), steps.mesh), valid


def _by_length(items: Sequence[Example], batch_size: int, max_inputs: int):
  """(indices of a batch of `items`, its inputs length), shortest inputs first.

  Scores do not depend on padding, so rows are sorted by input length and each
  batch is padded to a power-of-two bucket of its longest row (at most
  `max_inputs`): SST-2's sentences fill a quarter of 64 tokens on average.
  """
  order = sorted(range(len(items)), key=lambda i: len(items[i]['inputs']))
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    longest = max(len(items[i]['inputs']) for i in rows)
    yield rows, min(max_inputs, _bucket(longest))


def rank_scores(steps, params, frozen, examples: Sequence[Example],
                candidates: Sequence[Sequence[Sequence[int]]], *, batch_size: int,
                feature_lengths: Mapping[str, int]) -> List[np.ndarray]:
  """Log-likelihood of every candidate target of every example.

  Where every example has the same candidates (a task's label words) and the
  family can decode several targets from one encoding (T5,
  `Steps.scores_candidates_together`), each batch holds `batch_size` examples,
  encoded once and decoded once per candidate; otherwise each (example,
  candidate) pair is a row of its own. The scores are the same either way.

  Args:
    steps: `trainer.Steps`.
    params, frozen: the prompt method's and the model's parameters.
    examples: dicts with `inputs` token ids, the same on every process.
    candidates: per example, the token ids of each of its candidate targets
      (EOS included): a task's label words for all, or the example's own
      (ReCoRD's entities).
    batch_size: global batch size (divisible by the data-parallel devices).
    feature_lengths: {'inputs': L, ...}: inputs are cut at L tokens; the
      targets are padded to the longest candidate, so that none is cut.

  Returns:
    [num_examples] arrays of [num_candidates of the example] float32, the
    summed log-likelihood of each candidate's tokens.
  """
  if candidates and candidates[0] and steps.scores_candidates_together and all(
      c == candidates[0] for c in candidates):
    return list(_shared_candidate_scores(steps, params, frozen, examples, candidates[0],
                                         batch_size, feature_lengths['inputs']))
  pairs = [{'inputs': ex['inputs'], 'targets': cand}
           for ex, cands in zip(examples, candidates) for cand in cands]
  if not pairs:
    return [np.zeros((0,), np.float32) for _ in candidates]
  targets_length = max(len(p['targets']) for p in pairs)
  flat = np.zeros(len(pairs), np.float32)
  for rows, inputs_length in _by_length(pairs, batch_size, feature_lengths['inputs']):
    lengths = {'inputs': inputs_length, 'targets': targets_length}
    for sharded, valid in _global_batches([pairs[i] for i in rows], batch_size, lengths, steps):
      flat[rows] = np.asarray(steps.score(params, frozen, sharded))[valid]
  ends = np.cumsum([len(c) for c in candidates])
  return np.split(flat, ends[:-1])


def _shared_candidate_scores(steps, params, frozen, examples: Sequence[Example],
                             candidates: Sequence[Sequence[int]], batch_size: int,
                             max_inputs: int) -> np.ndarray:
  """[num_examples, num_candidates]: each input encoded once, decoded per candidate.

  The decoder features are [batch, candidates, length], the same candidates
  for every row (`trainer.score_candidates_step`).
  """
  family = steps.family
  targets = family.to_batch([{'inputs': [], 'targets': c} for c in candidates],
                            {'inputs': 1, 'targets': max(len(c) for c in candidates)})
  decoder = {k: targets[k] for k in
             ('decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights')}

  def convert(chunk, lengths):
    batch = family.to_batch([{'inputs': ex['inputs'], 'targets': []} for ex in chunk],
                            {'inputs': lengths['inputs'], 'targets': 1})
    batch.update({k: np.broadcast_to(v, (len(chunk),) + v.shape).copy()
                  for k, v in decoder.items()})
    return batch

  scores = np.zeros((len(examples), len(candidates)), np.float32)
  for rows, inputs_length in _by_length(examples, batch_size, max_inputs):
    for sharded, valid in _global_batches([examples[i] for i in rows], batch_size,
                                          {'inputs': inputs_length}, steps, convert):
      scores[rows] = np.asarray(steps.score_candidates(params, frozen, sharded))[valid]
  return scores


def _bucket(length: int, smallest: int = 16) -> int:
  """The power of two (at least `smallest`) that holds `length` tokens."""
  return max(smallest, 1 << max(0, length - 1).bit_length())


def reduce_scores(scores: Sequence[float], candidates: Sequence[Sequence[int]],
                  normalize: bool) -> np.ndarray:
  """A candidate's summed log-likelihood, or (`normalize`) its mean per target token.

  T5's `normalize_by_target_length`: divided by the candidate's length in
  tokens, EOS included. Summed scores favour short candidates ('True' is 1
  token, 'False' 3 in T5's vocabulary).
  """
  scores = np.asarray(scores, np.float64)
  if not normalize:
    return scores
  return scores / np.asarray([len(c) for c in candidates], np.float64)


def rank_classify(steps, params, frozen, examples: Sequence[Example],
                  candidates: Sequence[Sequence[int]], *, batch_size: int,
                  feature_lengths: Mapping[str, int], normalize: bool = False) -> np.ndarray:
  """Index of the most likely of the same candidate targets for each example: [num_examples] int."""
  scores = rank_scores(steps, params, frozen, examples, [candidates] * len(examples),
                       batch_size=batch_size, feature_lengths=feature_lengths)
  return np.asarray([reduce_scores(s, candidates, normalize).argmax() for s in scores])


def greedy_predict(steps, params, frozen, examples: Sequence[Example], *, batch_size: int,
                   feature_lengths: Mapping[str, int]) -> List[np.ndarray]:
  """Decoded target tokens per example, cut at EOS (kept out)."""
  out = []
  for sharded, valid in _global_batches(examples, batch_size, feature_lengths, steps):
    tokens = np.asarray(steps.predict(params, frozen, sharded, feature_lengths['targets']))[valid]
    for row in tokens:
      eos = np.flatnonzero(row == steps.family.eos_id)
      out.append(row[:eos[0]] if len(eos) else row[row > 0])
  return out


RANK_MODES = ('rank', 'rank_normalized')


def eval_lengths(examples: Sequence[Example], configured: Mapping[str, int], what: str, *,
                 min_targets: Optional[int] = None,
                 max_lengths: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
  """Input and target lengths that cut no example: the longest of `examples`.

  As t5x evaluates (`infer_eval` and `eval.gin` leave `task_feature_lengths`
  None, so SeqIO's evaluator measures the longest of each feature): inputs
  are never truncated, and greedy decoding runs up to the longest gold target
  (or `min_targets`, the task's declared answer length, if more), so no gold
  target is cut. `configured` (TASK_FEATURE_LENGTHS, which training cuts to)
  only serves to say, in one log line per feature, how many examples exceed it.
  `max_lengths` is an explicit cap (memory: IMDB reviews run to thousands of
  tokens): examples longer than it are cut, with a warning that says how many.

  Args:
    examples: the untrimmed examples to be evaluated (`inputs`, `targets`).
    configured: {'inputs': L, 'targets': T} as configured.
    what: names the examples in the log lines ('glue_sst2_v2 validation').
    min_targets: the task's `tasks.registry.target_length`, if any.
    max_lengths: optional {'inputs': L, 'targets': T} caps (None: no cap).

  Returns:
    {'inputs': longest input, 'targets': max(longest target, min_targets)},
    each no more than its cap in `max_lengths`.
  """
  found = data.longest(examples)
  lengths = dict(found, targets=max(found['targets'], min_targets or 0))
  for key, longest in found.items():
    cap = (max_lengths or {}).get(key)
    if cap is not None and longest > cap:
      cut = sum(len(ex[key]) > cap for ex in examples)
      logging.warning('%s: %d of %d examples have %s longer than the evaluation cap %d tokens '
                      '(longest %d): they are cut to %d.', what, cut, len(examples), key, cap,
                      longest, cap)
      lengths[key] = cap
    elif longest > configured[key]:
      over = sum(len(ex[key]) > configured[key] for ex in examples)
      logging.warning("%s: %d of %d examples have %s longer than TASK_FEATURE_LENGTHS[%r]=%d "
                      '(longest %d tokens): evaluated uncut, as t5x evaluates.',
                      what, over, len(examples), key, key, configured[key], longest)
  logging.info('%s: evaluating %d examples at inputs %d, targets %d tokens (the longest).',
               what, len(examples), lengths['inputs'], lengths['targets'])
  return lengths


def evaluate(steps, params, frozen, examples: Sequence[Example], *, mode: str,
             batch_size: int, feature_lengths: Mapping[str, int],
             decode: Callable[[Sequence[int]], str],
             metric_fns: Sequence[Callable[[list, list], Dict[str, float]]],
             postprocess: Optional[Callable[..., Any]] = None,
             label_words: Optional[Sequence[str]] = None,
             encode: Optional[Callable[[str], Sequence[int]]] = None,
             candidates_feature: Optional[str] = None,
             rank_metric_fn: Optional[Callable[..., Dict[str, float]]] = None) -> Dict[str, float]:
  """Predicts every example and scores the predictions with the task's metrics.

  Args:
    steps, params, frozen: as in `rank_scores`.
    examples: dicts with `inputs`, `targets` and, where the task keeps them,
      `targets_pretokenized` and the raw fields its postprocessor reads.
    mode: 'rank' (the candidate of highest summed log-likelihood),
      'rank_normalized' (highest log-likelihood per target token, T5's
      `normalize_by_target_length`) or 'decode' (greedy).
    batch_size, feature_lengths: as in `rank_scores`.
    decode: token ids -> text.
    metric_fns: `fn(targets, predictions) -> {name: value}`.
    postprocess: `fn(text, example=..., is_target=...)`, the task's postprocessor.
    label_words: candidate strings for the rank modes.
    encode: text -> token ids with EOS, for the candidates.
    candidates_feature: instead of `label_words`, the example feature listing
      each example's own candidates (ReCoRD's 'entities').
    rank_metric_fn: `fn(scores [n, classes], target_ids [n]) -> metrics`
      (`tasks.metrics.rank_classification_metrics`), for label words. Its
      metrics are added where the task's do not have them (F1, AUC), and
      again under 'normed_' from the length-normalised scores (as the
      recycling code reports both).

  Returns:
    {metric name: value, 'num_examples': how many examples were scored}.
  """
  rank_metrics = {}
  if mode in RANK_MODES:
    if (not label_words and not candidates_feature) or encode is None:
      raise ValueError(f'mode={mode!r} needs the task\'s label words (or per-example candidates) '
                       "and an encoder; use mode='decode' for generative tasks.")
    if candidates_feature:
      words = [[str(w.decode() if isinstance(w, bytes) else w) for w in ex[candidates_feature]]
               for ex in examples]
    else:
      words = [list(label_words)] * len(examples)
    ids = {w: list(encode(w)) for ws in words for w in ws}
    candidates = [[ids[w] for w in ws] for ws in words]
    scores = rank_scores(steps, params, frozen, examples, candidates, batch_size=batch_size,
                         feature_lengths=feature_lengths)
    predictions = [ws[int(reduce_scores(s, c, mode == 'rank_normalized').argmax())]
                   for ws, s, c in zip(words, scores, candidates)]
    gold = [ex.get('targets_pretokenized') for ex in examples]
    if rank_metric_fn is not None and not candidates_feature and all(
        g in label_words for g in gold):
      target_ids = [list(label_words).index(g) for g in gold]
      raw = np.stack(scores)
      normed = np.stack([reduce_scores(s, c, True) for s, c in zip(scores, candidates)])
      rank_metrics = rank_metric_fn(normed if mode == 'rank_normalized' else raw, target_ids)
      rank_metrics.update({f'normed_{k}': v for k, v in rank_metric_fn(normed, target_ids).items()})
  elif mode == 'decode':
    predictions = [decode(t) for t in greedy_predict(steps, params, frozen, examples,
                                                     batch_size=batch_size,
                                                     feature_lengths=feature_lengths)]
  else:
    raise ValueError(f"Unknown evaluation mode {mode!r}: expected 'rank', 'rank_normalized' "
                     "or 'decode'.")
  targets = [ex.get('targets_pretokenized') or decode([t for t in ex['targets'] if t > 1])
             for ex in examples]
  if postprocess is not None:
    predictions = [postprocess(p, example=ex, is_target=False) for p, ex in zip(predictions, examples)]
    targets = [postprocess(t, example=ex, is_target=True) for t, ex in zip(targets, examples)]
  metrics = {}
  for fn in metric_fns:
    metrics.update({k: float(getattr(v, 'value', v)) for k, v in fn(targets, predictions).items()})
  for k, v in rank_metrics.items():
    metrics.setdefault(k, float(v))
  metrics['num_examples'] = len(examples)  # The count every metric rests on.
  return metrics


def task_evaluator(task_name: str, *, split: str, feature_lengths: Mapping[str, int], mode: str,
                   batch_size: int, max_examples: Optional[int] = None,
                   label_words: Optional[Sequence[str]] = None,
                   max_lengths: Optional[Mapping[str, int]] = None,
                   convert: Optional[Callable[[Example], Mapping[str, Any]]] = None,
                   encode_label: Optional[Callable[[str], Sequence[int]]] = None
                   ) -> Callable[..., Dict[str, float]]:
  """`(steps, params, frozen, step) -> metrics` for a registered SeqIO task or mixture.

  The examples are read once, the whole split on every process, untrimmed;
  each call predicts them all with the current prompt, at lengths that cut
  none of them (`eval_lengths`; for a mixture one length over all its tasks,
  as SeqIO's evaluator: `feature_lengths` is what training cuts to and only
  serves to log how many are longer; `max_lengths` caps them, also with a log
  line). `max_examples` evaluates on a fixed random subset of the
  split (`data.sample`, seed 0), never on its first rows. Label words default
  to the task's verbalizers (`tasks.label_words`).

  A mixture is evaluated task by task, each with its own label words,
  postprocessor and metrics (and `max_examples` each); the result is
  `tasks.metrics.mixture_metrics`: '<task>/<metric>', each metric all tasks
  share macro-averaged under its own name, and 'average' (LAMA: P@1 per
  relation and over the 41 relations). In 'rank' mode a task without label
  words (ReCoRD) is decoded.

  Another family's tokenizer (BERT-likes, GPT-2; `train.family_example`):
  `convert` gives each example's `inputs` / `targets` ids from its text, and
  `encode_label` a label word's candidate ids; the metrics still compare the
  task's label words.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top
  from tasks import metrics as task_metrics  # pylint: disable=g-import-not-at-top
  task = data.get_task(task_name)
  members = task.tasks if isinstance(task, seqio.Mixture) else [task]
  examples = {sub.name: read_examples(sub.name, split, max_examples) for sub in members}
  if convert is not None:
    examples = {name: [{**ex, **convert(ex)} for ex in exs] for name, exs in examples.items()}
  # One length for all of a mixture's tasks, as SeqIO's evaluator measures them (and one
  # compiled shape instead of one per task).
  lengths = eval_lengths([ex for exs in examples.values() for ex in exs], feature_lengths,
                         f'{task_name} {split!r}',
                         min_targets=tasks.registry.target_length(task_name),
                         max_lengths=max_lengths)
  if not isinstance(task, seqio.Mixture):
    return _single_task_evaluator(task, examples[task.name], lengths=lengths, mode=mode,
                                  batch_size=batch_size, label_words=label_words,
                                  encode_label=encode_label)
  evaluators = {}
  for sub in task.tasks:
    sub_mode = mode
    if mode in RANK_MODES and label_words is None and tasks.label_words(sub.name) is None:
      logging.warning('%s has no label words to rank (a generative task): decoding it.', sub.name)
      sub_mode = 'decode'
    evaluators[sub.name] = _single_task_evaluator(
        sub, examples[sub.name], lengths=lengths, mode=sub_mode, batch_size=batch_size,
        label_words=label_words, encode_label=encode_label)

  def evaluate_fn(steps, params, frozen, step):
    results = {name: fn(steps, params, frozen, step) for name, fn in evaluators.items()}
    return task_metrics.mixture_metrics(results)
  return evaluate_fn


def read_examples(task_name: str, split: str, max_examples: Optional[int]) -> List[Example]:
  """A task's `split`, untrimmed, the same on every process (`max_examples`: a seeded subset)."""
  examples = data.sample(data.seqio_examples(task_name, split, None, shuffle=False,
                                             per_host=False), max_examples)
  if not examples:
    raise ValueError(f'Task {task_name!r} has no {split!r} examples.')
  return examples


def _single_task_evaluator(task, examples: Sequence[Example], *, lengths: Mapping[str, int],
                           mode: str, batch_size: int, label_words: Optional[Sequence[str]],
                           encode_label: Optional[Callable[[str], Sequence[int]]] = None
                           ) -> Callable[..., Dict[str, float]]:
  """`task_evaluator` for one `seqio.Task`, on its `examples` at `lengths`."""
  import tasks  # pylint: disable=g-import-not-at-top
  vocab = task.output_features['targets'].vocabulary
  candidates_feature = tasks.registry.candidates_feature(task.name)
  if mode in RANK_MODES and label_words is None and candidates_feature is None:
    label_words = tasks.label_words(task.name)
  fns = getattr(task, 'predict_metric_fns', None) or task.metric_fns

  def evaluate_fn(steps, params, frozen, step):
    del step
    return evaluate(steps, params, frozen, examples, mode=mode, batch_size=batch_size,
                    feature_lengths=lengths, decode=lambda ids: vocab.decode(list(ids)),
                    metric_fns=fns, postprocess=task.postprocess_fn, label_words=label_words,
                    encode=encode_label or (
                        lambda text: list(vocab.encode(text)) + [steps.family.eos_id]),
                    candidates_feature=None if label_words else candidates_feature,
                    rank_metric_fn=tasks.metrics.rank_classification_metrics)
  return evaluate_fn
