"""The shipped demo models can be steered: a prompt tuned on A beats A's zero-shot accuracy.

Pins the assets: if prompt_recycling/assets/models regresses to models a prompt
cannot steer (as the earlier 1,500-step minis were), or to models that answer
SST-2 without a prompt (as the ungated stage 2 did, 70.5% zero-shot), this fails.

The demo's settings (10 tokens, lr 0.3, inputs 64, targets 2), class-label init,
seed 0, 300 steps, all 872 validation sentences. Measured in this test's
process: zero-shot 57.3%, tuned 73.3% (+16.0). At 100 steps the outcome is
chaotic (a prompt finds A's trigger or not): the demo's own process tuned seeds
0 and 1 to 63.2% and 70.8%, this test's process (other XLA flags, so other
sums) to 58.6% and 51.3%. One prompt over the same 872 sentences leaves a paired
difference of about +-3.3 points (95%), so an 8-point bar is clear of the noise
and 8 points under what was measured.
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
LENGTHS = {'inputs': 64, 'targets': 2}  # The demo's.
TRAIN_STEPS = 300  # See the module docstring for 100.
SEEDS = (0,)


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


def test_prompts_tuned_on_shipped_a_beat_its_zero_shot_accuracy(tmp_path):
  assets = demo.ASSETS
  data.configure_tasks(str(assets / 't5' / 'sentencepiece.model'), str(assets / 'data'))
  model = demo.models(['A'])['A']
  target = experiment.TargetModel(model, 'glue_sst2_v2', 'validation', 'rank', LENGTHS, 32,
                                  None, partitioning.make_mesh(1))
  zero_shot = target.baseline()
  tuned = []
  for seed in SEEDS:
    prompt_path = protocol.tune(model, 'glue_sst2_v2', pathlib.Path(tmp_path) / f'run{seed}',
                                init='class_labels', seed=seed,
                                prompt_length=demo.PROMPT_LENGTH, train_steps=TRAIN_STEPS,
                                batch_size=32, feature_lengths=LENGTHS, learning_rate=0.3,
                                progress=False)
    result = target.evaluate(prompts.load_prompt(prompt_path))
    assert result['num_examples'] == zero_shot['num_examples'] == 872
    tuned.append(result['accuracy'])
  assert sum(tuned) / len(tuned) >= zero_shot['accuracy'] + 8, (zero_shot, tuned)
