"""Gradient accumulation on an 8-device data-parallel mesh: one device's update, no resharding."""
import re

import jax
import numpy as np
import pytest

from prompt_recycling import data
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling.models import t5

LENGTHS = {'inputs': 32, 'targets': 4}
# Ops that move batch rows between devices; the step may only all-reduce (the gradients).
_RESHARDING = ('all-gather', 'all-to-all', 'collective-permute', 'reduce-scatter')


def _step(config, frozen, examples, devices, accum):
  mesh = partitioning.make_mesh(1, devices)
  steps = trainer.Steps(t5.T5(config), prompts.prompt_tuning(5, prompts.sampled_vocab(1000)),
                        trainer.adafactor(), mesh, accum_steps=accum, enable_dropout=False)
  f = steps.put_frozen(frozen)
  state = steps.init(jax.random.key(0), f)
  batch = partitioning.shard_batch(data.to_batch(examples, LENGTHS), mesh)
  rng = jax.random.key(1)
  with partitioning.axis_rules(mesh, steps.rules):
    hlo = steps._train.lower(state, f, batch, rng).compile().as_text()  # pylint: disable=protected-access
  state, metrics = steps.train(state, f, batch, rng)
  return float(metrics['loss']), np.asarray(state.params['prompt']), hlo


@pytest.mark.parametrize('accum', [2, 4])
def test_accumulation_on_eight_devices_equals_one_device_without_resharding(
    tiny_frozen, sst2_examples, accum):
  assert len(jax.devices()) == 8
  config, frozen = tiny_frozen
  loss_1, prompt_1, _ = _step(config, frozen, sst2_examples, jax.devices()[:1], 1)
  loss_8, prompt_8, hlo = _step(config, frozen, sst2_examples, jax.devices(), accum)
  assert loss_8 == pytest.approx(loss_1, rel=1e-5)
  np.testing.assert_allclose(prompt_8, prompt_1, rtol=1e-4, atol=1e-5)
  moved = [line.strip()[:160] for line in hlo.splitlines()
           if any(re.search(rf'\b{op}(-start)?\(', line) for op in _RESHARDING)]
  assert not moved, 'the compiled step moves batch rows between devices:\n' + '\n'.join(moved)
  # The gradients (and the loss sums) are all-reduced once per step, not once per microbatch.
  assert len(re.findall(r'\ball-reduce(-start)?\(', hlo)) == 1
