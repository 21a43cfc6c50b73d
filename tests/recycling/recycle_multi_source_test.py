"""The recycle entry point: the authors' fit rows by default, multi-source, opt-in dev selection."""
import jax
import numpy as np
import pytest

from prompt_recycling import checkpoints
from prompt_recycling import recycle
from prompt_recycling.recycling import base
from prompt_recycling.recycling import relative
from prompt_recycling.recycling import vocab

MODEL_A = 'prompt_recycling/assets/models/mini_a/checkpoint_11000'
MODEL_B = 'prompt_recycling/assets/models/mini_b/checkpoint_11000'
FAST_RELATIVE = {'steps': 120, 'snapshot_every': 40, 'top_k': 2000}


@pytest.fixture(scope='module')
def tables():
  return {m: checkpoints.load_token_embedding(m) for m in (MODEL_A, MODEL_B)}


def _prompt(tmp_path, table, name, seed):
  rows = np.random.default_rng(seed).choice(np.arange(1000, 5000), size=4, replace=False)
  path = tmp_path / name
  np.save(path, table[rows] * 1.5)
  return str(path)


def test_default_fit_rows_are_the_authors(tmp_path, tables):
  prompt = _prompt(tmp_path, tables[MODEL_A], 'p.npy', 0)
  out = tmp_path / 'out.npy'
  result = recycle.recycle(MODEL_A, MODEL_B, prompt, 'v2v-lin', str(out))
  assert result['vocabulary'] == vocab.LESTER_2022 and result['zero_shot']
  ids = vocab.select(vocab.LESTER_2022, 32128)
  w = np.linalg.lstsq(tables[MODEL_A][ids].astype(np.float64), tables[MODEL_B][ids], rcond=None)[0]
  np.testing.assert_allclose(np.load(out), np.load(prompt) @ w, atol=1e-3)


def test_multi_source_relative_matches_the_library_search(tmp_path, tables):
  # Model A twice under two prompts: the CLI path equals search_multi_source on the tables.
  p1 = _prompt(tmp_path, tables[MODEL_A], 'p1.npy', 1)
  p2 = _prompt(tmp_path, tables[MODEL_A], 'p2.npy', 2)
  out = tmp_path / 'out.npy'
  result = recycle.recycle([MODEL_A, MODEL_A], MODEL_B, [p1, p2], 'relative', str(out),
                           recycler_args=FAST_RELATIVE)
  assert result['vocabulary'] == 'words:pieces' and result['sources'] == [MODEL_A, MODEL_A]
  rec = base.get_recycler('relative', **FAST_RELATIVE)
  ids = vocab.select('words:pieces', 32128)
  params = base.fit_tables(rec, tables[MODEL_A], tables[MODEL_B], ids, jax.random.key(0))
  expected = relative.recycle_multi_source([params, params], [np.load(p1), np.load(p2)],
                                           relative.SearchConfig(**FAST_RELATIVE))
  np.testing.assert_allclose(np.load(out), expected, atol=1e-5)
  single = tmp_path / 'single.npy'
  recycle.recycle(MODEL_A, MODEL_B, p2, 'relative', str(single), recycler_args=FAST_RELATIVE)
  assert not np.allclose(np.load(single), np.load(out), atol=1e-3)


def test_dev_selection_is_opt_in_and_reported_apart(tmp_path, tables):
  prompt = _prompt(tmp_path, tables[MODEL_A], 'p.npy', 3)
  out, best = tmp_path / 'out.npy', tmp_path / 'best.npy'
  seen = []

  def evaluate(z):  # A stand-in dev metric that peaks at the second snapshot.
    seen.append(z)
    return [0.2, 0.9, 0.9][len(seen) - 1]

  result = recycle.recycle(MODEL_A, MODEL_B, prompt, 'relative', str(out),
                           recycler_args=FAST_RELATIVE,
                           dev={'evaluate': evaluate, 'output_path': str(best)})
  assert result['zero_shot'] and not result['dev_selected']['zero_shot']
  assert result['dev_selected']['step'] == 80 and result['dev_selected']['dev_metric'] == 0.9
  assert [s for s, _ in result['dev_selected']['dev_curve']] == [40, 80, 120]
  np.testing.assert_array_equal(np.load(best), seen[1])
  assert not np.allclose(np.load(best), np.load(out))  # The zero-shot output stays the final z.


def test_bad_multi_source_requests(tmp_path, tables):
  prompt = _prompt(tmp_path, tables[MODEL_A], 'p.npy', 4)
  with pytest.raises(ValueError, match='Multi-source transfer is the relative search'):
    recycle.recycle([MODEL_A, MODEL_A], MODEL_B, [prompt, prompt], 'v2v-lin', str(tmp_path / 'o'))
  with pytest.raises(ValueError, match='2 source models and 1 prompts'):
    recycle.recycle([MODEL_A, MODEL_A], MODEL_B, [prompt], 'relative', str(tmp_path / 'o'))
  with pytest.raises(ValueError, match="Dev selection picks among the relative search's"):
    recycle.recycle(MODEL_A, MODEL_B, prompt, 'v2v-nn', str(tmp_path / 'o'),
                    dev={'evaluate': lambda z: 0.0})
