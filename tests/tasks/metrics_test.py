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


def test_cb_mean_3class_f1():
  # class 0: tp 1 fp 0 fn 1 -> 2/3; class 1: tp 2 fp 1 fn 0 -> 4/5; class 2: tp 1 fp 0 fn 1 -> 2/3.
  # The invalid -1 is a miss for class 2 and a false positive of no class.
  result = metrics.mean_multiclass_f1(3)([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, -1])
  assert result == {'mean_3class_f1': pytest.approx(100 * (2 / 3 + 4 / 5 + 2 / 3) / 3)}


def test_mean_multiclass_f1_class_never_seen_scores_zero():
  assert metrics.mean_multiclass_f1(3)([0, 1], [0, 1]) == {
      'mean_3class_f1': pytest.approx(100 * 2 / 3)}


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
  assert result['f1'] == pytest.approx(100 * 4 / 6)


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
             'super_glue_cb_v102': {'mean_3class_f1': 20.0, 'accuracy': 60.0, 'p@1': 10.0}}
  out = metrics.mixture_metrics(results)
  assert out['lama_trex_P20/exact_match'] == 50.0
  assert out['super_glue_cb_v102/accuracy'] == 60.0
  assert out['p@1'] == pytest.approx(30.0)  # Shared by every task: (30 + 50 + 10) / 3.
  assert 'exact_match' not in out and 'accuracy' not in out  # Not reported by every task.
  assert out['average'] == pytest.approx((30.0 + 50.0 + 20.0) / 3)  # Each task's first metric.
  with pytest.raises(ValueError, match='at least one task'):
    metrics.mixture_metrics({})


def test_matthews_corrcoef():
  # tp 2, tn 1, fp 1, fn 1 (the invalid -1 on a target 1): (2 - 1) / sqrt(3 * 3 * 2 * 2) = 1/6.
  assert metrics.matthews_corrcoef([1, 1, 0, 0, 1], [1, 1, 1, 0, -1]) == {
      'matthews_corrcoef': pytest.approx(100 / 6)}
  assert metrics.matthews_corrcoef([1, 1], [1, 1]) == {'matthews_corrcoef': 0.0}
  with pytest.raises(ValueError, match='unlabelled'):
    metrics.matthews_corrcoef([-1, 1], [1, 1])


def test_stsb_correlations():
  targets, predictions = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 8.0]
  # Ranks 1 3 2 4 vs 1 2 3 4: Spearman 1 - 6 * 2 / (4 * 15) = 0.8.
  assert metrics.spearman_corrcoef(targets, predictions)['spearman_corrcoef'] == pytest.approx(80)
  # Centred: t (-1.5 -.5 .5 1.5), p (-2.5 -.5 -1.5 4.5): cov 10, |t| sqrt 5, |p| sqrt 29.
  assert metrics.pearson_corrcoef(targets, predictions)['pearson_corrcoef'] == pytest.approx(
      100 * 10 / np.sqrt(5 * 29))


def test_rank_classification_metrics_two_classes():
  # P(class 1) orders the examples 3 < 0 < 1 < 2; positives are 1 and 3.
  scores = [[0.0, -1.0], [0.0, 1.0], [0.0, 2.0], [0.0, -2.0]]
  result = metrics.rank_classification_metrics(scores, [0, 1, 0, 1])
  assert result['accuracy'] == 50.0  # Predicts 0 1 1 0.
  assert result['f1'] == pytest.approx(50.0)  # tp 1, fp 1, fn 1.
  # Of the 4 (positive, negative) pairs only (1, 0) is ordered right.
  assert result['auc-roc'] == pytest.approx(25.0)
  # By descending P(1): 2 (neg), 1 (pos), 0 (neg), 3 (pos): precision 1/2 at each positive.
  assert result['auc-pr'] == pytest.approx(50.0)


def test_rank_classification_auc_counts_ties_half():
  result = metrics.rank_classification_metrics([[0.0, 1.0], [0.0, 1.0]], [0, 1])
  assert result['auc-roc'] == pytest.approx(50.0)
  assert result['auc-pr'] == pytest.approx(50.0)  # One threshold: precision 1/2, recall 1.


