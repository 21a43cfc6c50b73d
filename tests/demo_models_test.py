"""The shipped demo models can be steered: a prompt tuned on A beats A's zero-shot accuracy.

Pins the assets: if prompt_recycling/assets/models regresses to models a prompt
cannot steer (as the earlier 1,500-step minis were), or to models that answer
SST-2 without a prompt (as the ungated stage 2 did, 70.5% zero-shot), this fails.

The demo's settings (10 tokens, lr 0.3, batch 8, 500 steps, inputs 64, targets 2),
class-label init, seed 0, all 872 validation sentences, run as the demo runs
(its own process, one CPU device, single-threaded XLA ops, full optimisation;
the test run's 8 forced devices would split each batch of 8 row by row).
Measured (session 9's models): zero-shot 50.7%, tuned 70.6% (+19.9), the demo's
own number for this prompt (session 7's models: 57.3% and 73.9%). One prompt over
the same 872 sentences leaves a paired difference of about +-3.3 points (95%),
so an 8-point bar is clear of the noise and well under what was measured.
Before the demo tuned with batch 8, 100 steps of 32 were chaotic here (seeds 0
and 1: 58.6% and 51.3% in this process, 63.2% and 70.8% in the demo's).
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip('seqio')

# One prompt tuned and evaluated as the demo does it (prompt_recycling/demo.py's constants).
_SCRIPT = """
import json, pathlib, sys
from prompt_recycling import data, demo, experiment, partitioning, prompts, protocol
demo.single_threaded_xla()
lengths = demo.FEATURE_LENGTHS
data.configure_tasks(str(demo.ASSETS / 't5' / 'sentencepiece.model'), str(demo.ASSETS / 'data'))
model = demo.models(['A'])['A']
target = experiment.TargetModel(model, 'glue_sst2_v2', 'validation', 'rank', lengths,
                                demo.EVAL_BATCH_SIZE, None, partitioning.make_mesh(1))
path = protocol.tune(model, 'glue_sst2_v2', pathlib.Path(sys.argv[1]), init='class_labels',
                     seed=0, prompt_length=demo.PROMPT_LENGTH, train_steps=int(sys.argv[2]),
                     batch_size=demo.TRAIN_BATCH_SIZE, feature_lengths=lengths,
                     learning_rate=demo.LEARNING_RATE, progress=False)
print(json.dumps({'zero_shot': target.baseline(),
                  'tuned': target.evaluate(prompts.load_prompt(path))}))
"""
TRAIN_STEPS = 500  # The demo's default.


def test_a_prompt_tuned_on_shipped_a_beats_its_zero_shot_accuracy(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_DISABLE_MOST_OPTIMIZATIONS')}  # As a user runs the demo.
  result = subprocess.run([sys.executable, '-c', _SCRIPT, str(tmp_path / 'run'), str(TRAIN_STEPS)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  measured = json.loads(result.stdout.strip().splitlines()[-1])
  zero_shot, tuned = measured['zero_shot'], measured['tuned']
  assert tuned['num_examples'] == zero_shot['num_examples'] == 872
  assert tuned['accuracy'] >= zero_shot['accuracy'] + 8, measured
