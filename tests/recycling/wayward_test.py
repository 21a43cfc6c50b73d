"""Wayward prompts: start at an instruction's embedding, a penalty that pulls back to it."""
import jax
import numpy as np
import pytest

from prompt_recycling import data
from prompt_recycling import partitioning
from prompt_recycling import trainer
from prompt_recycling import wayward
from prompt_recycling.models import t5

LENGTHS = {'inputs': 32, 'targets': 4}


def test_distance_is_the_mean_row_squared_l2():
  x, y = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
  assert float(wayward.squared_l2_distance(x, y)) == pytest.approx(np.sum((x - y) ** 2) / 2)


def test_sst2_instruction_is_the_authors_and_sets_the_length(t5_vocab):
  ids = t5_vocab.encode(wayward.SST2_INSTRUCTION)
  assert wayward.SST2_INSTRUCTION.startswith('Classify this movie review')
  # T5's vocabulary has no backtick: the four quote marks are UNK (id 2) in the authors' runs too.
  assert ids.count(2) == 4 and t5_vocab.decode(ids).replace(' \u2047 ', '`') == wayward.SST2_INSTRUCTION
  method = wayward.wayward(ids)
  embedding = np.random.default_rng(0).normal(size=(32128, 4)).astype(np.float32)
  frozen = {'token_embedder': {'embedding': embedding}}
  params = method.init(jax.random.key(0), frozen)
  np.testing.assert_array_equal(params['prompt'], embedding[ids])  # Starts at D: no penalty.
  assert float(method.penalty(params, frozen)) == 0.0
  moved = {'prompt': params['prompt'] + 1.0}
  assert float(method.penalty(moved, frozen)) == pytest.approx(0.01 * 4)  # gamma * embed.


def test_train_step_adds_the_penalty(tiny_frozen, sst2_examples):
  config, frozen = tiny_frozen
  ids = [8, 1782, 13, 3, 9]
  mesh = partitioning.make_mesh(1, jax.devices()[:1])
  batch = partitioning.shard_batch(data.to_batch(sst2_examples[:4], LENGTHS), mesh)
  out = {}
  for gamma in (0.0, 100.0):
    steps = trainer.Steps(t5.T5(config), wayward.wayward(ids, gamma), trainer.adafactor(), mesh,
                          enable_dropout=False)
    f = steps.put_frozen(frozen)
    state = steps.init(jax.random.key(0), f)
    state = state.replace(params={'prompt': state.params['prompt'] + 0.5})  # Away from D.
    new_state, metrics = steps.train(state, f, batch, jax.random.key(1))
    out[gamma] = (metrics, np.asarray(new_state.params['prompt']))
  discrete = np.asarray(frozen['token_embedder']['embedding'])[ids]
  assert float(out[100.0][0]['penalty']) == pytest.approx(100.0 * 0.25 * discrete.shape[1],
                                                          rel=1e-4)
  assert float(out[100.0][0]['loss']) == pytest.approx(
      float(out[0.0][0]['loss']) + float(out[100.0][0]['penalty']), rel=1e-4)
  # The strong penalty moves the prompt back towards D more than the task loss alone.
  far = lambda p: np.abs(p - discrete).mean()
  assert far(out[100.0][1]) < far(out[0.0][1])
