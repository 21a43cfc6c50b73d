"""v2v-lin and lin-comb against planted linear truths."""
import jax
import numpy as np
import pytest

from prompt_recycling import recycling
from prompt_recycling.recycling import linear


def _planted(rng, vocab=2000, source_embed=32, target_embed=48, noise=1e-3):
  source = rng.normal(size=(vocab, source_embed)).astype(np.float32)
  w = rng.normal(size=(source_embed, target_embed)) / np.sqrt(source_embed)
  target = (source @ w + noise * rng.normal(size=(vocab, target_embed))).astype(np.float32)
  return source, target, w


def test_v2v_lin_recovers_planted_map():
  rng = np.random.default_rng(0)
  source, target, w = _planted(rng)
  recycler = recycling.get_recycler('v2v-lin')
  params = recycler.fit(source, target, jax.random.PRNGKey(0))
  w_fit = np.asarray(params['w'], np.float64)
  assert w_fit.shape == (32, 48)
  assert np.linalg.norm(w_fit - w) / np.linalg.norm(w) < 1e-3

  prompt = 20.0 * rng.normal(size=(7, 32))
  out = np.asarray(recycler.apply(params, prompt))
  assert out.shape == (7, 48) and out.dtype == np.float32
  np.testing.assert_allclose(out, prompt @ w_fit, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(out, prompt @ w, rtol=0, atol=0.05 * np.abs(prompt @ w).max())


def test_v2v_lin_matches_float64_lstsq_on_ill_conditioned_table():
  # cond(S) = 1e3: the float32 normal equations alone lose ~cond^2 * eps;
  # refinement gets back to float64 lstsq's answer. (rcond below the default,
  # which would drop S's smallest direction.)
  rng = np.random.default_rng(1)
  u, _ = np.linalg.qr(rng.normal(size=(3000, 24)))
  v, _ = np.linalg.qr(rng.normal(size=(24, 24)))
  source = (u * np.logspace(0, -3, 24)) @ v.T * 30
  source = source.astype(np.float32)
  target = (source @ rng.normal(size=(24, 16)) + 0.01 * rng.normal(size=(3000, 16)))
  target = target.astype(np.float32)
  reference, *_ = np.linalg.lstsq(source.astype(np.float64), target.astype(np.float64), rcond=None)

  def error(refine_steps):
    w = linear.solve_least_squares(source, target, refine_steps=refine_steps, rcond=1e-9)
    return np.linalg.norm(w - reference) / np.linalg.norm(reference)

  unrefined, refined = error(0), error(2)
  assert refined < 1e-3
  assert refined < unrefined / 10


def test_v2v_lin_l2_shrinks_the_map():
  rng = np.random.default_rng(2)
  source, target, _ = _planted(rng, vocab=300)
  norms = [np.linalg.norm(recycling.get_recycler('v2v-lin', l2=l2).fit(source, target, None)['w'])
           for l2 in (0.0, 100.0, 1e4)]
  assert norms[0] > norms[1] > norms[2]


def test_lin_comb_recovers_an_exact_combination():
  # Fewer vocabulary rows (8) than source_embed (16): the rows are independent,
  # so a prompt that is a combination of them has exactly one coefficient set,
  # and the target prompt is that combination of the (unrelated) target rows.
  rng = np.random.default_rng(3)
  source = rng.normal(size=(8, 16)).astype(np.float32)
  target = rng.normal(size=(8, 12)).astype(np.float32)
  c = rng.normal(size=(5, 8))
  prompt = c @ source
  recycler = recycling.get_recycler('lin-comb')
  params = recycler.fit(source, target, None)
  np.testing.assert_allclose(linear.coefficients(params, prompt), c, atol=1e-4)
  np.testing.assert_allclose(recycler.apply(params, prompt), c @ target, atol=1e-4)


def test_lin_comb_coefficients_are_minimum_norm():
  rng = np.random.default_rng(4)
  source = rng.normal(size=(200, 16)).astype(np.float32)
  target = rng.normal(size=(200, 12)).astype(np.float32)
  prompt = rng.normal(size=(3, 16))
  params = recycling.get_recycler('lin-comb').fit(source, target, None)
  c = np.asarray(linear.coefficients(params, prompt))
  expected = prompt @ np.linalg.pinv(source.astype(np.float64))
  np.testing.assert_allclose(c @ source, prompt, atol=1e-4)
  np.testing.assert_allclose(c, expected, atol=1e-5)


def test_lin_comb_equals_v2v_lin_without_regularisation():
  rng = np.random.default_rng(5)
  source, target, _ = _planted(rng, vocab=400, noise=0.5)
  prompt = rng.normal(size=(4, 32))
  outs = []
  for name in ('v2v-lin', 'lin-comb'):
    recycler = recycling.get_recycler(name)
    outs.append(np.asarray(recycler.apply(recycler.fit(source, target, None), prompt)))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)


def test_pinv_psd_drops_null_space():
  rng = np.random.default_rng(6)
  a = rng.normal(size=(4, 10))
  gram = a.T @ a  # Rank 4 of 10.
  np.testing.assert_allclose(linear.pinv_psd(gram), np.linalg.pinv(gram), atol=1e-8)


@pytest.mark.parametrize('name', ['v2v-lin', 'lin-comb'])
def test_apply_rejects_wrong_width(name):
  rng = np.random.default_rng(7)
  source, target, _ = _planted(rng, vocab=100)
  recycler = recycling.get_recycler(name)
  params = recycler.fit(source, target, None)
  with pytest.raises(ValueError, match=r'prompt has shape \(3, 31\); expected \[prompt_length, 32\]'):
    recycler.apply(params, np.zeros((3, 31)))
