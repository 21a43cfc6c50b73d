"""Rank classification in `prompt_recycling.evaluation`: per-example candidates, length normalisation."""
import numpy as np
import pytest

from prompt_recycling import evaluation
from prompt_recycling import partitioning
from tasks import metrics as metrics_lib

LENGTHS = {'inputs': 16, 'targets': 2}  # Shorter than most candidates: they must not be cut.


@pytest.fixture(scope='module')
def tiny(tiny_prompted):
  return tiny_prompted


def _one_by_one(tiny, inputs, target, inputs_length=LENGTHS['inputs']):
  steps, params, frozen = tiny
  batch = {'encoder_input_tokens': np.zeros((8, inputs_length), np.int32),
           'decoder_target_tokens': np.zeros((8, len(target)), np.int32)}
  batch['encoder_input_tokens'][:, :len(inputs)] = inputs
  batch['decoder_target_tokens'][:] = target
  batch['decoder_input_tokens'] = np.concatenate(
      [np.zeros((8, 1), np.int32), batch['decoder_target_tokens'][:, :-1]], axis=1)
  batch['decoder_loss_weights'] = (batch['decoder_target_tokens'] > 0).astype(np.float32)
  sharded = partitioning.shard_batch(batch, steps.mesh)
  return float(np.asarray(steps.score(params, frozen, sharded))[0])


def test_length_normalisation_divides_by_the_target_length_with_eos():
  # 'False' (3 pieces + EOS) vs 'True' (1 + EOS): the sum favours the short label.
  candidates = [[5, 6, 7, 1], [8, 1]]
  assert evaluation.reduce_scores([-6.0, -4.0], candidates, normalize=False).argmax() == 1
  normed = evaluation.reduce_scores([-6.0, -4.0], candidates, normalize=True)
  np.testing.assert_allclose(normed, [-1.5, -2.0])
  assert normed.argmax() == 0


def test_rank_scores_score_each_examples_own_candidates_uncut(tiny, t5_vocab):
  encode = lambda s: list(t5_vocab.encode(s)) + [1]
  examples = [{'inputs': encode('record query: who won? entities: A, B')},
              {'inputs': encode('dpr: he asked him')}]
  candidates = [[encode('New York Yankees'), encode('Bob')], [encode('the tall man in red')]]
  steps, params, frozen = tiny
  scores = evaluation.rank_scores(steps, params, frozen, examples, candidates, batch_size=8,
                                  feature_lengths=LENGTHS)
  assert [s.shape for s in scores] == [(2,), (1,)]
  for ex, cands, row in zip(examples, candidates, scores):
    for cand, score in zip(cands, row):
      assert score == pytest.approx(_one_by_one(tiny, ex['inputs'], cand), rel=1e-5, abs=1e-5)


def test_rank_scores_sorted_into_length_buckets_equal_full_length_scores(tiny):
  # Rows of 3..64 tokens land in the 16-, 32- and 64-token buckets, in another
  # order than given, with a partial last batch; each score must equal the
  # example scored alone at the configured length, and come back in place.
  rng = np.random.default_rng(1)
  examples = [{'inputs': list(rng.integers(2, 500, n)) + [1]} for n in (39, 2, 19, 63, 9, 32, 4, 16, 47)]
  candidates = [[[5, 1], [6, 7, 1]]] * len(examples)
  steps, params, frozen = tiny
  scores = evaluation.rank_scores(steps, params, frozen, examples, candidates, batch_size=8,
                                  feature_lengths={'inputs': 64, 'targets': 1})
  for ex, row in zip(examples, scores):
    expected = [_one_by_one(tiny, ex['inputs'], cand, inputs_length=64) for cand in candidates[0]]
    np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-5)


def test_normalised_ranking_divides_by_length_with_eos(tiny, t5_vocab):
  encode = lambda s: list(t5_vocab.encode(s)) + [1]
  words = ['True', 'not_entailment']  # 1 and 5 pieces.
  examples = [{'inputs': encode(t), 'targets_pretokenized': w}
              for t, w in [('rte hypothesis: a premise: b', 'True'),
                           ('rte hypothesis: c premise: d', 'not_entailment'),
                           ('wic sentence1: x sentence2: y word: z', 'True')]]
  steps, params, frozen = tiny
  kwargs = dict(batch_size=8, feature_lengths=LENGTHS, decode=t5_vocab.decode, label_words=words,
                encode=encode, rank_metric_fn=metrics_lib.rank_classification_metrics)
  raw = evaluation.rank_scores(steps, params, frozen, examples, [[encode(w) for w in words]] * 3,
                               batch_size=8, feature_lengths=LENGTHS)
  lengths = np.array([len(encode(w)) for w in words])
  assert list(lengths) == [2, 6]
  for mode, expected in (('rank', np.stack(raw)), ('rank_normalized', np.stack(raw) / lengths)):
    seen = []
    kwargs['metric_fns'] = [lambda t, p: seen.append(p) or {}]
    metrics = evaluation.evaluate(steps, params, frozen, examples, mode=mode, **kwargs)
    assert seen[0] == [words[i] for i in expected.argmax(axis=1)]
    target_ids = [0, 1, 0]
    assert metrics.pop('num_examples') == 3
    assert metrics == pytest.approx({
        **metrics_lib.rank_classification_metrics(expected, target_ids),
        **{f'normed_{k}': v for k, v in metrics_lib.rank_classification_metrics(
            np.stack(raw) / lengths, target_ids).items()}}, nan_ok=True)


@pytest.mark.parametrize('kind', ['prompt', 'late_prompt'])
def test_label_words_scored_from_one_encoding_equal_a_row_per_candidate(tiny, kind):
  # T5 encodes each input once for all label words (`score_candidates`); the
  # scores must equal scoring every (example, candidate) pair as its own row,
  # for a prefix prompt and for a late prompt (an encoder hook), including a
  # partial last batch.
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_recycling import lpt, trainer  # pylint: disable=g-import-not-at-top
  steps, params, frozen = tiny
  if kind == 'late_prompt':
    model = steps.family.module
    method = lpt.late_prompt_tuning(3, model_config=model.config)
    steps = trainer.Steps(model, method, None, steps.mesh)
    params = steps.init_params(jax.random.key(0), frozen)
  assert steps.scores_candidates_together
  rng = np.random.default_rng(2)
  examples = [{'inputs': list(rng.integers(2, 500, n)) + [1]} for n in (5, 30, 12, 3, 20, 7, 1, 25, 9, 14, 2)]
  candidates = [[[5, 1], [6, 7, 1], [9, 1]]] * len(examples)
  kwargs = dict(batch_size=8, feature_lengths={'inputs': 32})
  together = evaluation.rank_scores(steps, params, frozen, examples, candidates, **kwargs)
  steps._score_candidates = None  # The (example, candidate) rows path.
  apart = evaluation.rank_scores(steps, params, frozen, examples, candidates, **kwargs)
  np.testing.assert_allclose(np.stack(together), np.stack(apart), rtol=1e-5, atol=1e-5)
  assert np.ptp(np.stack(together)) > 0.1  # Real, different scores.
