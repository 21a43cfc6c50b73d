"""`trainer.adafactor` against t5x's own Adafactor (golden numbers, tests/testdata/fidelity/README.md)."""
import pathlib

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prompt_recycling import trainer

GOLDEN = pathlib.Path(__file__).parent / 'testdata' / 'fidelity' / 't5x_adafactor.npz'
LM100K_STEP = 1_100_000


def _inputs(shape, steps):
  """The generator script's formulas (README): prompt and per-step gradients."""
  i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing='ij')
  prompt = (0.5 * np.sin(i + 2.0 * j)).astype(np.float32)
  grads = np.stack([0.01 * np.cos(3.0 * i + j + 7.0 * t) * (100.0 if t == 1 else 1.0)
                    for t in range(steps)]).astype(np.float32)
  return prompt, grads


def _run(tx, prompt, grads):
  params = {'prompt': jnp.asarray(prompt)}
  state = tx.init(params)
  out = []
  for g in grads:
    updates, state = tx.update({'prompt': jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, updates)
    out.append(np.asarray(params['prompt']))
  return np.stack(out)


@pytest.mark.parametrize('shape,name', [((4, 6), 'short'), ((128, 130), 'long')],
                         ids=['unfactored', 'factored'])
@pytest.mark.parametrize('initial_step,tag', [(LM100K_STEP, 'offset'), (0, 'fresh')],
                         ids=['lm100k_step', 'from_zero'])
def test_matches_t5x_adafactor(shape, name, initial_step, tag):
  golden = np.load(GOLDEN)[f'{name}_{tag}']
  prompt, grads = _inputs(shape, 4)
  ours = _run(trainer.adafactor(initial_step=initial_step), prompt, grads)
  if golden.ndim == 2:  # Only the last step is stored for the large prompt.
    ours = ours[-1]
  np.testing.assert_allclose(ours, golden, rtol=1e-5, atol=1e-6)


def test_checkpoint_step_changes_the_updates():
  """The offset is not cosmetic: t5x's restored step gives different updates from a count at 0."""
  golden = np.load(GOLDEN)
  assert np.abs(golden['short_offset'] - golden['short_fresh']).max() > 1e-3
  prompt, grads = _inputs((4, 6), 4)
  ours = _run(trainer.adafactor(initial_step=0), prompt, grads)
  assert np.abs(ours - golden['short_offset']).max() > 1e-3