def test_rank_classification_metrics_three_classes():
  scores = [[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [0.0, 1.0, 0.5]]
  result = metrics.rank_classification_metrics(scores, [0, 1, 2, 2])
  # Predicts 0 1 2 1: class 0 F1 1, class 1 2/3, class 2 2/3.
  assert result == {'accuracy': 75.0, 'mean_3class_f1': pytest.approx(100 * (1 + 4 / 3) / 3)}
  with pytest.raises(ValueError, match='class ids'):
    metrics.rank_classification_metrics(scores, [0, 1, 2, -1])


SUPER_GLUE_RESULTS = {
    'super_glue_boolq_v102': {'accuracy': 80.0},
    'super_glue_cb_v102': {'mean_3class_f1': 60.0, 'accuracy': 70.0},
    'super_glue_copa_v102': {'accuracy': 90.0},
    'super_glue_multirc_v102': {'f1': 70.0, 'exact_match': 30.0},
    'super_glue_record_v102': {'f1': 80.0, 'em': 70.0},
    'super_glue_rte_v102': {'accuracy': 60.0},
    'super_glue_wic_v102': {'accuracy': 50.0},
    'super_glue_wsc_v102_simple_eval': {'accuracy': 65.0},
    'super_glue_axb_v102': {'matthews_corrcoef': 10.0},  # Diagnostics: not in the score.
}


def test_superglue_score_averages_each_tasks_metrics_first():
  # CB (60 + 70) / 2 = 65, MultiRC (70 + 30) / 2 = 50, ReCoRD (80 + 70) / 2 = 75.
  expected = (80 + 65 + 90 + 50 + 75 + 60 + 50 + 65) / 8
  assert metrics.superglue_score(SUPER_GLUE_RESULTS) == pytest.approx(expected)
  by_task = metrics.benchmark_scores(SUPER_GLUE_RESULTS, 'super_glue')
  assert by_task['cb'] == 65.0 and by_task['multirc'] == 50.0 and by_task['record'] == 75.0
  # Short names and taskless task names work alike.
  short = {'boolq': {'accuracy': 80.0}, 'super_glue_cb_v102_taskless': SUPER_GLUE_RESULTS[
      'super_glue_cb_v102'], **{k.split('_')[2]: v for k, v in SUPER_GLUE_RESULTS.items()
                                if 'boolq' not in k and '_cb_' not in k}}
  assert metrics.superglue_score(short) == pytest.approx(expected)


def test_superglue_score_from_predictions():
  """CB, MultiRC and ReCoRD metrics computed by the task metrics, then combined."""
  cb = {**metrics.mean_multiclass_f1(3)([0, 1, 2, 2], [0, 1, 2, 1]),
        **metrics.accuracy([0, 1, 2, 2], [0, 1, 2, 1])}
  # CB: F1 per class 1, 2/3, 2/3; accuracy 75.
  assert cb == {'mean_3class_f1': pytest.approx(100 * 7 / 9), 'accuracy': 75.0}
  multirc = metrics.multirc([{'value': 1, 'group': (0, 0)}, {'value': 0, 'group': (0, 0)},
                             {'value': 1, 'group': (0, 1)}],
                            [{'value': 1}, {'value': 0}, {'value': 0}])
  assert multirc == {'f1': pytest.approx(100 * 2 / 3), 'exact_match': 50.0}
  record = metrics.record([{'answers': ['Paris'], 'group': (0, 0)},
                           {'answers': ['New York City'], 'group': (0, 1)}], ['Paris', 'New York'])
  assert record == {'em': 50.0, 'f1': pytest.approx(100 * (1 + 0.8) / 2)}
  results = {'boolq': {'accuracy': 100.0}, 'cb': cb, 'copa': {'accuracy': 100.0},
             'multirc': multirc, 'record': record, 'rte': {'accuracy': 100.0},
             'wic': {'accuracy': 100.0}, 'wsc': {'accuracy': 100.0}}
  task_scores = [100, (700 / 9 + 75) / 2, 100, (200 / 3 + 50) / 2, (50 + 90) / 2, 100, 100, 100]
  assert metrics.superglue_score(results) == pytest.approx(np.mean(task_scores))


def test_superglue_score_names_what_is_missing():
  results = dict(SUPER_GLUE_RESULTS)
  del results['super_glue_copa_v102']
  results['super_glue_cb_v102'] = {'macro_f1': 60.0, 'accuracy': 70.0}
  with pytest.raises(KeyError, match='cb/mean_3class_f1, copa/accuracy'):
    metrics.superglue_score(results)
  with pytest.raises(KeyError, match="'wsc' is given twice"):
    metrics.superglue_score({**SUPER_GLUE_RESULTS, 'super_glue_wsc_v102': {'accuracy': 1.0}})


def test_glue_score():
  results = {
      'glue_cola_v2': {'matthews_corrcoef': 50.0}, 'glue_sst2_v2': {'accuracy': 90.0},
      'glue_mrpc_v2': {'f1': 90.0, 'accuracy': 80.0},
      'glue_stsb_v2': {'pearson_corrcoef': 88.0, 'spearman_corrcoef': 86.0},
      'glue_qqp_v2': {'f1': 70.0, 'accuracy': 90.0},
      'glue_mnli_matched_v2': {'accuracy': 84.0}, 'glue_mnli_mismatched_v2': {'accuracy': 86.0},
      'glue_qnli_v2': {'accuracy': 91.0}, 'glue_rte_v2': {'accuracy': 70.0},
      'glue_wnli_v2': {'accuracy': 56.0},
      'super_glue_rte_v102': {'accuracy': 0.0},  # Another benchmark's RTE: ignored.
  }
  # MRPC 85, STS-B 87, QQP 80, MNLI 85.
  without_wnli = [50, 90, 85, 87, 80, 85, 91, 70]
  assert metrics.glue_score(results, with_wnli=False) == pytest.approx(np.mean(without_wnli))
  assert metrics.glue_score(results) == pytest.approx(np.mean(without_wnli + [56]))


@pytest.mark.parametrize('generated,referent,label', [
    ('the fuzzy bunny', 'bunny', 1),      # Superset, determiner ignored.
    ('Bunny', 'the fuzzy bunny', 1),      # Subset, case ignored.
    ("Bob", "Bob's hat", 0),              # Possessive on one side only.
    ('the', 'Bob', -1),                   # Nothing but determiners: no prediction.
    ('Tom', 'Bob', 0),
])
def test_wsc_simple_postprocessor(generated, referent, label):
  example = {'targets_pretokenized': referent, 'label': 1}
  assert postprocessors.wsc_simple(generated, example=example) == label
  assert postprocessors.wsc_simple(referent, example=example, is_target=True) == 1
