"""Metrics and postprocessors against hand-computed values."""
import numpy as np
import pytest

from tasks import metrics
from tasks import postprocessors


def test_accuracy():
  assert metrics.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == {'accuracy': 75.0}


def test_accuracy_rejects_mismatched_lengths():
  with pytest.raises(ValueError, match='3 targets but 2 predictions'):
    metrics.accuracy([0, 1, 1], [0, 1])


def test_f1_counts_invalid_predictions_as_wrong():
  # The -1 (target 0) becomes a false positive: tp=2 (0, 4), fp=2 (2, 3), fn=1 (1).
  result = metrics.f1_with_invalid([1, 1, 0, 0, 1], [1, 0, 1, -1, 1])
  assert result['f1'] == pytest.approx(100 * 2 * 2 / (2 * 2 + 2 + 1))


def test_cb_macro_f1():
  # class 0: tp 1 fp 0 fn 1 -> 2/3; class 1: tp 2 fp 1 fn 0 -> 4/5; class 2: tp 1 fp 0 fn 1 -> 2/3.
  # The invalid -1 is a miss for class 2 and a false positive of no class.
  result = metrics.macro_f1(3)([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, -1])
  assert result == {'macro_f1': pytest.approx(100 * (2 / 3 + 4 / 5 + 2 / 3) / 3)}


def test_macro_f1_class_never_seen_scores_zero():
  assert metrics.macro_f1(3)([0, 1], [0, 1]) == {'macro_f1': pytest.approx(100 * 2 / 3)}


def test_multirc_groups_by_paragraph_and_question():
  # Question idx 0 occurs in paragraphs 0 and 1: they are different questions.
  groups = [(0, 0), (0, 0), (0, 0), (0, 1), (0, 1), (1, 0)]
  values = [1, 0, 1, 0, 1, 0]
  predicted = [1, 0, 1, 0, 0, 1]
  targets = [{'value': v, 'group': g} for v, g in zip(values, groups)]
  predictions = [{'value': p} for p in predicted]
  result = metrics.multirc(targets, predictions)
  # Questions (0,0) right, (0,1) wrong, (1,0) wrong; by question idx alone it would be 0/2.
  assert result['exact_match'] == pytest.approx(100 / 3)
  # All 6 options: tp 2, fp 1, fn 1.
  assert result['f1a'] == pytest.approx(100 * 4 / 6)


def test_record_max_over_answers_and_one_score_per_query():
  targets = [
      {'answers': ['Benazir Bhutto', 'Bhutto'], 'group': (7, 0)},
      {'answers': ['Benazir Bhutto', 'Bhutto'], 'group': (7, 0)},  # Same query, 2nd answer.
      {'answers': ['New York City'], 'group': (7, 1)},
  ]
  # 'the Bhutto' normalises to 'bhutto' = the 2nd answer; the duplicate's prediction is ignored.
  predictions = ['the Bhutto', 'wrong', 'New York']
  result = metrics.record(targets, predictions)
  assert result['em'] == pytest.approx(50.0)
  # F1('new york', 'new york city'): precision 1, recall 2/3 -> 0.8.
  assert result['f1'] == pytest.approx(100 * (1 + 0.8) / 2)


def test_record_without_gold_answers_is_an_error():
  with pytest.raises(ValueError, match='No ReCoRD query has gold answers'):
    metrics.record([{'answers': [], 'group': (0, 0)}], ['x'])


def test_squad_normalisation():
  assert metrics.normalize_answer('The  Eiffel-Tower!') == 'eiffeltower'
  assert metrics.normalize_answer('an apple a day') == 'apple day'
  assert metrics.token_f1('a b c', 'c d') == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


