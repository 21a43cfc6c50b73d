"""Metrics as the official scorers compute them, on postprocessed values.

Every metric is a SeqIO metric function, `fn(targets, predictions) -> {name:
value}`, on the outputs of the task's postprocessor (`postprocessors.py`), and
reports percentages (0-100) as T5 does. Plain numpy/python: no TensorFlow.

  accuracy       mean(target == prediction)
  f1             binary F1 of class 1 (QQP's 'duplicate'); an invalid prediction
                 (not 0/1) counts as the wrong class
  macro_f1       CB: unweighted mean over the 3 classes of per-class F1
  MultiRC        f1a: binary F1 over all answer options; exact_match: the fraction
                 of questions (paragraph idx, question idx) whose options are all right
  ReCoRD         em / f1: max over the gold answers, SQuAD normalisation, each query once
  LAMA           p@1: Precision@1, macro-averaged over relations
  mixtures       each task's metrics and their macro averages (`mixture_metrics`)

Rank classification, the way to get P@1 and class predictions without decoding,
is `rank_classification`: log-likelihood scores of every candidate -> the best
candidate's text, which then goes through the task's postprocessor like a
decoded prediction.
"""
import collections
import re
import string
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

MetricFn = Callable[[Sequence[Any], Sequence[Any]], Dict[str, float]]


