"""The paper's protocol end to end on two small models: tune, recycle, evaluate through the target."""
import csv
import time

import jax
import numpy as np
import pytest

from conftest import shared_path
from prompt_recycling import checkpoints
from prompt_recycling import evaluation
from prompt_recycling import experiment
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import protocol
from prompt_recycling import trainer
from prompt_recycling.models import t5
from prompt_recycling.recycling import base as recycling_base

pytest.importorskip('seqio')
LENGTHS = {'inputs': 32, 'targets': 4}


@pytest.fixture
def sst2_dir(tmp_path):
  """A data directory with the real SST-2 validation split and the first 2,000 training rows.

  The protocol trains a few steps of batch 8; shuffling all 67,349 training rows (the local
  source shuffles the whole split) would cost more than the three runs' steps.
  """
  root = tmp_path / 'data'
  (root / 'sst2').mkdir(parents=True)
  with shared_path('sst2', 'train.tsv').open() as f:
    (root / 'sst2' / 'train.tsv').write_text(''.join(f.readline() for _ in range(2001)))
  (root / 'sst2' / 'dev.tsv').symlink_to(shared_path('sst2', 'dev.tsv'))
  yield root
  import tasks  # pylint: disable=g-import-not-at-top
  tasks.reset_data_source()  # protocol.run pointed the tasks here; later tests must not read it.


@pytest.fixture
def two_models(tmp_path, tiny_t5x_checkpoint):
  """A: the real tiny T5X checkpoint; B: the same architecture, another random init."""
  params, config = checkpoints.load_params(str(tiny_t5x_checkpoint))
  other = jax.device_get(trainer.random_frozen(t5.T5(config), jax.random.key(7), None))
  b_path = checkpoints.save_t5x(other, str(tmp_path / 'model_b'), 1)
  return {'A': {'path': str(tiny_t5x_checkpoint)}, 'B': {'path': b_path}}


def test_protocol_recycles_and_evaluates_through_the_target(tmp_path, two_models, sst2_dir):
  out = tmp_path / 'protocol'
  recyclers = {'v2v-lin': {'name': 'v2v-lin'}, 'nearest-neighbor': {'name': 'nearest-neighbor'}}
  results = protocol.run(
      models=two_models, source='A', targets=['B'], task='glue_sst2_v2', output_dir=str(out),
      recyclers=recyclers, seeds=[0, 1], inits=['class_labels'], prompt_length=5,
      train_steps=3, batch_size=8, task_feature_lengths=LENGTHS, max_eval_examples=16,
      population=1000, vocabulary='all',  # The recomputation below fits on every row.
      vocabulary_path=str(shared_path('t5', 'sentencepiece.model')),
      data_dir=str(sst2_dir), progress=False,
      workers=2)  # Side by side in threads; the checks below recompute one at a time.

  kinds = {(r.source, r.target, r.recycler) for r in results}
  assert ('-', 'B', 'baseline') in kinds and ('B', 'B', experiment.TUNED) in kinds
  assert ('A', 'A', experiment.TUNED) in kinds
  assert sum(r.recycler == 'v2v-lin' for r in results) == 2  # One per source prompt.
  with (out / 'results.csv').open() as f:
    assert len(list(csv.DictReader(f))) == len(results)
  summary = (out / 'summary.md').read_text()
  assert '| A -> B | v2v-lin |' in summary and 'success rate' in summary
  assert (out / 'summary.png').stat().st_size > 1000

  # Recompute both recycled prompts' accuracies independently, through model B. One of
  # them alone could be prompt-blind on 16 examples (A_class_labels_0 scores the same as
  # B's no-prompt baseline); the pair is not.
  params_b, config_b = checkpoints.load_params(two_models['B']['path'])
  rec = recycling_base.get_recycler('v2v-lin')
  fitted = rec.fit(checkpoints.load_token_embedding(two_models['A']['path']),
                   params_b['token_embedder']['embedding'], jax.random.key(0))
  mesh = partitioning.make_mesh(1)
  steps = trainer.Steps(t5.T5(config_b), prompts.prompt_tuning(5), None, mesh)
  evaluate = evaluation.task_evaluator('glue_sst2_v2', split='validation', feature_lengths=LENGTHS,
                                       mode='rank', batch_size=8, max_examples=16)
  frozen_b = steps.put_frozen(params_b)
  recomputed = {}
  for seed in (0, 1):
    source_prompt = prompts.load_prompt(out / 'runs' / f'A_class_labels_{seed}' / 'numpy_checkpoints'
                                        / 'checkpoint_3' / 'prompt.npy')
    recycled = np.asarray(rec.apply(fitted, source_prompt))
    assert recycled.shape == (5, config_b.emb_dim)
    metrics = evaluate(steps, trainer.put_on_mesh({'prompt': recycled}, steps.params_shardings),
                       frozen_b, 0)
    recomputed[f'A_class_labels_{seed}@3'] = metrics['accuracy']
  recorded = {r.prompt: r.metric for r in results if r.recycler == 'v2v-lin'}
  assert recorded == pytest.approx(recomputed)
  # A prompt tuned alongside another equals the same run tuned alone.
  alone = protocol.tune(two_models['A'], 'glue_sst2_v2', tmp_path / 'alone', init='class_labels',
                        seed=1, prompt_length=5, train_steps=3, batch_size=8,
                        feature_lengths=LENGTHS, learning_rate=0.3, population=1000,
                        progress=False)
  np.testing.assert_array_equal(
      prompts.load_prompt(alone),
      prompts.load_prompt(out / 'runs' / 'A_class_labels_1' / 'numpy_checkpoints' / 'checkpoint_3'
                          / 'prompt.npy'))
  baseline = next(r.metric for r in results if r.recycler == 'baseline' and r.target == 'B')
  assert any(v != baseline for v in recomputed.values()), (recomputed, baseline)


def test_mismatched_vocabularies_are_refused():
  with pytest.raises(ValueError, match='32128 and 32100 rows'):
    experiment.select_rows(np.zeros((32128, 4)), np.zeros((32100, 8)), 'all')


def test_map_in_threads_keeps_the_order_and_starts_nothing_after_an_error():
  assert experiment.map_in_threads(lambda x: x * x, list(range(7)), 3) == [x * x for x in range(7)]
  started = []

  def run(x):
    started.append(x)
    if x == 0:
      raise ValueError('run 0 failed')
    time.sleep(0.05)
    return x

  with pytest.raises(ValueError, match='run 0 failed'):
    experiment.map_in_threads(run, list(range(20)), 2)
  assert len(started) < 20, started