def test_lama_p_at_1_is_macro_over_relations():
  targets = [{'object': 'Paris', 'relation': 'P19'}, {'object': 'Rome', 'relation': 'P19'},
             {'object': 'Oslo', 'relation': 'P19'}, {'object': 'French', 'relation': 'P103'}]
  predictions = ['Paris', 'Rome', 'Bergen', 'french']
  result = metrics.lama(targets, predictions)
  # P19: 2/3, P103: 0 (case differs) -> macro 1/3; micro would be 1/2.
  assert result['p@1'] == pytest.approx(100 / 3)
  # Lenient matching forgives the case: P19 2/3, P103 1.
  assert result['exact_match'] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_macro_average_over_tasks():
  results = {'lama_trex_P19': {'p@1': 30.0}, 'lama_trex_P20': {'p@1': 50.0}}
  assert metrics.macro_average(results, 'p@1') == 40.0
  with pytest.raises(KeyError, match='lama_trex_P20'):
    metrics.macro_average({'lama_trex_P19': {'p@1': 1.0}, 'lama_trex_P20': {}}, 'p@1')


def test_rank_classification_picks_the_most_likely_candidate():
  scores = np.array([[-1.0, -2.0], [-3.0, -0.5]])
  assert metrics.rank_classification(scores, ['negative', 'positive']) == ['negative', 'positive']
  # Length normalisation: -4 over 4 tokens beats -2 over 1 token.
  assert metrics.rank_classification([[-2.0, -4.0]], ['a', 'b c d e'],
                                     candidate_lengths=[1, 4]) == ['b c d e']
  with pytest.raises(ValueError, match=r'expected \[num_examples, 3\]'):
    metrics.rank_classification(scores, ['a', 'b', 'c'])


def test_precision_at_k():
  scores = np.array([[0.1, 0.5, 0.2], [0.9, 0.0, 0.3], [0.2, 0.1, 0.7]])
  # Top-1: hit, miss, miss. Top-2 adds the 2nd row's runner-up (0.3); the 3rd's gold is last.
  assert metrics.precision_at_k(scores, [1, 2, 1]) == pytest.approx(100 / 3)
  assert metrics.precision_at_k(scores, [1, 2, 1], k=2) == pytest.approx(200 / 3)
  # A gold object outside the candidates (-1) is always a miss.
  assert metrics.precision_at_k(scores, [-1, 0, 2], k=3) == pytest.approx(200 / 3)


def test_postprocessors_accept_bytes_and_str():
  assert postprocessors.class_id(b'positive', label_names=('negative', 'positive')) == 1
  assert postprocessors.class_id('maybe', label_names=('negative', 'positive')) == -1
  example = {'idx/paragraph': np.int32(3), 'idx/question': np.int32(5)}
  assert postprocessors.multirc('True', example=example, is_target=True) == {
      'value': 1, 'group': (3, 5)}
  assert postprocessors.multirc('Yes', example=example) == {'value': -1}
  record_example = {'answers': np.array([b'Bhutto', b'Benazir Bhutto'], dtype=object),
                    'idx/passage': np.int32(1), 'idx/query': np.int32(2)}
  assert postprocessors.record('Bhutto', example=record_example, is_target=True) == {
      'answers': ['Bhutto', 'Benazir Bhutto'], 'group': (1, 2)}
  assert postprocessors.lama(b'Paris', example={'predicate_id': b'P19'}, is_target=True) == {
      'object': 'Paris', 'relation': 'P19'}


def test_mixture_metrics_reports_each_task_and_the_macro_averages():
  results = {'lama_trex_P19': {'p@1': 30.0, 'exact_match': 40.0},
             'lama_trex_P20': {'p@1': 50.0, 'exact_match': 50.0},
             'super_glue_cb_v102': {'macro_f1': 20.0, 'accuracy': 60.0, 'p@1': 10.0}}
  out = metrics.mixture_metrics(results)
  assert out['lama_trex_P20/exact_match'] == 50.0
  assert out['super_glue_cb_v102/accuracy'] == 60.0
  assert out['p@1'] == pytest.approx(30.0)  # Shared by every task: (30 + 50 + 10) / 3.
  assert 'exact_match' not in out and 'accuracy' not in out  # Not reported by every task.
  assert out['average'] == pytest.approx((30.0 + 50.0 + 20.0) / 3)  # Each task's first metric.
  with pytest.raises(ValueError, match='at least one task'):
    metrics.mixture_metrics({})
