r"""Lists the registered tasks, or prints a few preprocessed examples of one.

  python -m tasks.show_tasks                      # every task and mixture
  python -m tasks.show_tasks --task=glue_sst2_v2 --n=3 \
      --vocab=/path/sentencepiece.model --data_dir=/path/to/data   # local files

Expected: for --task, n examples of the split, each as text and token ids:

  inputs:  sst2 sentence: it 's a charming and often affecting journey .
           [3, 7, 7, 17, 357, 7142, 10, 34, ...]
  targets: positive
           [1465, 1]

--data_dir and --vocab fall back on $PROMPT_RECYCLING_DATA_DIR and
$PROMPT_RECYCLING_VOCAB; without a data directory examples come from TFDS.
"""
import sys
from typing import Optional, TextIO

from absl import app
from absl import flags

_TASK = flags.DEFINE_string('task', None, 'Task to show examples of; unset: list all tasks.')
_N = flags.DEFINE_integer('n', 3, 'How many examples to show.')
_SPLIT = flags.DEFINE_string('split', None, "Split; default 'validation' (else the task's first).")
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Local data directory (default: TFDS).')
_VOCAB = flags.DEFINE_string('vocab', None, 'SentencePiece model of the T5 vocabulary.')
_INPUTS_LENGTH = flags.DEFINE_integer('inputs_length', 512, 'Inputs are trimmed to this.')
_TARGETS_LENGTH = flags.DEFINE_integer('targets_length', 64, 'Targets are trimmed to this.')


def list_tasks(out: TextIO = sys.stdout) -> None:
  """One line per task or mixture: name, splits, label words."""
  import tasks  # pylint: disable=g-import-not-at-top
  for name in tasks.names():
    task = tasks.get_task(name)
    if tasks.registry.is_mixture(name):
      out.write(f'{name}  mixture of {len(task.tasks)} tasks\n')
      continue
    words = tasks.registry._LABEL_WORDS[name]  # pylint: disable=protected-access
    if callable(words):
      labels = 'candidates: the objects in the data'
    elif words is None:
      labels = 'generative'
    else:
      labels = 'labels: ' + ' | '.join(words)
    out.write(f'{name}  splits: {",".join(task.splits)}  {labels}\n')


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def show_examples(name: str, n: int = 3, split: Optional[str] = None, *,
                  inputs_length: int = 512, targets_length: int = 64,
                  out: TextIO = sys.stdout) -> None:
  """Prints `n` preprocessed examples of a task: texts, token ids, other features."""
  import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(name)
  if split is None:
    split = 'validation' if 'validation' in task.splits else task.splits[0]
  out.write(f'{name} [{split}] from {tasks.data_source().describe()}\n')
  ds = task.get_dataset({'inputs': inputs_length, 'targets': targets_length}, split=split,
                        shuffle=False)
  for i, ex in enumerate(ds.take(n).as_numpy_iterator()):
    out.write(f'--- example {i}\n')
    for key in ('inputs', 'targets'):
      out.write(f'{key}: {_text(ex.get(key + "_pretokenized", b""))}\n')
      out.write(f'{" " * (len(key) + 2)}{ex[key].tolist()}\n')
    for key, value in ex.items():
      if key not in ('inputs', 'targets', 'inputs_pretokenized', 'targets_pretokenized'):
        value = [_text(v) for v in value] if getattr(value, 'ndim', 0) else _text(value)
        out.write(f'{key}: {value}\n')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import tasks  # pylint: disable=g-import-not-at-top
  if _DATA_DIR.value:
    tasks.set_data_source(local_dir=_DATA_DIR.value)
  if _VOCAB.value:
    tasks.set_vocabulary(_VOCAB.value)
  try:
    if _TASK.value is None:
      list_tasks()
    else:
      show_examples(_TASK.value, _N.value, _SPLIT.value, inputs_length=_INPUTS_LENGTH.value,
                    targets_length=_TARGETS_LENGTH.value)
  except (ValueError, FileNotFoundError) as e:  # Our errors say what to do; no traceback.
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
