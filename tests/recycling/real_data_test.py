"""Recycling on the real release files in ../shared/data (skipped without them).

The real filtered English vocabulary selects rows of the real 32128 x 4 test
embedding table; the target model is that table rotated and slightly noised,
so the right answer is known. The real SST-2 prompt released for T5 1.1
lm100k base (100 x 768) checks widths, scale and precision.
"""
import json

import jax
import numpy as np
import pytest
from conftest import shared_path

from prompt_recycling import recycling
from prompt_recycling.recycling import linear
from prompt_recycling.recycling import relative
from prompt_recycling.recycling import report
from prompt_recycling.recycling import vocab


@pytest.fixture(scope='module')
def real():
  vocab_path = shared_path('t5', 'filtered-vocab-english-only.json')
  table = np.load(shared_path('t5', 'tiny_embeddings_32128x4.npy'))
  assert table.shape == (32128, 4) and table.dtype == np.float32
  ids = vocab.select(str(vocab_path), table.shape[0])
  with open(vocab_path) as f:
    pieces = {int(k): v for k, v in json.load(f).items()}
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  target_table = (table @ q + 1e-3 * rng.normal(size=table.shape)).astype(np.float32)
  return {'ids': ids, 'pieces': pieces, 'q': q, 'rng': rng,
          'source': vocab.take(table, ids, str(vocab_path)),
          'target': vocab.take(target_table, ids, str(vocab_path)),
          'sst2': np.load(shared_path('pretrained_prompts', 't5_1_1_lm100k_base', 'sst2.npy'))}


def test_v2v_lin_recovers_the_rotation(real):
  recycler = recycling.get_recycler('v2v-lin')
  params = recycler.fit(real['source'], real['target'], None)
  assert np.abs(np.asarray(params['w']) - real['q']).max() < 1e-4
  prompt = real['source'][[10, 20, 30]] * 3
  np.testing.assert_allclose(recycler.apply(params, prompt), prompt @ real['q'], atol=1e-3)


def test_nearest_neighbor_on_real_tokens(real):
  words = ['the', 'movie', 'great', 'terrible', 'and']
  by_piece = {v: k for k, v in sorted(real['pieces'].items(), reverse=True)}
  token_ids = np.array([by_piece[w] for w in words])
  rows = np.searchsorted(real['ids'], token_ids)
  prompt = real['source'][rows]
  recycler = recycling.get_recycler('nearest-neighbor')
  params = recycler.fit(real['source'], real['target'], None)
  np.testing.assert_array_equal(relative.nearest_ids(params, prompt), rows)
  np.testing.assert_array_equal(recycler.apply(params, prompt), real['target'][rows])
  # What the recycled prompt reads as in the target model: the same words.
  out = report.nearest_target_tokens(recycler.apply(params, prompt), real['target'], k=2,
                                     token_ids=real['ids'], pieces=real['pieces'])
  assert [p[0] for p in out['pieces']] == words


def test_relative_search_on_the_real_table(real):
  recycler = recycling.get_recycler('relative', num_anchors=256, top_k=64)
  params = recycler.fit(real['source'], real['target'], jax.random.PRNGKey(0))
  prompt = real['rng'].normal(size=(8, 4)) @ real['source'][:4]
  out = recycler.apply(params, prompt)
  assert report.row_cosines(out, prompt @ real['q']).mean() > 0.99


def test_real_prompt_of_the_wrong_width_is_rejected(real):
  recycler = recycling.get_recycler('v2v-lin')
  params = recycler.fit(real['source'], real['target'], None)
  assert real['sst2'].shape == (100, 768)
  with pytest.raises(ValueError, match=r'prompt has shape \(100, 768\); expected '
                     r'\[prompt_length, 4\]'):
    recycler.apply(params, real['sst2'])


def test_real_prompt_through_a_planted_768_to_1024_map(real):
  # The released prompt's rows are far larger than token embeddings
  # (std ~50); the recycled prompt must still be prompt @ W to float32 accuracy.
  prompt = real['sst2']
  rng = np.random.default_rng(1)
  source = rng.normal(size=(2000, 768)).astype(np.float32)
  w = rng.normal(size=(768, 1024)) / np.sqrt(768)
  target = (source @ w).astype(np.float32)
  out = np.asarray(recycling.get_recycler('v2v-lin').apply(
      recycling.get_recycler('v2v-lin').fit(source, target, None), prompt))
  expected = prompt.astype(np.float64) @ w
  assert out.shape == (100, 1024) and np.isfinite(out).all()
  assert np.linalg.norm(out - expected) / np.linalg.norm(expected) < 1e-4
  coefficients = linear.coefficients(recycling.get_recycler('lin-comb').fit(source, target, None),
                                     prompt)
  np.testing.assert_allclose(np.asarray(coefficients) @ source, prompt,
                             atol=1e-3 * np.abs(prompt).max())


def test_vocabulary_ids_outside_the_real_table(real):
  table = np.load(shared_path('t5', 'tiny_embeddings_32128x4.npy'))
  with pytest.raises(ValueError, match=r'token id 32128 is outside the embedding table of '
                     r'32128 rows'):
    vocab.take(table, np.append(real['ids'], 32128), 'filtered-vocab-english-only.json')
