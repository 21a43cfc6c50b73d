"""Prompt initialisers against the prompt-tuning release's (golden numbers, tests/testdata/fidelity)."""
import pathlib

import jax
import numpy as np
import pytest

from prompt_recycling import prompts

GOLDEN = np.load(pathlib.Path(__file__).parent / 'testdata' / 'fidelity' / 'prompt_inits.npz')
SHAPE = (6, 8)


def _table():
  """The generator script's embedding table: sin(0.37 v + 1.3 d), [64, 8]."""
  v, d = np.meshgrid(np.arange(64), np.arange(8), indexing='ij')
  return np.sin(0.37 * v + 1.3 * d).astype(np.float32)


KEY = jax.random.PRNGKey(42)  # The same raw key the release's initialisers were given.


@pytest.mark.parametrize('name,init', [
    ('random', prompts.random_uniform()),
    ('sampled', prompts.sampled_vocab(40)),
    ('sampled_replace', prompts.sampled_vocab(4)),  # Longer than the population: with replacement.
    ('class_labels', prompts.class_labels([[5, 17], [9]], prompts.sampled_vocab(40))),
], ids=lambda x: x if isinstance(x, str) else '')
def test_matches_prompt_tuning_release(name, init):
  np.testing.assert_allclose(np.asarray(init(KEY, _table(), SHAPE)), GOLDEN[name],
                             rtol=1e-6, atol=1e-7)


def test_random_default_is_half_open_zero_to_scale_and_paper_is_centered():
  code = np.asarray(prompts.random_uniform()(KEY, None, (100, 64)))
  paper = np.asarray(prompts.random_uniform(centered=True)(KEY, None, (100, 64)))
  assert code.min() >= 0.0 and code.max() < 0.5
  assert paper.min() < -0.4 and paper.max() > 0.4


def test_class_labels_refuses_more_labels_than_rows():
  with pytest.raises(ValueError, match='3 class labels do not fit a prompt of length 2'):
    prompts.class_labels([[1], [2], [3]])(KEY, _table(), (2, 8))
