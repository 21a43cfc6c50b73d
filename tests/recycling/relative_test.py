"""Encode-then-search (relative) and nearest-neighbour recycling."""
import jax
import numpy as np
import pytest

from prompt_recycling import recycling
from prompt_recycling.recycling import relative
from prompt_recycling.recycling import report


def _rotated(seed, vocab=200, embed=16):
  """A source table and its orthogonal rotation: target = source @ Q."""
  rng = np.random.default_rng(seed)
  source = (rng.normal(size=(vocab, embed)) + 0.5).astype(np.float32)
  q, _ = np.linalg.qr(rng.normal(size=(embed, embed)))
  return source, (source @ q).astype(np.float32), q, rng


@pytest.mark.parametrize('kwargs', [
    {},
    {'loss': 'cosine'},
    {'normalize': False},
    {'init': 'mean'},
    {'init': 'linear'},
], ids=['mse-normalized-random', 'cosine', 'unnormalized', 'mean-init', 'linear-init'])
def test_search_recovers_rotation(kwargs):
  # Cosine similarity is rotation invariant, so with anchors spanning the space
  # (64 >= 16) the relative encoding pins each row's direction; match_norm
  # restores the norm (rotations keep norms, so the norm ratio is 1).
  source, target, q, rng = _rotated(0)
  prompt = 1.3 * rng.normal(size=(5, 16))
  recycler = recycling.get_recycler('relative', num_anchors=64, steps=300, **kwargs)
  out = np.asarray(recycler.apply(recycler.fit(source, target, jax.random.PRNGKey(0)), prompt))
  assert report.row_cosines(out, prompt @ q).mean() > 0.99
  np.testing.assert_allclose(out, prompt @ q, atol=0.05)


def test_search_loss_falls():
  source, target, _, rng = _rotated(1)
  params = recycling.get_recycler('relative', num_anchors=64).fit(
      source, target, jax.random.PRNGKey(1))
  mask = params['mask']
  cfg = relative.SearchConfig(steps=100)
  goal = relative.relative_encoding(rng.normal(size=(3, 16)).astype(np.float32),
                                    params['source_anchors'], mask, cfg.normalize)
  init = np.broadcast_to(np.asarray(params['target_mean']), (3, 16))
  _, losses = relative.search(goal, params['target_anchors'], mask, init,
                              params['target_mean'], params['target_std'], cfg)
  losses = np.asarray(losses)
  assert losses.shape == (100,)
  assert losses[-1] < 1e-2 * losses[0]


def test_multi_source_averages_encodings():
  # Two sources that are different rotations of one space describe the same
  # prompt identically, so averaging them still recovers it, and one source's
  # result equals the single-source recycler's.
  source, target, q, rng = _rotated(2)
  q2, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  source2 = (source @ q2).astype(np.float32)
  prompt = rng.normal(size=(4, 16))
  recycler = recycling.get_recycler('relative', num_anchors=64, steps=300)
  params1 = recycler.fit(source, target, jax.random.PRNGKey(0))
  params2 = recycler.fit(source2, target, jax.random.PRNGKey(0))
  cfg = relative.SearchConfig(steps=300)
  both = relative.recycle_multi_source([params1, params2], [prompt, prompt @ q2], cfg)
  assert report.row_cosines(both, prompt @ q).mean() > 0.99
  single = relative.recycle_multi_source([params1], [prompt], cfg)
  np.testing.assert_allclose(single, recycler.apply(params1, prompt), atol=1e-6)


def test_average_relative_encodings_is_the_mean():
  source, _, _, rng = _rotated(3)
  mask = np.ones(50, bool)
  a, b = source[:50], (source[:50] @ rng.normal(size=(16, 8))).astype(np.float32)
  pa, pb = rng.normal(size=(2, 16)), rng.normal(size=(2, 8))
  mean = relative.average_relative_encodings([(pa, a), (pb, b)], mask)
  expected = 0.5 * (relative.relative_encoding(pa, a, mask) + relative.relative_encoding(pb, b, mask))
  np.testing.assert_allclose(mean, expected, atol=1e-6)
  cos = (pa / np.linalg.norm(pa, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T
  np.testing.assert_allclose(relative.relative_encoding(pa, a, mask), cos, atol=1e-5)


def test_multi_source_rejects_different_targets():
  source, target, _, rng = _rotated(4)
  recycler = recycling.get_recycler('relative', num_anchors=64)
  params1 = recycler.fit(source, target, jax.random.PRNGKey(0))
  params2 = recycler.fit(source, 2 * target, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='same target table and anchor tokens'):
    relative.recycle_multi_source([params1, params2], [source[:2], source[:2]])


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
def test_nearest_neighbor_returns_the_tokens_target_rows(metric):
  rng = np.random.default_rng(5)
  source = rng.normal(size=(300, 16)).astype(np.float32)
  target = rng.normal(size=(300, 24)).astype(np.float32)
  ids = np.array([7, 0, 299, 7, 150])
  # Cosine ignores scale; euclidean gets the rows with a little noise.
  prompt = (source[ids] * np.array([[1.0], [3.0], [0.5], [2.0], [1.0]]) if metric == 'cosine'
            else source[ids] + 1e-3 * rng.normal(size=(5, 16)))
  recycler = recycling.get_recycler('nearest-neighbor', metric=metric)
  params = recycler.fit(source, target, None)
  np.testing.assert_array_equal(relative.nearest_ids(params, prompt, metric), ids)
  np.testing.assert_array_equal(recycler.apply(params, prompt), target[ids])


def test_relative_rejects_nan_prompt():
  source, target, _, _ = _rotated(6)
  recycler = recycling.get_recycler('relative', num_anchors=64, steps=5)
  params = recycler.fit(source, target, jax.random.PRNGKey(0))
  prompt = np.ones((3, 16))
  prompt[1, 2] = np.nan
  with pytest.raises(ValueError, match=r'prompt \(shape \(3, 16\)\) contains NaN or Inf'):
    recycler.apply(params, prompt)


def test_bad_search_options():
  with pytest.raises(ValueError, match="loss 'l1' is not one of"):
    recycling.get_recycler('relative', loss='l1')
  with pytest.raises(ValueError, match="init 'zeros' is not one of"):
    recycling.get_recycler('relative', init='zeros')


def test_multi_source_rejects_different_lengths_and_random_init_needs_rng():
  source, target, _, rng = _rotated(7)
  recycler = recycling.get_recycler('relative', num_anchors=64, steps=5)
  params = recycler.fit(source, target, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r'Source prompts have lengths \[2, 3\]'):
    relative.recycle_multi_source([params, params], [source[:2], source[:3]])
  with pytest.raises(ValueError, match="needs a PRNG key for fit; found rng=None"):
    recycler.fit(source, target, None)
  # Deterministic inits need none.
  recycling.get_recycler('relative', num_anchors=64, init='mean').fit(source, target, None)
