"""Metrics as the official scorers compute them, on postprocessed values.

Every metric is a SeqIO metric function, `fn(targets, predictions) -> {name:
value}`, on the outputs of the task's postprocessor (`postprocessors.py`), and
reports percentages (0-100) as T5 does. Plain numpy/python: no TensorFlow.

  accuracy           mean(target == prediction)
  f1                 binary F1 of class 1 (QQP's 'duplicate'); an invalid prediction
                     (not 0/1) counts as the wrong class
  mean_3class_f1     CB: unweighted mean over the 3 classes of per-class F1
  matthews_corrcoef  CoLA (and AX-b)
  pearson_corrcoef, spearman_corrcoef   STS-B
  MultiRC            f1: binary F1 over all answer options (F1a); exact_match: the
                     fraction of questions whose options are all right (EM0)
  ReCoRD             em / f1: max over the gold answers, SQuAD normalisation, each query once
  LAMA               p@1: Precision@1, macro-averaged over relations
  mixtures           each task's metrics and their macro averages (`mixture_metrics`)

The names are T5's (`t5/evaluation/metrics.py`), so results keyed on T5's
names (`super_glue_cb_v102/mean_3class_f1`, ...) read ours unchanged.
`superglue_score` and `glue_score` combine per-task results into the
leaderboards' single number.

Rank classification, the way to get P@1 and class predictions without decoding,
is `rank_classification`: log-likelihood scores of every candidate -> the best
candidate's text, which then goes through the task's postprocessor like a
decoded prediction. `rank_classification_metrics` reports, from the same
scores, what T5's rank-classification metric reports (accuracy, F1, AUC).
"""
import collections
import re
import string
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

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


def mean_multiclass_f1(num_classes: int) -> MetricFn:
  """A metric fn giving {'mean_<num_classes>class_f1'}: the unweighted mean of the per-class F1.

  Classes are the ids 0..num_classes-1; a prediction outside them (-1, an
  invalid output) is a miss for its target's class and a false positive of none.
  T5's name for CB's F1 ('mean_3class_f1').
  """
  key = f'mean_{num_classes}class_f1'

  def mean_multiclass_f1_fn(targets: Sequence[int], predictions: Sequence[int]) -> Dict[str, float]:
    _check_lengths(targets, predictions)
    return {key: _mean_class_f1(targets, predictions, num_classes)}

  return mean_multiclass_f1_fn


def _mean_class_f1(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> float:
  t = np.asarray(targets, np.int64)
  p = np.asarray(predictions, np.int64)
  per_class = [_f1(int(np.sum((p == c) & (t == c))), int(np.sum((p == c) & (t != c))),
                   int(np.sum((p != c) & (t == c)))) for c in range(num_classes)]
  return 100 * float(np.mean(per_class))


def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]) -> Dict[str, float]:
  """{'matthews_corrcoef'}: Matthews' correlation x 100 (CoLA, AX-b); 0 when undefined.

  Any prediction other than 0/1 (an invalid output) counts as the wrong class.
  """
  _check_lengths(targets, predictions)
  t = np.asarray(targets, np.int64)
  if np.any((t != 0) & (t != 1)):
    raise ValueError('matthews_corrcoef needs 0/1 targets; got others (an unlabelled split?).')
  p = np.asarray(predictions, np.int64)
  p = np.where((p == 0) | (p == 1), p, 1 - t)
  tp = float(np.sum((p == 1) & (t == 1)))
  tn = float(np.sum((p == 0) & (t == 0)))
  fp = float(np.sum((p == 1) & (t == 0)))
  fn = float(np.sum((p == 0) & (t == 1)))
  denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return {'matthews_corrcoef': 100 * float((tp * tn - fp * fn) / denominator) if denominator else 0.0}


def pearson_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> Dict[str, float]:
  """{'pearson_corrcoef'} x 100 (STS-B)."""
  _check_lengths(targets, predictions)
  return {'pearson_corrcoef': 100 * float(np.corrcoef(np.asarray(targets, np.float64),
                                                      np.asarray(predictions, np.float64))[0, 1])}


def spearman_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> Dict[str, float]:
  """{'spearman_corrcoef'} x 100 (STS-B): Pearson's of the ranks, ties sharing their mean rank."""
  _check_lengths(targets, predictions)
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return {'spearman_corrcoef': 100 * float(np.corrcoef(stats.rankdata(targets),
                                                       stats.rankdata(predictions))[0, 1])}


