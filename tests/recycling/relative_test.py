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


# The project's earlier search, kept by name: MSE on standardised encodings, an
# affine reparametrisation on anchor statistics, output norms matched, no mask.
PROJECT_VARIANT = dict(loss='mse', normalization='anchor_affine', standardize_encoding=True,
                       learning_rate=0.1, init='random', match_norm=True, top_k=0)


@pytest.mark.parametrize('kwargs', [
    PROJECT_VARIANT,
    {**PROJECT_VARIANT, 'loss': 'cosine'},
    {**PROJECT_VARIANT, 'standardize_encoding': False},
    {**PROJECT_VARIANT, 'init': 'mean'},
    {**PROJECT_VARIANT, 'init': 'linear'},
    {**PROJECT_VARIANT, 'multi_source': 'mean_encoding'},
], ids=['mse-standardized-random', 'cosine', 'unstandardized', 'mean-init', 'linear-init',
        'mean-encoding'])
def test_project_variant_recovers_rotation(kwargs):
  # Cosine similarity is rotation invariant, so with anchors spanning the space
  # (64 >= 16) the relative encoding pins each row's direction; match_norm
  # restores the norm (rotations keep norms, so the norm ratio is 1).
  source, target, q, rng = _rotated(0)
  prompt = 1.3 * rng.normal(size=(5, 16))
  recycler = recycling.get_recycler('relative', num_anchors=64, steps=300, **kwargs)
  out = np.asarray(recycler.apply(recycler.fit(source, target, jax.random.PRNGKey(0)), prompt))
  assert report.row_cosines(out, prompt @ q).mean() > 0.99
  np.testing.assert_allclose(out, prompt @ q, atol=0.05)


def test_authors_search_recovers_rotated_directions_at_the_tables_scale():
  # The defaults (Wu et al.): top-k mask, cosine loss, Xavier init, and z
  # rescaled to the target table's scalar mean and std, so the directions are
  # recovered and the scale is the table's, not the prompt's.
  source, target, q, rng = _rotated(0)
  prompt = 1.3 * rng.normal(size=(5, 16))
  recycler = recycling.get_recycler('relative', top_k=100)
  params = recycler.fit(source, target, jax.random.PRNGKey(0), target_table=3 * target)
  out = np.asarray(recycler.apply(params, prompt))
  assert report.row_cosines(out, prompt @ q).mean() > 0.97
  np.testing.assert_allclose([out.mean(), out.std(ddof=1)],
                             [3 * target.mean(), 3 * target.std()], rtol=1e-4)
  # Without target_table, the anchor rows' statistics.
  no_table = recycler.fit(source, target, jax.random.PRNGKey(0))
  np.testing.assert_allclose(no_table['table_std'], target.std(), rtol=1e-5)


def test_top_k_mask_keeps_each_rows_largest_real_entries():
  goal = np.array([[0.1, 0.9, 0.5, 0.7], [0.8, -0.2, 0.3, 0.95]], np.float32)
  mask = np.array([True, True, True, False])  # The last anchor is padding.
  np.testing.assert_array_equal(relative.top_k_mask(goal, mask, 2), [[0, 1, 1, 0], [1, 0, 1, 0]])
  np.testing.assert_array_equal(relative.top_k_mask(goal, mask, 0), [[1, 1, 1, 0]] * 2)
  np.testing.assert_array_equal(relative.top_k_mask(goal, mask, 8192), [[1, 1, 1, 0]] * 2)


def test_cosine_embedding_loss_is_one_minus_row_cosine():
  rng = np.random.default_rng(9)
  x, y = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
  cos = np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
  np.testing.assert_allclose(relative.cosine_embedding_loss(x, y), np.mean(1 - cos), rtol=1e-5)


def test_table_scalar_normalization_hits_the_tables_moments():
  c = np.random.default_rng(3).normal(size=(4, 6)).astype(np.float32) * 5 + 2
  z = relative.to_target_space(c, (np.float32(-0.3), np.float32(1.7)), relative.SearchConfig())
  np.testing.assert_allclose([np.mean(z), np.std(z, ddof=1)], [-0.3, 1.7], rtol=1e-5)


def test_search_loss_falls():
  source, target, _, rng = _rotated(1)
  cfg = relative.SearchConfig(steps=100, snapshot_every=30)
  params = recycling.get_recycler('relative', top_k=32).fit(source, target, jax.random.PRNGKey(1))
  prompt = rng.normal(size=(3, 16)).astype(np.float32)
  z, losses, snapshots = relative.search_multi_source([params], [prompt], cfg)
  losses = np.asarray(losses)
  assert losses.shape == (100,) and snapshots.shape == (3, 3, 16) and z.shape == (3, 16)
  # lr 5e-3 moves slowly: a quarter of the way from a Xavier start in 100 steps.
  assert losses[-1] < 0.4 * losses[0] and (np.diff(losses) < 1e-6).mean() > 0.95


def test_multi_source_averages_losses():
  # Two sources that are different rotations of one space describe the same
  # prompt identically, so averaging them still recovers it, and one source's
  # result equals the single-source recycler's.
  source, target, q, rng = _rotated(2)
  q2, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  source2 = (source @ q2).astype(np.float32)
  prompt = rng.normal(size=(4, 16))
  recycler = recycling.get_recycler('relative', top_k=100)
  params1 = recycler.fit(source, target, jax.random.PRNGKey(0))
  params2 = recycler.fit(source2, target, jax.random.PRNGKey(0))
  cfg = relative.SearchConfig(top_k=100)
  both = relative.recycle_multi_source([params1, params2], [prompt, prompt @ q2], cfg)
  assert report.row_cosines(both, prompt @ q).mean() > 0.97
  single = relative.recycle_multi_source([params1], [prompt], cfg)
  np.testing.assert_allclose(single, recycler.apply(params1, prompt), atol=1e-6)
  # The loss is the mean of each source's loss, against goals masked by the last source's top-k.
  goals, weight = relative.goals_and_mask([params1, params2], [prompt, prompt @ q2], cfg)
  _, _, mask = relative._anchor_tables(params2, None)
  last = relative.relative_encoding(prompt @ q2, params2['source_anchors'], mask)
  np.testing.assert_array_equal(weight, relative.top_k_mask(last, mask, 100))
  first = relative.relative_encoding(prompt, params1['source_anchors'], mask)
  np.testing.assert_allclose(goals[0], first * weight, atol=1e-6)


def test_relative_encoding_is_the_cosine_to_each_anchor():
  source, _, _, rng = _rotated(3)
  mask = np.ones(50, bool)
  a = source[:50]
  pa = rng.normal(size=(2, 16))
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
  with pytest.raises(ValueError, match="normalization 'l2' is not one of"):
    recycling.get_recycler('relative', normalization='l2')


def test_multi_source_rejects_different_lengths_and_random_init_needs_rng():
  source, target, _, rng = _rotated(7)
  recycler = recycling.get_recycler('relative', num_anchors=64, steps=5)
  params = recycler.fit(source, target, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r'Source prompts have lengths \[2, 3\]'):
    relative.recycle_multi_source([params, params], [source[:2], source[:3]])
  with pytest.raises(ValueError, match=r"init='xavier'\) needs a PRNG key for fit; found rng=None"):
    recycler.fit(source, target, None)
  # Deterministic inits need none.
  recycling.get_recycler('relative', num_anchors=64, init='mean').fit(source, target, None)
  with pytest.raises(ValueError, match=r'target_table has shape \(5, 3\); expected \[vocab, 16\]'):
    recycler.fit(source, target, jax.random.PRNGKey(0), target_table=np.ones((5, 3)))