def _check_lengths(targets: Sequence[Any], predictions: Sequence[Any]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f'{len(targets)} targets but {len(predictions)} predictions.')
  if not len(targets):  # pylint: disable=g-explicit-length-test
    raise ValueError('No examples to score.')


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> Dict[str, float]:
  """{'accuracy': % of predictions equal to their target}."""
  _check_lengths(targets, predictions)
  return {'accuracy': 100 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


def _f1(tp: int, fp: int, fn: int) -> float:
  """F1 from counts; 0 when the class is never predicted nor present (sklearn's zero_division=0)."""
  return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def _binary_f1(targets: Sequence[int], predictions: Sequence[int]) -> float:
  """F1 of class 1 over 0/1 targets; a prediction other than 0/1 counts as the wrong class."""
  t = np.asarray(targets, np.int64)
  p = np.asarray(predictions, np.int64)
  p = np.where((p == 0) | (p == 1), p, 1 - t)
  tp = int(np.sum((p == 1) & (t == 1)))
  fp = int(np.sum((p == 1) & (t == 0)))
  fn = int(np.sum((p == 0) & (t == 1)))
  return 100 * _f1(tp, fp, fn)


def f1_with_invalid(targets: Sequence[int], predictions: Sequence[int]) -> Dict[str, float]:
  """{'f1': binary F1 of class 1}, invalid predictions (not 0/1) counted as wrong."""
  _check_lengths(targets, predictions)
  return {'f1': _binary_f1(targets, predictions)}


def macro_f1(num_classes: int) -> MetricFn:
  """A metric fn giving {'macro_f1'}: the unweighted mean of the per-class F1.

  Classes are the ids 0..num_classes-1; a prediction outside them (-1, an
  invalid output) is a miss for its target's class and a false positive of none.
  """

  def macro_f1_fn(targets: Sequence[int], predictions: Sequence[int]) -> Dict[str, float]:
    _check_lengths(targets, predictions)
    t = np.asarray(targets, np.int64)
    p = np.asarray(predictions, np.int64)
    per_class = [_f1(int(np.sum((p == c) & (t == c))), int(np.sum((p == c) & (t != c))),
                     int(np.sum((p != c) & (t == c)))) for c in range(num_classes)]
    return {'macro_f1': 100 * float(np.mean(per_class))}

  return macro_f1_fn


def multirc(targets: Sequence[Mapping[str, Any]],
            predictions: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
  """MultiRC's F1a over all answer options and exact match per question.

  Args:
    targets: {'value': 0/1, 'group': (paragraph idx, question idx)} per option.
    predictions: {'value': 0/1/-1} per option.

  Returns:
    {'f1a', 'exact_match'}: exact match is the % of questions all of whose
    options are predicted right (the official EM0).
  """
  _check_lengths(targets, predictions)
  values = [t['value'] for t in targets]
  predicted = [p['value'] for p in predictions]
  right_by_question = collections.defaultdict(list)
  for t, p in zip(targets, predictions):
    right_by_question[tuple(t['group'])].append(t['value'] == p['value'])
  exact = [all(r) for r in right_by_question.values()]
  return {'f1a': _binary_f1(values, predicted), 'exact_match': 100 * float(np.mean(exact))}


# --- SQuAD-style answer matching (ReCoRD, decoded LAMA) -------------------------

_ARTICLES = re.compile(r'\b(a|an|the)\b')
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lowercase, drop punctuation and articles, squash whitespace."""
  text = ''.join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return ' '.join(_ARTICLES.sub(' ', text).split())


def token_f1(prediction: str, answer: str) -> float:
  """SQuAD's bag-of-tokens F1 between two normalised answers (in [0, 1])."""
  pred_tokens, gold_tokens = prediction.split(), answer.split()
  common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
  overlap = sum(common.values())
  if not overlap:
    return 0.0
  precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def record(targets: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> Dict[str, float]:
  """ReCoRD's exact match and token F1, each the max over the query's gold answers.

  Training-style data has one example per gold answer; each query (`group`)
  is scored once, on its first example.

  Args:
    targets: {'answers': [gold strings], 'group': (passage idx, query idx)}.
    predictions: predicted answer strings.

  Raises:
    ValueError: if no query has a gold answer (e.g. the unlabelled test split).
  """
  _check_lengths(targets, predictions)
  seen, em, f1 = set(), [], []
  for target, prediction in zip(targets, predictions):
    group = tuple(target['group'])
    if group in seen:
      continue
    seen.add(group)
    answers = [normalize_answer(a) for a in target['answers']]
    if not answers:
      continue
    prediction = normalize_answer(prediction)
    em.append(max(float(prediction == a) for a in answers))
    f1.append(max(token_f1(prediction, a) for a in answers))
  if not em:
    raise ValueError('No ReCoRD query has gold answers to score against (test split?).')
  return {'em': 100 * float(np.mean(em)), 'f1': 100 * float(np.mean(f1))}


# --- LAMA ---------------------------------------------------------------------

def lama(targets: Sequence[Mapping[str, str]], predictions: Sequence[str]) -> Dict[str, float]:
  """LAMA Precision@1 and exact match, macro-averaged over relations.

  With predictions from rank classification over the candidate objects
  (`rank_classification` with `tasks.label_words(task)`), 'p@1' is LAMA's
  Precision@1. With decoded predictions it is the strict exact match of the
  generated text; 'exact_match' is the lenient one (SQuAD normalisation).

  Args:
    targets: {'object': gold object, 'relation': relation id}.
    predictions: predicted object strings.

  Returns:
    {'p@1', 'exact_match'}, each the mean over relations of the relation's %.
  """
  _check_lengths(targets, predictions)
  strict, lenient = collections.defaultdict(list), collections.defaultdict(list)
  for target, prediction in zip(targets, predictions):
    gold, relation = target['object'], target['relation']
    strict[relation].append(prediction.strip() == gold.strip())
    lenient[relation].append(normalize_answer(prediction) == normalize_answer(gold))
  return {'p@1': 100 * float(np.mean([np.mean(v) for v in strict.values()])),
          'exact_match': 100 * float(np.mean([np.mean(v) for v in lenient.values()]))}


def macro_average(results: Mapping[str, Mapping[str, float]], metric: str) -> float:
  """The mean of `metric` over tasks' results, e.g. LAMA P@1 over the 41 relation tasks.

  Args:
    results: task name -> that task's metrics.
    metric: the metric to average, e.g. 'p@1'.

  Raises:
    KeyError: naming the tasks without that metric.
  """
  missing = sorted(name for name, r in results.items() if metric not in r)
  if missing or not results:
    raise KeyError(f'{metric!r} is missing from the results of '
                   f'{missing or "every task (none given)"}.')
  return float(np.mean([r[metric] for r in results.values()]))


def mixture_metrics(results: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
  """A mixture's evaluation from its tasks' results: each task's, and their macro averages.

  Args:
    results: task name -> that task's metrics (in the order its metric
      functions report them; the first is the task's headline metric).

  Returns:
    '<task>/<metric>' for every task's metric; each metric every task reports,
    macro-averaged under its own name (LAMA: 'p@1' over the 41 relations);
    and 'average', the macro average of each task's headline metric (LAMA:
    P@1; SuperGLUE: accuracy, CB's macro-F1, MultiRC's F1a, ReCoRD's EM).
    Deviation, named 'headline average': T5's SuperGLUE score first averages
    the two metrics of CB, MultiRC and ReCoRD; one metric per task keeps LAMA's
    average its P@1. Every task's metrics are reported, so either is at hand.
  """
  if not results:
    raise ValueError('A mixture evaluation needs the results of at least one task.')
  out = {f'{name}/{k}': float(v) for name, r in results.items() for k, v in r.items()}
  shared = set.intersection(*(set(r) for r in results.values()))
  out.update({k: macro_average(results, k) for k in sorted(shared)})
  out['average'] = float(np.mean([next(iter(r.values())) for r in results.values()]))
  return out


# --- Rank classification -----------------------------------------------------

def rank_classification(scores: np.ndarray, candidates: Sequence[str], *,
                        candidate_lengths: Optional[Sequence[int]] = None) -> List[str]:
  """The best-scoring candidate's text for each example.

  Args:
    scores: [num_examples, num_candidates] float, the log-likelihood of each
      candidate target given each example's input.
    candidates: the candidates' texts (a task's `label_words`), in column order.
    candidate_lengths: optional [num_candidates] target lengths in tokens; if
      given, scores are divided by them (length-normalised ranking, fairer
      among multi-token candidates of different lengths).

  Returns:
    [num_examples] candidate texts, ready for the task's postprocessor.
  """
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2 or scores.shape[1] != len(candidates):
    raise ValueError(f'scores have shape {scores.shape}; expected [num_examples, '
                     f'{len(candidates)}] for {len(candidates)} candidates.')
  if candidate_lengths is not None:
    lengths = np.asarray(candidate_lengths, np.float64)
    if lengths.shape != (len(candidates),) or np.any(lengths <= 0):
      raise ValueError(f'candidate_lengths must be {len(candidates)} positive numbers; '
                       f'got {list(candidate_lengths)}.')
    scores = scores / lengths
  return [candidates[i] for i in scores.argmax(axis=1)]


def precision_at_k(scores: np.ndarray, target_ids: Sequence[int], k: int = 1) -> float:
  """% of examples whose target candidate is among the k best-scoring.

  Args:
    scores: [num_examples, num_candidates] log-likelihoods.
    target_ids: [num_examples] column of each example's gold candidate (-1 if
      the gold is not a candidate: always a miss, as in LAMA).
    k: how many of the best candidates count.
  """
  scores = np.asarray(scores, np.float64)
  target_ids = np.asarray(target_ids, np.int64)
  if scores.ndim != 2 or target_ids.shape != (scores.shape[0],):
    raise ValueError(f'scores {scores.shape} and target_ids {target_ids.shape} do not match '
                     '([num_examples, num_candidates] and [num_examples]).')
  top = np.argsort(-scores, axis=1, kind='stable')[:, :k]
  hits = (top == target_ids[:, None]).any(axis=1) & (target_ids >= 0)
  return 100 * float(np.mean(hits))