def multirc(targets: Sequence[Mapping[str, Any]],
            predictions: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
  """MultiRC's F1a over all answer options and exact match per question.

  Args:
    targets: {'value': 0/1, 'group': (paragraph idx, question idx)} per option.
    predictions: {'value': 0/1/-1} per option.

  Returns:
    {'f1', 'exact_match'} (T5's names): F1 over all answer options (the
    official F1a), and the % of questions all of whose options are predicted
    right (the official EM0).
  """
  _check_lengths(targets, predictions)
  values = [t['value'] for t in targets]
  predicted = [p['value'] for p in predictions]
  right_by_question = collections.defaultdict(list)
  for t, p in zip(targets, predictions):
    right_by_question[tuple(t['group'])].append(t['value'] == p['value'])
  exact = [all(r) for r in right_by_question.values()]
  return {'f1': _binary_f1(values, predicted), 'exact_match': 100 * float(np.mean(exact))}


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


def _roc_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
  """Area under the ROC curve: P(a positive outscores a negative), ties counting half."""
  order = np.argsort(scores, kind='stable')
  scores, labels, weights = scores[order], labels[order], weights[order]
  _, first, inverse = np.unique(scores, return_index=True, return_inverse=True)
  negatives = weights * (1 - labels)
  below = np.concatenate([[0.0], np.cumsum(negatives)])[first][inverse]  # Negatives strictly lower.
  tied = np.bincount(inverse, weights=negatives)[inverse]
  positive_weight, negative_weight = np.sum(weights * labels), np.sum(negatives)
  if not positive_weight or not negative_weight:
    return float('nan')  # Undefined with one class (sklearn raises).
  return float(np.sum(weights * labels * (below + tied / 2)) / (positive_weight * negative_weight))


def _average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
  """Average precision: sum over score thresholds (high to low) of precision x recall gained."""
  order = np.argsort(-scores, kind='stable')
  scores, labels, weights = scores[order], labels[order], weights[order]
  last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
  tp = np.cumsum(weights * labels)[last_of_tie]
  predicted = np.cumsum(weights)[last_of_tie]
  if not tp[-1]:
    return float('nan')
  recall_gain = np.diff(np.r_[0.0, tp / tp[-1]])
  return float(np.sum(recall_gain * tp / predicted))


def rank_classification_metrics(scores: np.ndarray, target_ids: Sequence[int], *,
                                weights: Optional[Sequence[float]] = None) -> Dict[str, float]:
  """What T5's `rank_classification` metric reports, from candidate scores.

  The prediction is the best-scoring candidate. Two classes: accuracy, 'f1' of
  class 1, and 'auc-roc' / 'auc-pr' of class 1's probability (softmax over the
  two scores). More classes: accuracy and 'mean_<n>class_f1'. All x 100.
  Pass length-normalised scores (`prompt_recycling.evaluation.reduce_scores`)
  for T5's `normalize_by_target_length=True`.

  Args:
    scores: [num_examples, num_classes] log-likelihoods (or normalised scores).
    target_ids: [num_examples] the gold class of each example.
    weights: optional [num_examples] example weights (T5's 'weight'; default 1).
  """
  scores = np.asarray(scores, np.float64)
  target_ids = np.asarray(target_ids, np.int64)
  if scores.ndim != 2 or target_ids.shape != (scores.shape[0],):
    raise ValueError(f'scores {scores.shape} and target_ids {target_ids.shape} do not match '
                     '([num_examples, num_classes] and [num_examples]).')
  if np.any((target_ids < 0) | (target_ids >= scores.shape[1])):
    raise ValueError(f'target_ids must be class ids in [0, {scores.shape[1]}) (an unlabelled '
                     'split cannot be scored).')
  weights = np.ones(len(target_ids)) if weights is None else np.asarray(weights, np.float64)
  num_classes = scores.shape[1]
  predictions = scores.argmax(axis=1)
  result = {'accuracy': 100 * float(np.average(predictions == target_ids, weights=weights))}
  if num_classes > 2:
    per_class = []
    for c in range(num_classes):
      tp = np.sum(weights * ((predictions == c) & (target_ids == c)))
      fp = np.sum(weights * ((predictions == c) & (target_ids != c)))
      fn = np.sum(weights * ((predictions != c) & (target_ids == c)))
      per_class.append(_f1(tp, fp, fn))
    result[f'mean_{num_classes}class_f1'] = 100 * float(np.mean(per_class))
    return result
  tp = np.sum(weights * ((predictions == 1) & (target_ids == 1)))
  fp = np.sum(weights * ((predictions == 1) & (target_ids == 0)))
  fn = np.sum(weights * ((predictions == 0) & (target_ids == 1)))
  result['f1'] = 100 * _f1(tp, fp, fn)
  shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
  positive_probability = shifted[:, 1] / shifted.sum(axis=1)
  result['auc-roc'] = 100 * _roc_auc(target_ids, positive_probability, weights)
  result['auc-pr'] = 100 * _average_precision(target_ids, positive_probability, weights)
  return result


# --- Benchmark scores ----------------------------------------------------------

# (benchmark task, task whose results hold the metric, metric), as T5's
# `t5/evaluation/eval_utils.py: METRIC_NAMES`: metrics of one benchmark task are
# averaged first, then the tasks. MNLI is the mean of matched and mismatched.
SUPER_GLUE_SCORE = (
    ('boolq', 'boolq', 'accuracy'),
    ('cb', 'cb', 'mean_3class_f1'), ('cb', 'cb', 'accuracy'),
    ('copa', 'copa', 'accuracy'),
    ('multirc', 'multirc', 'f1'), ('multirc', 'multirc', 'exact_match'),
    ('record', 'record', 'f1'), ('record', 'record', 'em'),
    ('rte', 'rte', 'accuracy'),
    ('wic', 'wic', 'accuracy'),
    ('wsc', 'wsc', 'accuracy'),
)
GLUE_SCORE = (
    ('cola', 'cola', 'matthews_corrcoef'),
    ('sst2', 'sst2', 'accuracy'),
    ('mrpc', 'mrpc', 'f1'), ('mrpc', 'mrpc', 'accuracy'),
    ('stsb', 'stsb', 'pearson_corrcoef'), ('stsb', 'stsb', 'spearman_corrcoef'),
    ('qqp', 'qqp', 'f1'), ('qqp', 'qqp', 'accuracy'),
    ('mnli', 'mnli_matched', 'accuracy'), ('mnli', 'mnli_mismatched', 'accuracy'),
    ('qnli', 'qnli', 'accuracy'),
    ('rte', 'rte', 'accuracy'),
    ('wnli', 'wnli', 'accuracy'),
)

_BENCHMARK_TASK = {
    'super_glue': re.compile(r'^(?:super_glue_)?([a-z0-9]+?)(?:_v102)?(?:_simple_eval)?(?:_taskless)?$'),
    'glue': re.compile(r'^(?:glue_)?([a-z0-9_]+?)(?:_v2)?(?:_taskless)?$'),
}


def benchmark_scores(results: Mapping[str, Mapping[str, float]], benchmark: str, *,
                     with_wnli: bool = True) -> Dict[str, float]:
  """Each benchmark task's score and their mean ('average'), as the leaderboard computes them.

  Args:
    results: task -> its metrics (T5's names). A task is named by its
      benchmark name ('cb', 'mnli_matched') or by a task registered here
      ('super_glue_cb_v102', 'super_glue_wsc_v102_simple_eval', 'glue_mrpc_v2',
      their `_taskless` variants). Other entries (diagnostics, DPR) are ignored.
    benchmark: 'super_glue' (8 tasks) or 'glue' (9, MNLI counted once).
    with_wnli: GLUE only; False gives T5's "GLUE average", which omits WNLI.

  Raises:
    KeyError: naming each missing task or metric, or a task given twice.
  """
  members = {'super_glue': SUPER_GLUE_SCORE, 'glue': GLUE_SCORE}[benchmark]
  if not with_wnli:
    members = tuple(m for m in members if m[0] != 'wnli')
  wanted = {task for _, task, _ in members}
  by_task: Dict[str, Tuple[str, Mapping[str, float]]] = {}
  for name, metrics in results.items():
    match = _BENCHMARK_TASK[benchmark].match(name)
    if benchmark == 'glue' and name.startswith('super_glue'):
      continue
    task = match.group(1) if match else None
    if task not in wanted:
      continue
    if task in by_task:
      raise KeyError(f'{benchmark} task {task!r} is given twice: as {by_task[task][0]!r} and '
                     f'{name!r}; keep one.')
    by_task[task] = (name, metrics)
  missing = [f'{task}/{metric}' for _, task, metric in members
             if task not in by_task or metric not in by_task[task][1]]
  if missing:
    raise KeyError(f'The {benchmark} score needs {", ".join(missing)}; results have '
                   f'{sorted(results)}.')
  groups = collections.defaultdict(list)
  for group, task, metric in members:
    groups[group].append(float(by_task[task][1][metric]))
  scores = {group: float(np.mean(values)) for group, values in groups.items()}
  scores['average'] = float(np.mean(list(scores.values())))
  return scores


def superglue_score(results: Mapping[str, Mapping[str, float]]) -> float:
  """The SuperGLUE score: the mean over its 8 tasks of each task's mean metric.

  CB counts (mean_3class_f1 + accuracy) / 2, MultiRC (f1 + exact_match) / 2,
  ReCoRD (f1 + em) / 2; the diagnostics AX-b and AX-g are not in the score.
  See `benchmark_scores` for the accepted task names.
  """
  return benchmark_scores(results, 'super_glue')['average']


def glue_score(results: Mapping[str, Mapping[str, float]], *, with_wnli: bool = True) -> float:
  """The GLUE score: mean over its tasks of each task's mean metric.

  MRPC and QQP count (f1 + accuracy) / 2, STS-B (Pearson + Spearman) / 2, MNLI
  (matched + mismatched) / 2; AX is not in the score. The leaderboard counts
  WNLI (9 tasks); `with_wnli=False` is T5's "GLUE average" (8).
  """
  return benchmark_scores(results, 'glue', with_wnli=with_wnli)['average']
