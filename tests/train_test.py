"""train.py's run-level choices: selection never on the reported split; t5x's export numbering."""
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO
from prompt_recycling import data
from prompt_recycling import gin_setup  # pylint: disable=unused-import  (registers the configurables)
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


@pytest.mark.parametrize('size', ['small', 'base', 'large', 'xl', 'xxl'])
def test_lm100k_prompt_gin_runs_as_the_release(size):
  """Model file + runs/prompt_finetune.gin: dropout 0.1, bfloat16, batch 128 x 50k, decoding,
  and an Adafactor that continues lm100k's step 1,100,000 (same updates as trainer.adafactor's)."""
  gin.clear_config()
  try:
    gin.add_config_file_search_path(str(REPO))
    # `train` is registered only by the entry point, so its bindings are skipped here.
    gin.parse_config_files_and_bindings(
        [str(REPO / f'gin_configs/models/t5_1_1_lm100k_{size}_prompt.gin'),
         str(REPO / 'gin_configs/runs/prompt_finetune.gin')],
        ["MODEL_DIR = '/tmp/unused'", "MIXTURE_OR_TASK_NAME = 'glue_sst2_v2_taskless'"],
        skip_unknown=True)
    config = gin.get_configurable('t5.T5Config')()
    assert (config.dropout_rate, config.dtype) == (0.1, 'bfloat16')
    assert gin.query_parameter('%CHECKPOINT_STEP') == 1_100_000
    assert gin.query_parameter('%BATCH_SIZE') == 128
    assert gin.query_parameter('%TRAIN_STEPS') == 50_000
    assert gin.query_parameter('%EVAL_MODE') == 'decode'
    tx = gin.get_configurable('optim.adafactor')()
  finally:
    gin.clear_config()
  def run(tx):  # Two steps whose gradients differ 100-fold: the decay decides the second update.
    params = {'prompt': jnp.ones((4, 6))}
    state = tx.init(params)
    for scale in (1.0, 0.01):
      grads = {'prompt': scale * jnp.linspace(-1.0, 1.0, 24).reshape(4, 6)}
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    return np.asarray(params['prompt'])
  got = run(tx)
  np.testing.assert_array_equal(got, run(trainer.adafactor(initial_step=1_100_000)))
  assert np.abs(got - run(trainer.adafactor())).max() > 1e-2  # The offset reached the optimizer.
