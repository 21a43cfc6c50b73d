"""train.py's run-level choices: selection never on the reported split; t5x's export numbering."""
import jax
import numpy as np
import pytest

from prompt_recycling import data
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import train
from prompt_recycling import trainer
from prompt_recycling.models import t5

LENGTHS = {'inputs': 32, 'targets': 4}


def test_choosing_the_best_step_on_the_reported_split_is_refused(tmp_path):
  with pytest.raises(ValueError, match="eval_split='validation', the split reported"):
    train.train(model_dir=str(tmp_path), mixture_or_task_name='glue_sst2_v2',
                task_feature_lengths=LENGTHS, batch_size=8, train_steps=1,
                initial_checkpoint_path=None, prompt_method=prompts.prompt_tuning(5),
                eval_split='validation', report_split='validation', best_metric='accuracy')
  assert not any(tmp_path.iterdir())  # Refused before anything was written.


def test_exports_are_numbered_from_the_checkpoint_step(tiny_frozen, sst2_examples, tmp_path):
  """After 2 steps from a step-1,100,000 checkpoint the export is checkpoint_1100002 (t5x's names),
  and it holds the trained prompt; the run's own checkpoints keep the run's steps."""
  config, frozen = tiny_frozen
  method = prompts.prompt_tuning(5, prompts.sampled_vocab(1000))

  def make_batches(start):
    return data.batches(data.shuffled_epochs(sst2_examples, seed=0, start=start * 8), 8, LENGTHS)

  state = trainer.train(
      model=t5.T5(config), frozen=frozen, method=method,
      tx=trainer.adafactor(initial_step=1_100_000),
      mesh=partitioning.make_mesh(1, jax.devices()[:1]), make_batches=make_batches,
      total_steps=2, model_dir=str(tmp_path), run_info={}, batch_size=8, save_every=2,
      progress=False, export_step_offset=1_100_000)
  exports = sorted(p.name for p in (tmp_path / 'numpy_checkpoints').iterdir())
  assert exports == ['checkpoint_1100002']
  np.testing.assert_array_equal(
      np.load(tmp_path / 'numpy_checkpoints' / 'checkpoint_1100002' / 'prompt.npy'),
      np.asarray(state.params['prompt']))
  assert int(state.step) == 2 and (tmp_path / 'checkpoints' / '2').exists()
