"""8 devices (vocab split over a 4 x 2 mesh) give what 1 device gives, and no [vocab, vocab]."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from prompt_recycling import recycling
from prompt_recycling.recycling import base
from prompt_recycling.recycling import linear
from prompt_recycling.recycling import relative
from prompt_recycling.recycling import report

# 203 rows: not a multiple of 8, so the 8-device tables carry padding rows.
VOCAB = 203

SETTINGS = {
    'v2v-lin': {},
    'lin-comb': {},
    'nearest-neighbor': {},
    'relative': {'num_anchors': 61, 'steps': 200, 'top_k': 30},
    # The project's variant (anchor-affine search from the linear map).
    'relative-cosine-linear': {'num_anchors': 61, 'steps': 200, 'init': 'linear', 'top_k': 0,
                               'normalization': 'anchor_affine', 'learning_rate': 0.1,
                               'standardize_encoding': True, 'match_norm': True},
    'v2v-nn': {'steps': 30},
}


def _mesh(num_devices):
  devices = np.array(jax.devices()[:num_devices])
  return Mesh(devices.reshape((4, 2) if num_devices == 8 else (1, 1)), ('data', 'model'))


def _tables(seed=0, embed=16):
  rng = np.random.default_rng(seed)
  source = (rng.normal(size=(VOCAB, embed)) + 0.5).astype(np.float32)
  q, _ = np.linalg.qr(rng.normal(size=(embed, embed)))
  target = (source @ q + 0.05 * rng.normal(size=(VOCAB, embed))).astype(np.float32)
  return source, target, rng


def test_eight_devices_are_available():
  assert len(jax.devices()) >= 8, 'tests/conftest.py forces 8 host devices'


@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_eight_devices_match_one(setting):
  name = setting.split('-cosine')[0]
  source, target, rng = _tables()
  prompt = rng.normal(size=(6, 16))
  outs = []
  for num_devices in (1, 8):
    recycler = recycling.get_recycler(name, mesh=_mesh(num_devices), **SETTINGS[setting])
    params = recycler.fit(source, target, jax.random.PRNGKey(0))
    outs.append(np.asarray(recycler.apply(params, prompt)))
    tables = [x for x in jax.tree.leaves(params) if np.ndim(x) == 2 and x.shape[0] >= VOCAB]
    for table in tables:
      assert len(table.sharding.device_set) == num_devices
  if name == 'nearest-neighbor':
    np.testing.assert_array_equal(outs[0], outs[1])
  else:
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_nearest_ids_are_exact_on_eight_devices():
  rng = np.random.default_rng(1)
  table = rng.normal(size=(1001, 32)).astype(np.float32)
  queries = rng.normal(size=(100, 32)).astype(np.float32)
  results = {}
  for num_devices in (1, 8):
    sharded, mask = base.shard_rows(table, _mesh(num_devices))
    for metric in ('cosine', 'euclidean'):
      results[num_devices, metric] = base.nearest_rows(queries, sharded, mask, k=3,
                                                       metric=metric, chunk_size=32)
  for metric in ('cosine', 'euclidean'):
    ids1, scores1 = results[1, metric]
    ids8, scores8 = results[8, metric]
    np.testing.assert_array_equal(ids1, ids8)
    np.testing.assert_allclose(scores1, scores8, rtol=1e-5, atol=1e-5)
  # And against numpy.
  cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
      table / np.linalg.norm(table, axis=1, keepdims=True)).T
  np.testing.assert_array_equal(results[8, 'cosine'][0], np.argsort(-cos, axis=1)[:, :3])


def test_top_k_report_matches_on_eight_devices():
  source, target, rng = _tables(2)
  prompt = rng.normal(size=(5, 16))
  one, eight = (report.nearest_target_tokens(prompt, target, k=4, mesh=_mesh(n)) for n in (1, 8))
  np.testing.assert_array_equal(one['ids'], eight['ids'])
  np.testing.assert_allclose(one['cosine'], eight['cosine'], rtol=1e-5, atol=1e-5)


def _intermediate_shapes(fn, *args):
  """Shapes of every value `fn`'s jaxpr computes, sub-jaxprs (scan, jit) included."""
  shapes = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      shapes.extend(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, 'shape'))
      for param in eqn.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          if hasattr(sub, 'eqns'):
            walk(sub)
          elif hasattr(sub, 'jaxpr') and hasattr(sub.jaxpr, 'eqns'):
            walk(sub.jaxpr)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return shapes


def test_full_size_tables_never_make_a_vocab_by_vocab_matrix():
  # Traced, not run: T5 XXL-sized 32,128 x 4,096 tables.
  vocab, embed, length, anchors = 32128, 4096, 100, 8192
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)
  mask = jax.ShapeDtypeStruct((vocab,), np.bool_)
  cfg = relative.SearchConfig(steps=3)
  traced = {
      'gram+cross': _intermediate_shapes(base.cross_products, f32(vocab, embed), f32(vocab, embed)),
      'refinement': _intermediate_shapes(linear._normal_residual, f32(vocab, embed),
                                         f32(vocab, embed), f32(embed, embed)),
      'lin-comb': _intermediate_shapes(linear._combine, f32(length, embed), f32(embed, embed),
                                       f32(vocab, embed), f32(vocab, embed)),
      'nearest': _intermediate_shapes(
          functools.partial(base._top_k_chunk, k=5, metric='cosine'),
          f32(512, embed), f32(vocab, embed), mask),
      'relative search': _intermediate_shapes(
          functools.partial(relative.search, cfg=cfg), f32(2, length, anchors),
          f32(anchors, embed), f32(length, anchors), f32(length, embed), (f32(), f32())),
  }
  for name, shapes in traced.items():
    assert shapes, name
    largest = max(int(np.prod(s)) for s in shapes)
    assert largest <= vocab * embed, (name, largest)
    assert not [s for s in shapes if sum(d >= vocab for d in s) >= 2], name
