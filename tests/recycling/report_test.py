"""Held-out fit and nearest-token diagnostics."""
import jax
import numpy as np
import pytest

from prompt_recycling import recycling
from prompt_recycling.recycling import report


def test_split_pairs_is_seeded_disjoint_and_complete():
  fit, held = report.split_pairs(100, 0.2, seed=3)
  assert held.size == 20 and fit.size == 80
  np.testing.assert_array_equal(np.union1d(fit, held), np.arange(100))
  again = report.split_pairs(100, 0.2, seed=3)
  np.testing.assert_array_equal(again[1], held)
  assert not np.array_equal(report.split_pairs(100, 0.2, seed=4)[1], held)
  with pytest.raises(ValueError, match=r'held_out_fraction must be in \(0, 1\)'):
    report.split_pairs(100, 1.0)


def test_held_out_fit_of_a_planted_linear_map():
  rng = np.random.default_rng(0)
  source = rng.normal(size=(500, 8)).astype(np.float32)
  target = (source @ rng.normal(size=(8, 6))).astype(np.float32)
  fit = report.held_out_fit(recycling.get_recycler('v2v-lin'), source, target,
                            jax.random.PRNGKey(0), held_out_fraction=0.1)
  assert (fit['num_fit'], fit['num_held_out']) == (450, 50)
  assert fit['cosine'] > 0.9999 and fit['mse'] < 1e-8
  assert fit['mean_baseline_cosine'] < 0.5
  assert fit['cosines'].shape == (50,)
  # A recycler that knows nothing: nearest neighbour between unrelated tables.
  noise = rng.normal(size=(500, 6)).astype(np.float32)
  bad = report.held_out_fit(recycling.get_recycler('nearest-neighbor'), source, noise,
                            jax.random.PRNGKey(0), max_held_out=20)
  assert bad['num_held_out'] == 20 and abs(bad['cosine']) < 0.3


def test_nearest_target_tokens_with_ids_and_pieces():
  rng = np.random.default_rng(1)
  target = rng.normal(size=(50, 8)).astype(np.float32)
  token_ids = np.arange(50) * 2 + 100  # Rows of a selected vocabulary.
  pieces = {int(i): f'piece{i}' for i in token_ids}
  prompt = np.stack([target[3], 5 * target[40]])
  out = report.nearest_target_tokens(prompt, target, k=3, token_ids=token_ids, pieces=pieces)
  assert out['ids'].shape == (2, 3) and out['cosine'].shape == (2, 3)
  assert out['ids'][:, 0].tolist() == [106, 180]
  np.testing.assert_allclose(out['cosine'][:, 0], 1.0, atol=1e-6)
  assert (np.diff(out['cosine'], axis=1) <= 0).all()
  assert out['pieces'][1][0] == 'piece180'
  text = report.format_report({'v2v-lin': {'cosine': 0.5, 'mse': 1.0, 'mean_baseline_cosine': 0.1,
                                           'num_fit': 9, 'num_held_out': 1}}, out)
  assert '| v2v-lin | 0.5000 | 1 | 0.1000 | 9 / 1 |' in text
  assert "'piece180' (1.000)" in text
