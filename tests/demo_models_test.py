"""The shipped demo models can be steered: a prompt tuned on A beats A's zero-shot accuracy.

Pins the assets: if prompt_recycling/assets/models regresses to models a prompt
cannot steer (as the earlier 1,500-step minis were), this fails.
"""
import pathlib

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


def test_a_prompt_tuned_on_shipped_a_beats_its_zero_shot_accuracy(tmp_path):
  assets = demo.ASSETS
  data.configure_tasks(str(assets / 't5' / 'sentencepiece.model'), str(assets / 'data'))
  model = demo.models(['A'])['A']
  prompt_path = protocol.tune(model, 'glue_sst2_v2', pathlib.Path(tmp_path) / 'run',
                              init='class_labels', seed=0,
                              prompt_length=demo.PROMPT_LENGTH, train_steps=100,
                              batch_size=32, feature_lengths=LENGTHS, learning_rate=0.3,
                              progress=False)
  target = experiment.TargetModel(model, 'glue_sst2_v2', 'validation', 'rank', LENGTHS, 32,
                                  SUBSET, partitioning.make_mesh(1))
  zero_shot = target.baseline()
  tuned = target.evaluate(prompts.load_prompt(prompt_path))
  assert zero_shot['num_examples'] == tuned['num_examples'] == SUBSET
  # Measured on this subset: zero-shot ~50%, tuned ~63%. A 95% Wilson half-width at n=300 is
  # ~5.6 points, so 8 points is beyond the noise of either number.
  assert tuned['accuracy'] >= zero_shot['accuracy'] + 8, (zero_shot, tuned)
