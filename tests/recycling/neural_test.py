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
  # The project's variant: independent minibatches on standardised tables.
  variant = dict(steps=400, batch_size=64, learning_rate=3e-3, sampling='with_replacement',
                 standardize=True)
  _, losses = neural.train(source, target, jax.random.PRNGKey(0), neural.MLPConfig(**variant))
  assert losses.shape == (400,)
  assert losses[-50:].mean() < 0.25 * losses[:10].mean()

  recycler = recycling.get_recycler('v2v-nn', **variant)
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
  assert not np.array_equal(a['mlp']['params']['Dense_1']['kernel'],
                            c['mlp']['params']['Dense_1']['kernel'])


def test_authors_epochs_visit_every_pair_once_per_epoch():
  # 130 pairs, batch 50: batches of 50, 50, 30 (the last padded with weight-0 rows).
  cfg = neural.MLPConfig(epochs=3)
  idx, weights = neural.minibatches(cfg, jax.random.key(0), 130)
  assert idx.shape == weights.shape == (9, 50)
  idx, weights = np.asarray(idx), np.asarray(weights)
  for epoch in range(3):
    rows = idx[3 * epoch:3 * epoch + 3].reshape(-1)[weights[3 * epoch:3 * epoch + 3].reshape(-1) > 0]
    assert sorted(rows.tolist()) == list(range(130))
  assert weights[2].sum() == 30 and weights[0].sum() == 50
  assert not np.array_equal(idx[0], idx[3])  # A fresh shuffle each epoch.
  # steps= truncates the schedule.
  assert neural.minibatches(neural.MLPConfig(steps=4), jax.random.key(0), 130)[0].shape == (4, 50)


def test_partial_last_batch_loss_is_its_real_rows_mean():
  # Training on 130 pairs for one epoch equals the authors' loop over 50, 50, 30.
  source, target = _nonlinear_pair(8, vocab=130)
  cfg = neural.MLPConfig(epochs=1)
  _, losses = neural.train(source, target, jax.random.key(0), cfg)
  model = neural.MLP(40, 10)
  params = model.init(jax.random.key(0), np.ones((1, 12), np.float32))
  import optax  # pylint: disable=g-import-not-at-top
  tx = optax.adam(cfg.learning_rate)
  state = tx.init(params)
  order = np.asarray(neural.epoch_orders(jax.random.key(0), 130, 1))[0]
  expected = []
  grad_fn = jax.jit(jax.value_and_grad(
      lambda p, x, y: optax.l2_loss(model.apply(p, x), y).mean()))
  for start in range(0, 130, 50):
    rows = order[start:start + 50]
    loss, grads = grad_fn(params, source[rows], target[rows])
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    expected.append(float(loss))
  np.testing.assert_allclose(losses, expected, rtol=1e-5)


@pytest.mark.parametrize('name,hidden,activation', [
    ('v2v-nn', 40, 'relu'),  # 4 x target_embed.
    ('neural-projector', 10, 'tanh'),  # 1 x target_embed.
])
def test_registered_defaults(name, hidden, activation):
  source, target = _nonlinear_pair(5, vocab=100)
  recycler = recycling.get_recycler(name, steps=3)
  params = recycler.fit(source, target, jax.random.PRNGKey(0))
  assert params['mlp']['params']['Dense_0']['kernel'].shape == (12, hidden)
  assert params['mlp']['params']['Dense_1']['kernel'].shape == (hidden, 10)
  standardized = name == 'neural-projector'  # v2v-nn: the authors' raw embeddings.
  assert (np.asarray(params['source_scale']) != 1.0) == standardized
  x = np.ones((2, 12), np.float32)
  pre = ((x - params['source_mean']) / params['source_scale']) @ np.asarray(
      params['mlp']['params']['Dense_0']['kernel']) + params['mlp']['params']['Dense_0']['bias']
  act = np.maximum(pre, 0) if activation == 'relu' else np.tanh(pre)
  expected = ((act @ np.asarray(params['mlp']['params']['Dense_1']['kernel'])
               + params['mlp']['params']['Dense_1']['bias'])
              * params['target_scale'] + params['target_mean'])
  np.testing.assert_allclose(recycler.apply(params, x), expected, rtol=1e-5, atol=1e-5)


def test_hidden_size_overrides_scale():
  source, target = _nonlinear_pair(6, vocab=50)
  params = recycling.get_recycler('v2v-nn', hidden_size=7, steps=1).fit(
      source, target, jax.random.PRNGKey(0))
  assert params['mlp']['params']['Dense_0']['kernel'].shape == (12, 7)


def test_bad_config():
  with pytest.raises(ValueError, match="activation 'swish' is not one of"):
    recycling.get_recycler('v2v-nn', activation='swish')
