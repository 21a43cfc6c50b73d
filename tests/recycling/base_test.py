"""Registry, input checks and save/load shared by every recycler."""
import os

import jax
import numpy as np
import pytest

from prompt_recycling import recycling
from prompt_recycling.recycling import base

# Small, fast settings per recycler; everything else at its default.
FAST = {
    'v2v-lin': {},
    'lin-comb': {},
    'v2v-nn': {'steps': 5},
    'neural-projector': {'steps': 5},
    'relative': {'num_anchors': 32, 'steps': 5},
    'nearest-neighbor': {},
}


def _tables(seed=0, vocab=60, source_embed=8, target_embed=6):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(vocab, source_embed)).astype(np.float32),
          rng.normal(size=(vocab, target_embed)).astype(np.float32), rng)


def test_registry_names():
  assert recycling.recycler_names() == tuple(sorted(FAST))


def test_unknown_name_lists_close_matches_and_all_names():
  with pytest.raises(ValueError) as e:
    recycling.get_recycler('v2v_lin')
  message = str(e.value)
  assert "Unknown recycler 'v2v_lin'. Did you mean 'v2v-lin'" in message
  for name in FAST:
    assert name in message
  with pytest.raises(ValueError, match="Did you mean 'nearest-neighbor'"):
    recycling.get_recycler('nearest-neighbour')


def test_unknown_hyperparameter_is_a_type_error():
  with pytest.raises(TypeError, match='hidden_scale'):
    recycling.get_recycler('v2v-lin', hidden_scale=4)


@pytest.mark.parametrize('name', sorted(FAST))
def test_save_load_round_trip_gives_identical_apply(name, tmp_path):
  source, target, rng = _tables()
  recycler = recycling.get_recycler(name, **FAST[name])
  # A typed key, as the experiment runner passes (other tests use raw uint32 keys).
  params = recycler.fit(source, target, jax.random.key(0))
  path = str(tmp_path / f'{name}.npz')
  recycling.save(params, path)
  loaded = recycling.load(path)
  assert jax.tree.structure(loaded) == jax.tree.structure(jax.tree.map(np.asarray, params))
  prompt = rng.normal(size=(4, 8))
  np.testing.assert_array_equal(recycler.apply(loaded, prompt), recycler.apply(params, prompt))
  assert os.listdir(tmp_path) == [f'{name}.npz']  # No temporary left behind.


@pytest.mark.parametrize('name', sorted(FAST))
def test_apply_checks_prompt(name):
  source, target, _ = _tables()
  recycler = recycling.get_recycler(name, **FAST[name])
  params = recycler.fit(source, target, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r'prompt has shape \(4, 7\); expected \[prompt_length, 8\]'):
    recycler.apply(params, np.zeros((4, 7)))
  with pytest.raises(ValueError, match=r'prompt has shape \(8,\); expected'):
    recycler.apply(params, np.zeros(8))
  bad = np.zeros((4, 8))
  bad[0, 0] = np.inf
  with pytest.raises(ValueError, match=r'prompt \(shape \(4, 8\)\) contains NaN or Inf'):
    recycler.apply(params, bad)


@pytest.mark.parametrize('name', sorted(FAST))
def test_fit_checks_tables(name):
  source, target, _ = _tables()
  recycler = recycling.get_recycler(name, **FAST[name])
  with pytest.raises(ValueError, match=r'source table has 60 rows .* but target table has 59'):
    recycler.fit(source, target[:59], jax.random.PRNGKey(0))
  nan_target = target.copy()
  nan_target[3, 1] = np.nan
  with pytest.raises(ValueError, match=r'target embedding table \(shape \(60, 6\)\) contains NaN'):
    recycler.fit(source, nan_target, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r'source embedding table must be a non-empty \[vocab, embed\]'):
    recycler.fit(source[0], target, jax.random.PRNGKey(0))


def test_failed_fit_writes_nothing(tmp_path):
  # The fit -> save pipeline a CLI runs: a NaN in the table stops it before
  # save, and an earlier good file is left untouched.
  source, target, _ = _tables()
  path = str(tmp_path / 'params.npz')
  recycler = recycling.get_recycler('v2v-lin')
  recycling.save(recycler.fit(source, target, None), path)
  before = open(path, 'rb').read()
  source[0, 0] = np.nan
  with pytest.raises(ValueError, match='contains NaN'):
    recycling.save(recycler.fit(source, target, None), path)
  assert open(path, 'rb').read() == before
  assert os.listdir(tmp_path) == ['params.npz']


def test_save_refuses_non_finite_params(tmp_path):
  path = tmp_path / 'params.npz'
  with pytest.raises(ValueError, match=r"params\['mlp/w'\] \(shape \(2,\)\) contains NaN or Inf; "
                     'refusing to write'):
    recycling.save({'mlp': {'w': np.array([1.0, np.nan])}, 'b': np.ones(3)}, str(path))
  assert not path.exists() and os.listdir(tmp_path) == []


def test_save_rejects_slash_in_keys(tmp_path):
  with pytest.raises(ValueError, match='without "/"'):
    recycling.save({'a/b': np.ones(2)}, str(tmp_path / 'p.npz'))


def test_load_names_the_file(tmp_path):
  path = tmp_path / 'not_params.npz'
  path.write_text('hello')
  with pytest.raises(ValueError, match=f'{path} is not a recycler params file'):
    recycling.load(str(path))


def test_shard_rows_pads_with_masked_zero_rows():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ('data', 'model'))
  table = np.arange(30, dtype=np.float32).reshape(10, 3) + 1
  sharded, mask = base.shard_rows(table, mesh)
  assert sharded.shape == (16, 3) and mask.shape == (16,)
  assert len(sharded.sharding.device_set) == 8
  assert sharded.sharding.shard_shape(sharded.shape) == (2, 3)
  np.testing.assert_array_equal(sharded[:10], table)
  np.testing.assert_array_equal(sharded[10:], 0)
  np.testing.assert_array_equal(mask, np.arange(16) < 10)
  mean, std, norm = base.masked_moments(sharded, mask)
  np.testing.assert_allclose(mean, table.mean(0), rtol=1e-6)
  np.testing.assert_allclose(std, np.sqrt(np.mean(np.square(table - table.mean(0)))), rtol=1e-6)
  np.testing.assert_allclose(norm, np.linalg.norm(table, axis=1).mean(), rtol=1e-6)


def test_nearest_rows_never_returns_padding():
  # All-negative real rows: under euclidean scores a zero padding row would win
  # for a query near the origin, and under cosine it scores 0 > negative.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ('data', 'model'))
  table = -np.abs(np.random.default_rng(0).normal(size=(5, 4))).astype(np.float32) - 1
  sharded, mask = base.shard_rows(table, mesh)
  queries = np.abs(np.random.default_rng(1).normal(size=(6, 4))).astype(np.float32)
  for metric in ('cosine', 'euclidean'):
    ids, scores = base.nearest_rows(queries, sharded, mask, k=5, metric=metric, chunk_size=4)
    assert ids.shape == (6, 5) and (ids < 5).all() and np.isfinite(scores).all()
  with pytest.raises(ValueError, match=r'k=6 must be in \[1, 5\]'):
    base.nearest_rows(queries, sharded, mask, k=6)
