"""One process of a multi-process prompt-tuning run (started by tests/multiprocess_test.py).

    python tests/scripts/multiprocess_train.py OUT_DIR PROCESS_ID NUM_PROCESSES PORT

Each process owns 2 CPU devices; collectives go over gloo. Every process
builds the same global batches and feeds its own rows, so any number of
processes trains on exactly the same data. Process 0 writes the losses and the
final prompt to OUT_DIR/result.npz.
"""
import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import conftest  # pylint: disable=g-import-not-at-top
from prompt_recycling import checkpoints, data, partitioning, prompts, trainer, vocabulary  # pylint: disable=g-import-not-at-top,g-multiple-import
from prompt_recycling.models import t5  # pylint: disable=g-import-not-at-top


def main(out_dir, process_id, num_processes, port):
  if num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'127.0.0.1:{port}', num_processes, process_id)
  params, config = checkpoints.load_params(str(conftest.SHARED_DATA / 't5/test_t5_1_1_tiny/checkpoint_3'))
  vocab = vocabulary.get_vocabulary(str(conftest.SHARED_DATA / 't5/sentencepiece.model'))
  examples = [{'inputs': list(vocab.encode(f'sst2 sentence: {s}')) + [1],
               'targets': list(vocab.encode(label)) + [1]} for s, label in conftest.read_sst2(32)]
  lengths, batch_size = {'inputs': 32, 'targets': 4}, 8

  def make_batches(start):
    stream = data.shuffled_epochs(examples, seed=0, start=start * batch_size)
    return (data.host_rows(b) for b in data.batches(stream, batch_size, lengths))

  losses = {}

  class Writer:
    def write_scalars(self, step, scalars):
      losses[step] = float(scalars['loss'])

    def flush(self):
      pass

  state = trainer.train(
      model=t5.T5(config), frozen=params, method=prompts.prompt_tuning(5, prompts.sampled_vocab(1000)),
      tx=trainer.adafactor(), mesh=partitioning.make_mesh(2), make_batches=make_batches,
      total_steps=6, model_dir=os.path.join(out_dir, 'model'), run_info={'test': 'multiprocess'},
      batch_size=batch_size, save_every=3, log_every=1, progress=False, writer=Writer())
  prompt = np.asarray(jax.device_get(state.params['prompt']))
  if jax.process_index() == 0:
    np.savez(os.path.join(out_dir, 'result.npz'), prompt=prompt,
             losses=np.asarray([losses[s] for s in sorted(losses)]))


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
