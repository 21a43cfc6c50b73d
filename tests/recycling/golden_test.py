"""Golden checks: each recycler against arrays from the authors' released code.

The arrays (tests/testdata/recycling_golden, see its README) come from
google-research/prompt-tuning's recycle.py (v2v-lin, lin-comb, v2v-nn) and
MANGA-UOFA/PTfer's rel2abs_GO.py / rel2abs_GO_mix.py (relative search), run on
seeded tables of 2,000 x 32 and 2,000 x 48 and a 5-row prompt.

Tolerances are float32 round-off, measured: v2v-lin / lin-comb differ from
TensorFlow's lstsq by <= 7e-6 on outputs of size ~11; v2v-nn reproduces the
authors' init and data order, its 1,000 losses within 5e-7; the relative
search, from the authors' Xavier draw, stays within 2.2e-6 of their losses and
4e-6 of their output (|z| <= 3.9) over 2,000 Adam steps.
"""
import inspect

import jax
import numpy as np
import pytest
from conftest import TESTDATA

from prompt_recycling import recycling
from prompt_recycling.recycling import neural
from prompt_recycling.recycling import relative

TOP_K = 512  # The golden run's top-k (the inputs have 2,000 anchors).


@pytest.fixture(scope='module')
def golden():
  return dict(np.load(TESTDATA / 'recycling_golden' / 'golden.npz'))


@pytest.fixture(scope='module')
def inputs(golden):
  """The golden run's inputs, regenerated from its seed (README) and fingerprint-checked."""
  rng = np.random.default_rng(20240601)
  x = {}
  x['source'] = rng.normal(size=(2000, 32)).astype(np.float32)
  x['planted_a'] = rng.normal(size=(32, 48)).astype(np.float32) / np.sqrt(32)
  x['target'] = (2 * np.tanh(x['source'] @ x['planted_a'])
                 + 0.05 * rng.normal(size=(2000, 48))).astype(np.float32)
  b = rng.normal(size=(32, 24)).astype(np.float32) / np.sqrt(32)
  x['source2'] = (x['source'] @ b + 0.05 * rng.normal(size=(2000, 24))).astype(np.float32)
  x['prompt'] = (3.0 * rng.normal(size=(5, 32))).astype(np.float32)
  x['prompt2'] = (x['prompt'] @ b).astype(np.float32)
  extra = 2 * np.tanh(rng.normal(size=(400, 32)).astype(np.float32) @ x['planted_a'])
  x['target_full'] = np.concatenate([x['target'], extra]).astype(np.float32)
  for name, value in x.items():
    np.testing.assert_allclose(
        [value.sum(dtype=np.float64), value[0, 0], value[-1, -1]],
        golden[f'fingerprint_{name}'], rtol=1e-6, err_msg=f'{name}: the generator changed')
  return x


@pytest.mark.parametrize('name,key', [('v2v-lin', 'v2v_lin_recycled'),
                                      ('lin-comb', 'lin_comb_recycled')])
def test_linear_recyclers_match_tf_lstsq(golden, inputs, name, key):
  recycler = recycling.get_recycler(name)
  params = recycler.fit(inputs['source'], inputs['target'], None)
  out = np.asarray(recycler.apply(params, inputs['prompt']))
  np.testing.assert_allclose(out, golden[key], atol=2e-5, rtol=0)
  if name == 'v2v-lin':
    np.testing.assert_allclose(params['w'], golden['v2v_lin_projection'], atol=2e-6, rtol=0)


def test_v2v_nn_reproduces_the_authors_init_order_and_losses(golden, inputs):
  rng = jax.random.key(0)  # JaxRecycler: PRNGKey(0) for init and shuffles.
  np.testing.assert_array_equal(neural.epoch_orders(rng, 2000, 2),
                                golden['v2v_nn_epoch_orders'])
  params, losses = neural.train(inputs['source'], inputs['target'], rng, neural.MLPConfig())
  assert losses.shape == (1000,)  # 25 epochs x 40 batches of 50.
  np.testing.assert_allclose(losses, golden['v2v_nn_losses'], atol=2e-6, rtol=0)
  recycler = recycling.get_recycler('v2v-nn')
  out = np.asarray(recycler.apply(params, inputs['prompt']))
  np.testing.assert_allclose(out, golden['v2v_nn_recycled'], atol=1e-5, rtol=0)


def test_registered_v2v_nn_defaults_are_the_golden_config():
  signature = inspect.signature(neural.v2v_nn)
  defaults = {k: p.default for k, p in signature.parameters.items() if k != 'mesh'}
  assert neural.MLPConfig(**defaults) == neural.MLPConfig()


@pytest.mark.parametrize('multi', [False, True], ids=['single-source', 'multi-source'])
def test_relative_search_matches_ptfer(golden, inputs, multi):
  recycler = recycling.get_recycler('relative', top_k=TOP_K)
  cfg = relative.SearchConfig(top_k=TOP_K)
  fit = lambda s: recycler.fit(s, inputs['target'], jax.random.key(0),
                               target_table=inputs['target_full'])
  main = fit(inputs['source'])
  np.testing.assert_allclose(main['table_mean'], golden['relative_target_mean'], rtol=1e-6)
  np.testing.assert_allclose(main['table_std'], golden['relative_target_std'], rtol=1e-6)
  tag = 'relative_multi' if multi else 'relative_single'
  # The mix decoder's second source sets the mask: it is the last one here.
  params, prompts = (([fit(inputs['source2']), main], [inputs['prompt2'], inputs['prompt']])
                     if multi else ([main], [inputs['prompt']]))
  _, weight = relative.goals_and_mask(params, prompts, cfg)
  np.testing.assert_array_equal(np.asarray(weight) > 0, golden[f'{tag}_mask'])
  z, losses, snapshots = relative.search_multi_source(params, prompts, cfg,
                                                      init=golden[f'{tag}_init'])
  np.testing.assert_allclose(losses, golden[f'{tag}_losses'], atol=1e-5, rtol=0)
  np.testing.assert_allclose(z, golden[f'{tag}_final'], atol=5e-5, rtol=0)
  assert snapshots.shape == (40, 5, 48)
  np.testing.assert_allclose(snapshots, golden[f'{tag}_snapshots'], atol=1e-4, rtol=0)


def test_relative_xavier_init_has_torchs_scale(inputs):
  # torch.nn.init.xavier_normal_ on [5, 48]: std sqrt(2 / (5 + 48)).
  draws = relative.xavier_normal(jax.random.key(1), (2000, 48))
  np.testing.assert_allclose(np.std(draws), np.sqrt(2 / 2048), rtol=0.02)
  recycler = recycling.get_recycler('relative', top_k=TOP_K, steps=0)
  params = recycler.fit(inputs['source'], inputs['target'], jax.random.key(0))
  init = relative.initial_candidate(params, inputs['prompt'], relative.SearchConfig())
  assert init.shape == (5, 48)
