"""v2v-nn and neural-projector: one MLP implementation, two defaults."""
import jax
import numpy as np
import pytest

from prompt_recycling import recycling
from prompt_recycling.recycling import neural
from prompt_recycling.recycling import report


def _nonlinear_pair(seed, vocab=1500, source_embed=12, target_embed=10):
  """target = tanh(source A) B + noise: not linear, but learnable by an MLP."""
  rng = np.random.default_rng(seed)
  source = rng.normal(size=(vocab, source_embed)).astype(np.float32)
  a = rng.normal(size=(source_embed, 32)) / np.sqrt(source_embed)
  b = rng.normal(size=(32, target_embed)) / np.sqrt(32)
  target = np.tanh(2 * source @ a) @ b + 0.01 * rng.normal(size=(vocab, target_embed))
  return source, (5.0 * target + 1.0).astype(np.float32)


def test_training_loss_falls_and_held_out_fit_beats_random_map():
  source, target = _nonlinear_pair(0)
  cfg = neural.MLPConfig(steps=400, batch_size=64, learning_rate=3e-3)
  _, losses = neural.train(source, target, jax.random.PRNGKey(0), cfg)
  assert losses.shape == (400,)
  assert losses[-50:].mean() < 0.25 * losses[:10].mean()

  recycler = recycling.get_recycler('v2v-nn', steps=400, batch_size=64, learning_rate=3e-3)
  fit = report.held_out_fit(recycler, source, target, jax.random.PRNGKey(0))
  # A random linear map from source to target space (plus the target mean, so
  # it is not beaten merely on the offset).
  rng = np.random.default_rng(1)
  fit_rows, held_rows = report.split_pairs(len(source))
  random_map = (source[held_rows] @ rng.normal(size=(12, 10))
                + target[fit_rows].mean(axis=0))
  random_cosine = report.row_cosines(random_map, target[held_rows]).mean()
  assert fit['cosine'] > 0.85
  assert fit['cosine'] > random_cosine + 0.2
  assert fit['cosine'] > fit['mean_baseline_cosine'] + 0.2


def test_fit_is_deterministic_given_rng():
  source, target = _nonlinear_pair(2, vocab=200)
  recycler = recycling.get_recycler('v2v-nn', steps=20)
  a = recycler.fit(source, target, jax.random.PRNGKey(3))
  b = recycler.fit(source, target, jax.random.PRNGKey(3))
  c = recycler.fit(source, target, jax.random.PRNGKey(4))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a['mlp']['params']['output']['kernel'],
                            c['mlp']['params']['output']['kernel'])


@pytest.mark.parametrize('name,hidden,activation', [
    ('v2v-nn', 40, 'relu'),  # 4 x target_embed.
    ('neural-projector', 10, 'tanh'),  # 1 x target_embed.
])
def test_registered_defaults(name, hidden, activation):
  source, target = _nonlinear_pair(5, vocab=100)
  recycler = recycling.get_recycler(name, steps=3)
  params = recycler.fit(source, target, jax.random.PRNGKey(0))
  assert params['mlp']['params']['hidden']['kernel'].shape == (12, hidden)
  assert params['mlp']['params']['output']['kernel'].shape == (hidden, 10)
  x = np.ones((2, 12), np.float32)
  pre = ((x - params['source_mean']) / params['source_scale']) @ np.asarray(
      params['mlp']['params']['hidden']['kernel']) + params['mlp']['params']['hidden']['bias']
  act = np.maximum(pre, 0) if activation == 'relu' else np.tanh(pre)
  expected = ((act @ np.asarray(params['mlp']['params']['output']['kernel'])
               + params['mlp']['params']['output']['bias'])
              * params['target_scale'] + params['target_mean'])
  np.testing.assert_allclose(recycler.apply(params, x), expected, rtol=1e-5, atol=1e-5)


def test_hidden_size_overrides_scale():
  source, target = _nonlinear_pair(6, vocab=50)
  params = recycling.get_recycler('v2v-nn', hidden_size=7, steps=1).fit(
      source, target, jax.random.PRNGKey(0))
  assert params['mlp']['params']['hidden']['kernel'].shape == (12, 7)


def test_bad_config():
  with pytest.raises(ValueError, match="activation 'swish' is not one of"):
    recycling.get_recycler('v2v-nn', activation='swish')
