"""One process of a multi-process `train.train` run, or its one-process reference.

Started by tests/multiprocess_test.py:

    python tests/scripts/multiprocess_train.py train OUT_DIR PROCESS_ID NUM_PROCESSES PORT
    python tests/scripts/multiprocess_train.py reference OUT_DIR NUM_HOSTS

`train`: each process (2 CPU devices, gloo collectives) calls `train.train`,
the function `python -m prompt_recycling.train` runs, on the real SST-2 task:
it reads its own shard of the split it trains on (SPLIT), shuffles it, and
feeds its rows of every global batch.

`reference`: one process with as many devices as the NUM_HOSTS processes have
together reads each host's shard through the same `data.seqio_examples`
(as process i of NUM_HOSTS), lays the shards' streams side by side (global
batch = host 0's rows, then host 1's, ...: the order `shard_batch` assembles
them in) and calls `train.train` on that global stream.

Both write the logged losses to OUT_DIR/result.npz (process 0) and the
prompts the run exported at steps 3 and 6 under OUT_DIR/model; the reference
also writes the input tokens of the examples each host read.
"""
import os
import sys
from unittest import mock

DEVICES_PER_HOST = 2
STEPS, BATCH_SIZE, LENGTHS = 6, 8, {'inputs': 32, 'targets': 4}
# SST-2's validation split (872 rows) stands in for its training split: the path is the same,
# and the whole-split shuffle of the 67,349 training rows costs more than these six steps.
SPLIT = 'validation'

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import conftest  # pylint: disable=g-import-not-at-top  (sets 8 devices; overridden next)

# Before JAX starts its backend: 2 devices a process, the reference as many as all the hosts.
_DEVICES = DEVICES_PER_HOST * (int(sys.argv[3]) if sys.argv[1] == 'reference' else 1)
os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={_DEVICES}'
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from prompt_recycling import checkpoints, data, prompts, train, trainer  # pylint: disable=g-import-not-at-top,g-multiple-import


class _Recorder:
  """Stands in for the run's metric writer: keeps the logged losses."""

  def __init__(self):
    self.losses = {}

  def write_scalars(self, step, scalars):
    if 'loss' in scalars:
      self.losses[step] = float(scalars['loss'])

  def flush(self):
    pass

  def close(self):
    pass


def _train(out_dir):
  """`train.train` as the entry point calls it (gin-free); returns the logged losses."""
  shared = conftest.SHARED_DATA
  checkpoint = str(shared / 't5' / 'test_t5_1_1_tiny' / 'checkpoint_3')
  _, config = checkpoints.load_params(checkpoint)
  recorder = _Recorder()
  with mock.patch.object(trainer, '_metric_writer', lambda model_dir: recorder):
    train.train(model_dir=os.path.join(out_dir, 'model'), mixture_or_task_name='glue_sst2_v2',
                task_feature_lengths=LENGTHS, batch_size=BATCH_SIZE, train_steps=STEPS,
                initial_checkpoint_path=checkpoint, model_config=config,
                prompt_method=prompts.prompt_tuning(5, prompts.sampled_vocab(1000)),
                train_split=SPLIT, save_every=3, log_every=1, progress=False,
                vocabulary_path=str(shared / 't5' / 'sentencepiece.model'), data_dir=str(shared))
  return np.asarray([recorder.losses[s] for s in sorted(recorder.losses)])


def run_process(out_dir, process_id, num_processes, port):
  if num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'127.0.0.1:{port}', num_processes, process_id)
  assert jax.device_count() == DEVICES_PER_HOST * num_processes, jax.devices()
  losses = _train(out_dir)
  if jax.process_index() == 0:
    np.savez(os.path.join(out_dir, 'result.npz'), losses=losses)


def run_reference(out_dir, num_hosts):
  """One process trains on the global stream that `num_hosts` hosts' shards make together."""
  assert jax.device_count() == DEVICES_PER_HOST * num_hosts, jax.devices()
  data.configure_tasks(str(conftest.SHARED_DATA / 't5' / 'sentencepiece.model'),
                       str(conftest.SHARED_DATA))
  host_bs = BATCH_SIZE // num_hosts
  per_host = []
  for i in range(num_hosts):  # What train.py's make_batches reads as process i of num_hosts.
    with mock.patch.object(jax, 'process_index', return_value=i), \
         mock.patch.object(jax, 'process_count', return_value=num_hosts):
      per_host.append(data.take(data.seqio_examples('glue_sst2_v2', SPLIT, LENGTHS, shuffle=True,
                                                     seed=0, repeat=True),  # train's shuffle_seed.
                                STEPS * host_bs))
  stream = [ex for step in range(STEPS) for host in per_host
            for ex in host[step * host_bs:(step + 1) * host_bs]]

  def global_stream(task, split, lengths, *, skip, **kwargs):
    assert (task, split, skip, kwargs.get('per_host', True)) == ('glue_sst2_v2', SPLIT, 0, True)
    return iter(stream)

  with mock.patch.object(data, 'seqio_examples', global_stream):
    losses = _train(out_dir)
  np.savez(os.path.join(out_dir, 'result.npz'), losses=losses,
           host_inputs=np.stack([data.to_batch(host, LENGTHS)['encoder_input_tokens']
                                 for host in per_host]))


if __name__ == '__main__':
  if sys.argv[1] == 'train':
    run_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
  else:
    run_reference(sys.argv[2], int(sys.argv[3]))
