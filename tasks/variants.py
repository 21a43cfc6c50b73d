"""Task variants of the prompt-tuning and prompt-recycling code: taskless inputs, held-out splits.

`<task>_taskless` is `<task>` without the task name T5 puts first in the inputs
(prompt-tuning's `taskless_*` tasks, `remove_first_text_token`): 'rte
hypothesis: ... premise: ...' -> 'hypothesis: ... premise: ...'. Its splits are
those of the recycling experiments (`prompt_tuning/recycling/data/*.py`):

  split        reads
  train        train[:-N]     (train on all but the last N training examples)
  validation   train[-N:]     (model selection / early stopping)
  test         validation     (what is reported; IMDB: its test split)

N = 1,000, or 10,000 for QQP and ReCoRD as in the recycling code. A task whose
training set has fewer than 2N examples (CB, COPA, WSC, WNLI) keeps its own
train and validation splits, and 'test' is its validation split (named
deviation: holding out 1,000 would leave nothing to train on). Tasks without a
train split (diagnostics, MNLI's matched / mismatched sets) keep theirs.

Verbalizer variants (`verbalizer_name`) are taskless too, as the recycling code's.
"""
from typing import Dict, Mapping, Optional, Sequence

TASKLESS_SUFFIX = '_taskless'
DEFAULT_HELD_OUT = 1_000
HELD_OUT = {'glue_qqp_v2': 10_000, 'super_glue_record_v102': 10_000}


def taskless_name(name: str) -> str:
  """'glue_sst2_v2' -> 'glue_sst2_v2_taskless'."""
  return f'{name}{TASKLESS_SUFFIX}'


def verbalizer_name(name: str, words: Sequence[str]) -> str:
  """The taskless task with other label words, named as the recycling code does.

  ('glue_qqp_v2', ('not duplicate', 'duplicate')) -> 'glue_qqp_v2_taskless_not_spc_duplicate_duplicate'.
  """
  return f'{taskless_name(name)}_' + '_'.join('_spc_'.join(w.split()) for w in words)


def held_out_size(name: str) -> int:
  """How many of the last training examples `name`'s taskless variant validates on."""
  return HELD_OUT.get(name, DEFAULT_HELD_OUT)


def held_out_splits(train_examples: Optional[int], held_out: int,
                    native: Optional[Mapping[str, str]] = None,
                    report: str = 'validation') -> Dict[str, str]:
  """Split name -> the split (TFDS slicing syntax) it reads, for a taskless variant.

  Args:
    train_examples: size of the task's train split (None: it has none).
    held_out: N, the training examples held out for validation.
    native: the task's own split names (default train / validation / test).
    report: the split reported as 'test' (IMDB has no validation: 'test').
  """
  native = dict(native or {s: s for s in ('train', 'validation', 'test')})
  if train_examples is None or 'train' not in native:
    return {s: s for s in native}
  if train_examples < 2 * held_out:
    return {'train': 'train', 'validation': report, 'test': report}
  return {'train': f'train[:-{held_out}]', 'validation': f'train[-{held_out}:]', 'test': report}


def resolve(specs: Mapping[str, str], native: Optional[Mapping[str, str]]) -> Dict[str, str]:
  """Specs over a task's split names -> specs over the dataset's ('validation' -> MNLI's
  'validation_matched'), keeping any slice."""
  if not native:
    return dict(specs)
  out = {}
  for name, spec in specs.items():
    base, bracket, rest = spec.partition('[')
    out[name] = native[base] + bracket + rest
  return out
