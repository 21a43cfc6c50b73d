r"""The embedded default: recycle SST-2 prompts between two small T5s and show the table.

    python -m prompt_recycling.demo [--output_dir=recycling_demo] [--train_steps=300]

Runs offline from what ships in `prompt_recycling/assets/`: two T5 1.1 "mini"
models this project pretrained itself (A: seed 1, B: seed 2; span corruption
then LM adaptation on Wikipedia text), an SST-2 sample and the T5 vocabulary.
It tunes prompts on A (two seeds, class-label init), tunes one on B (the upper
bound), recycles A's prompts to B with every recycler, evaluates everything on
SST-2 validation through B, and prints the recycling paper's table. About 3
minutes on 2 CPU cores (2 min 40 s measured).
"""
import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TensorFlow (SeqIO's data) is chatty.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top

from prompt_recycling import protocol  # pylint: disable=g-import-not-at-top

ASSETS = pathlib.Path(__file__).resolve().parent / 'assets'

_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'recycling_demo', 'Where runs and results go.')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 300, 'Prompt-tuning steps per prompt.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1'], 'Seeds of the prompts tuned on model A.')
_MODEL_A = flags.DEFINE_string('model_a', None, 'Source T5X/HF checkpoint (default: shipped mini A).')
_MODEL_B = flags.DEFINE_string('model_b', None, 'Target T5X/HF checkpoint (default: shipped mini B).')

CAVEAT = """\
What these numbers are: SST-2 validation accuracy (872 sentences, rank classification over
'negative'/'positive') of prompts tuned on model A and recycled to model B, next to B's
zero-shot accuracy (no prompt) and a prompt tuned directly on B.
What they are not: the paper's numbers. A and B are tiny T5 1.1 models (embed 64, 3+3 layers)
pretrained by this project for 1,500 steps on 2 CPU cores, and the prompts are tuned for a few
hundred steps on a 4,000-sentence sample; the papers used T5 1.1 lm100k Base/Large and 30k
steps. On these models every accuracy above is at chance (50.9% of the sentences are positive),
prompts tuned directly on A or B included: the table shows the pipeline working end to end, not
how well the recyclers work. See REPRODUCTION.md for the measured protocol and the commands for
the real checkpoints.
"""


def models(overrides=None):
  """The shipped checkpoints (or the given paths): name -> {'path'}."""
  found = {}
  for name, directory in (('A', 'mini_a'), ('B', 'mini_b')):
    if (overrides or {}).get(name):
      found[name] = {'path': overrides[name]}
      continue
    checkpoints = sorted((ASSETS / 'models' / directory).glob('checkpoint_*'))
    if not checkpoints:
      raise FileNotFoundError(f'The demo model {ASSETS / "models" / directory} is missing from '
                              'this checkout; see prompt_recycling/assets/models/README.md.')
    found[name] = {'path': str(checkpoints[-1])}
  return found


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Progress bars, not checkpoint chatter.
  out = pathlib.Path(_OUTPUT_DIR.value)
  protocol.run(
      models=models({'A': _MODEL_A.value, 'B': _MODEL_B.value}), source='A', targets=['B'], task='glue_sst2_v2', output_dir=str(out),
      recyclers={name: {'name': name} for name in
                 ('v2v-lin', 'lin-comb', 'v2v-nn', 'neural-projector', 'relative', 'nearest-neighbor')},
      seeds=[int(s) for s in _SEEDS.value], inits=['class_labels'], prompt_length=20,
      train_steps=_TRAIN_STEPS.value, batch_size=32,
      task_feature_lengths={'inputs': 64, 'targets': 4}, learning_rate=0.3,
      eval_split='validation', eval_mode='rank', vocabulary='all', population=5000,
      vocabulary_path=str(ASSETS / 't5' / 'sentencepiece.model'),
      data_dir=str(ASSETS / 'data'))
  print()
  print((out / 'summary.md').read_text())
  print(CAVEAT)
  print(f'Per-prompt rows: {out / "results.csv"}; plot: {out / "summary.png"}')


if __name__ == '__main__':
  app.run(main)
