"""LAMA T-REx (Petroni et al. 2019) for an encoder-decoder: one task per relation.

  lama_trex_<P>        inputs: the relation's manual template, [X] the subject and
                       [Y] T5's first sentinel: 'Dante was born in <extra_id_0> .'
  lama_trex_soft_<P>   inputs: the subject alone ('Dante'), for a soft prompt
                       that stands in for the template
  targets: the object ('Florence'). Mixtures `lama_trex` and `lama_trex_soft`
  weight the 41 relations equally.

Evaluation: `tasks.label_words('lama_trex_P19')` are the relation's candidate
objects; rank classification over them gives Precision@1 ('p@1'), decoding
gives exact match. The candidates are every object of the relation in the
data (train, dev and test), or the vocabulary given to `set_lama_candidates`.
P@1 over LAMA is the macro average over relations
(`metrics.macro_average(results, 'p@1')`).

These SeqIO tasks rank each relation's own objects (a small candidate set) and
put a soft prompt before the bare subject; OptiPrompt's protocol, which Wu et
al. (2024) report (common-vocabulary candidates in one forward pass, the soft
prompt between the subject and the blank, facts deduplicated and filtered) is
`prompt_recycling/lama_probe.py`, without TensorFlow.

LAMA has no TFDS builder: the files are read from the local data directory
(`tasks.set_data_source(local_dir=...)`; layout in `sources.py`).
"""
import functools
import pathlib
from typing import List, Optional, Sequence, Union

from tasks import metrics
from tasks import postprocessors
from tasks import preprocessors
from tasks import registry
from tasks import settings
from tasks import sources

# The 41 T-REx relations of LAMA.
RELATIONS = (
    'P1001', 'P101', 'P103', 'P106', 'P108', 'P127', 'P1303', 'P131', 'P136', 'P1376', 'P138',
    'P140', 'P1412', 'P159', 'P17', 'P176', 'P178', 'P19', 'P190', 'P20', 'P264', 'P27', 'P276',
    'P279', 'P30', 'P31', 'P36', 'P361', 'P364', 'P37', 'P39', 'P407', 'P413', 'P449', 'P463',
    'P47', 'P495', 'P527', 'P530', 'P740', 'P937',
)
SPLITS = ('train', 'validation', 'test')
MIXTURE = 'lama_trex'
SOFT_MIXTURE = 'lama_trex_soft'

_candidates: Optional[List[str]] = None


def task_name(relation: str, soft: bool = False) -> str:
  return f'{SOFT_MIXTURE if soft else MIXTURE}_{relation}'


def set_lama_candidates(candidates: Union[None, str, pathlib.Path, Sequence[str]]) -> None:
  """Fixes the candidate objects of every relation (None: each relation's own objects).

  Args:
    candidates: a text file with one candidate per line (e.g. LAMA's common
      vocabulary), a list of strings, or None.
  """
  global _candidates
  if candidates is None or isinstance(candidates, (list, tuple)):
    _candidates = None if candidates is None else [str(c) for c in candidates]
    return
  path = pathlib.Path(candidates).expanduser()
  if not path.exists():
    raise FileNotFoundError(f'LAMA candidate vocabulary {path} does not exist '
                            '(expected one candidate per line).')
  _candidates = [line.strip() for line in path.read_text(encoding='utf-8').splitlines()
                 if line.strip()]


def candidates(relation: str) -> List[str]:
  """The candidate objects of `relation`, sorted: the fixed vocabulary or its objects in the data.

  Raises:
    ValueError: with TFDS as data source (LAMA is read from local files only).
    FileNotFoundError: if none of the relation's files exists.
  """
  if _candidates is not None:
    return list(_candidates)
  source = settings.data_source()
  if not source.is_local:
    raise ValueError('LAMA candidates are read from the local LAMA files: call '
                     'tasks.set_data_source(local_dir=DIR) or tasks.set_lama_candidates(...). '
                     f'{sources.LAMA_OBTAIN}')
  return list(_objects(source.local_dir, relation))


@functools.lru_cache(maxsize=None)
def _objects(local_dir: str, relation: str) -> tuple:
  fmt = sources.lama_format(relation)
  root, objects, found = pathlib.Path(local_dir), set(), False
  for split in SPLITS:
    try:
      layout, directory, path = sources.find_local_file(fmt, root, split)
    except (FileNotFoundError, ValueError):
      continue
    found = True
    objects.update(ex['obj_label'] for ex in layout.read(path, directory))
  if not found:
    sources.find_local_file(fmt, root, 'test')  # Raises, listing the expected files.
  return tuple(sorted(objects))


for _soft in (False, True):
  for _relation in RELATIONS:
    registry.add_task(
        task_name(_relation, _soft),
        source=sources.switchable_source(local=sources.lama_format(_relation), splits=SPLITS),
        preprocessors=[functools.partial(preprocessors.lama, soft=_soft)],
        postprocess_fn=postprocessors.lama, metric_fns=[metrics.lama],
        label_words=functools.partial(candidates, _relation))
  registry.add_mixture(SOFT_MIXTURE if _soft else MIXTURE,
                       [task_name(r, _soft) for r in RELATIONS], default_rate=1.0)
