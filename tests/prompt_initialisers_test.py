"""The prompt initialisers: class-label rows, the sampled-vocab population, the random range."""
import inspect
import re

import jax
import numpy as np
import pytest

from prompt_recycling import prompts

# Row i of this table is i in every column, so a row's value names the token it came from.
EMBEDDING = np.repeat(np.arange(100, dtype=np.float32)[:, None], 8, axis=1)


def test_random_init_draws_the_range_its_docstring_documents():
  """Reads 'U(lo, hi)' / 'U[lo, hi)' from `random_uniform`'s docstring, so it follows the doc."""
  doc = inspect.getdoc(prompts.random_uniform)
  found = re.search(r'U\s*([\[(])\s*([^,\])]+?)\s*,\s*([^,\])]+?)\s*([\])])', doc)
  assert found, f'random_uniform documents no U(lo, hi) range: {doc!r}'
  defaults = {name: p.default for name, p in inspect.signature(prompts.random_uniform).parameters.items()
              if p.default is not inspect.Parameter.empty}
  lo, hi = (float(eval(found.group(i), {}, dict(defaults))) for i in (2, 3))  # pylint: disable=eval-used
  prompt = np.asarray(prompts.random_uniform()(jax.random.key(0), EMBEDDING, (200, 8)))
  assert prompt.shape == (200, 8) and prompt.dtype == np.float32
  assert prompt.min() >= lo and prompt.max() <= hi
  if found.group(4) == ')':
    assert prompt.max() < hi
  # 1,600 draws fill the range: both ends within 1% of it, the mean near the middle.
  width = hi - lo
  assert prompt.min() < lo + 0.01 * width and prompt.max() > hi - 0.01 * width
  assert abs(prompt.mean() - (lo + hi) / 2) < 0.05 * width


def test_sampled_vocab_copies_rows_of_the_most_common_tokens():
  prompt = np.asarray(prompts.sampled_vocab(population=20)(jax.random.key(0), EMBEDDING, (10, 8)))
  ids = prompt[:, 0]
  np.testing.assert_array_equal(prompt, EMBEDDING[ids.astype(int)])  # Whole rows, copied.
  assert ids.max() < 20 and len(set(ids)) == 10  # From the population, without replacement.
  other = prompts.sampled_vocab(population=20)(jax.random.key(1), EMBEDDING, (10, 8))
  assert not np.array_equal(prompt, other)  # The rng decides which.
  wide = np.asarray(prompts.sampled_vocab(population=100)(jax.random.key(0), EMBEDDING, (60, 8)))
  assert wide[:, 0].max() >= 20  # A larger population reaches further down the vocabulary.
  with pytest.raises(ValueError, match='exceeds the embedding table of 100 rows'):
    prompts.sampled_vocab(population=101)(jax.random.key(0), EMBEDDING, (5, 8))


def test_class_labels_fill_the_first_rows_with_label_embeddings():
  init = prompts.class_labels([[7], [4, 6, 11]], fallback=prompts.sampled_vocab(population=3))
  prompt = np.asarray(init(jax.random.key(0), EMBEDDING, (5, 8)))
  np.testing.assert_array_equal(prompt[0], EMBEDDING[7])
  np.testing.assert_allclose(prompt[1], EMBEDDING[[4, 6, 11]].mean(0))  # Multi-token: the mean.
  assert set(prompt[2:, 0]) <= {0.0, 1.0, 2.0}  # The rest from the fallback's population.
  with pytest.raises(ValueError, match='3 class labels do not fit a prompt of length 2'):
    prompts.class_labels([[1], [2], [3]])(jax.random.key(0), EMBEDDING, (2, 8))


def test_class_labels_from_words_use_the_sentencepiece_tokens(tiny_frozen, sentencepiece_model):
  from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top
  from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
  _, params = tiny_frozen
  embedding = np.asarray(params['token_embedder']['embedding'], np.float32)
  init = gin_setup.from_class_labels(['negative', 'positive'], str(sentencepiece_model))
  prompt = np.asarray(init(jax.random.key(0), embedding, (5, embedding.shape[1])))
  vocab = vocabulary.get_vocabulary(str(sentencepiece_model))
  for row, word in enumerate(['negative', 'positive']):
    np.testing.assert_allclose(prompt[row], embedding[list(vocab.encode(word))].mean(0), rtol=1e-6)
