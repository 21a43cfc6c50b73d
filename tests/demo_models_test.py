"""The shipped demo models can be steered: a prompt tuned on A beats A's zero-shot accuracy.

Pins the assets: if prompt_recycling/assets/models regresses to models a prompt
cannot steer (as the earlier 1,500-step minis were), this fails.

The margin kept, measured on this subset (zero-shot 50.7%) with class-label prompts
tuned at seeds 0 / 1 / 2 (tuned minus zero-shot, points):
  after 25 steps 12.0 / 14.7 / 16.0; 50 steps 11.7 / 11.3 / 11.7; 100 steps 13.0 / 14.7 / 15.3.
The test tunes 50 steps (seed 0): half the cost of 100, at least 3 points clear of the
8-point bar at every seed measured.
"""
import pathlib

import jax
import pytest

from prompt_recycling import data
from prompt_recycling import demo
from prompt_recycling import experiment
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import protocol

pytest.importorskip('seqio')
LENGTHS = {'inputs': 64, 'targets': 4}
SUBSET = 300  # A fixed seeded subset of the 872 validation sentences (`data.sample`, seed 0).
TRAIN_STEPS = 50  # See the module docstring for the margin at 25, 50 and 100 steps.


@pytest.fixture(autouse=True)
def fully_optimised():
  """XLA's full optimisation, as a user runs the demo (conftest turns most of it off).

  The margins above were measured with it; -O0 rounds differently, and 50 steps at
  learning rate 0.3 amplify that (seed 0: 62.3% tuned here, 67.7% at -O0).
  """
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def test_a_prompt_tuned_on_shipped_a_beats_its_zero_shot_accuracy(tmp_path):
  assets = demo.ASSETS
  data.configure_tasks(str(assets / 't5' / 'sentencepiece.model'), str(assets / 'data'))
  model = demo.models(['A'])['A']
  prompt_path = protocol.tune(model, 'glue_sst2_v2', pathlib.Path(tmp_path) / 'run',
                              init='class_labels', seed=0,
                              prompt_length=demo.PROMPT_LENGTH, train_steps=TRAIN_STEPS,
                              batch_size=32, feature_lengths=LENGTHS, learning_rate=0.3,
                              progress=False)
  target = experiment.TargetModel(model, 'glue_sst2_v2', 'validation', 'rank', LENGTHS, 32,
                                  SUBSET, partitioning.make_mesh(1))
  zero_shot = target.baseline()
  tuned = target.evaluate(prompts.load_prompt(prompt_path))
  assert zero_shot['num_examples'] == tuned['num_examples'] == SUBSET
  # Measured on this subset: zero-shot 50.7%, tuned 62.3% (seed 0, 50 steps). A 95% Wilson
  # half-width at n=300 is ~5.6 points, so 8 points is beyond the noise of either number.
  assert tuned['accuracy'] >= zero_shot['accuracy'] + 8, (zero_shot, tuned)
