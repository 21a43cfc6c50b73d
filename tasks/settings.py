"""Where the tasks read their data and vocabulary: two process-wide settings.

Both are read when a dataset is built or a text is tokenized, never at import,
so they can be changed after `import tasks` (by a test, a notebook, or an entry
point after gin has been parsed). An explicit call wins over the environment:

  data source   tasks.set_data_source(local_dir=DIR)   PROMPT_RECYCLING_DATA_DIR=DIR
                tasks.set_data_source(None)  -> TFDS (the default)
  vocabulary    tasks.set_vocabulary(PATH)             PROMPT_RECYCLING_VOCAB=PATH

With a local directory every dataset is read from the files of its original
release (see `sources.py` for the layout); with TFDS from the registered
builders. LAMA has no TFDS builder, so it always needs a local directory.

The library never imports gin; an entry point can expose these with
`gin.external_configurable(tasks.set_data_source, module='tasks')`.
"""
import os
from typing import NamedTuple, Optional

DATA_DIR_ENV = 'PROMPT_RECYCLING_DATA_DIR'
TFDS_DATA_DIR_ENV = 'PROMPT_RECYCLING_TFDS_DATA_DIR'
VOCAB_ENV = 'PROMPT_RECYCLING_VOCAB'

_UNSET = object()
_data_source = _UNSET  # DataSource, or _UNSET to fall back on the environment.
_vocabulary_path: Optional[str] = None


class DataSource(NamedTuple):
  """The resolved data source.

  Attributes:
    local_dir: root of the local release files, or None to read TFDS.
    tfds_data_dir: TFDS's data_dir (None: TFDS's own default, ~/tensorflow_datasets).
  """
  local_dir: Optional[str] = None
  tfds_data_dir: Optional[str] = None

  @property
  def is_local(self) -> bool:
    return self.local_dir is not None

  def describe(self) -> str:
    if self.is_local:
      return f'local files under {self.local_dir}'
    return f'TFDS (data_dir={self.tfds_data_dir or "TFDS default"})'


def set_data_source(local_dir: Optional[str] = None, *,
                    tfds_data_dir: Optional[str] = None) -> None:
  """Chooses where every task reads its examples, from now on.

  Args:
    local_dir: a directory holding the datasets' original release files
      (`superglue/RTE/train.jsonl`, `sst2/train.tsv`, `imdb/train.jsonl.gz`,
      `lama/relations.jsonl`, ...; see `tasks/sources.py`), or None for TFDS.
    tfds_data_dir: where TFDS keeps prepared datasets (TFDS mode only).
  """
  global _data_source
  if local_dir is not None:
    local_dir = os.path.expanduser(os.fspath(local_dir))
  _data_source = DataSource(local_dir=local_dir, tfds_data_dir=tfds_data_dir)


def reset_data_source() -> None:
  """Forgets any `set_data_source` call: the environment (or TFDS) decides again."""
  global _data_source
  _data_source = _UNSET


def data_source() -> DataSource:
  """The data source in effect: the last `set_data_source`, else the environment."""
  if _data_source is not _UNSET:
    return _data_source
  local_dir = os.environ.get(DATA_DIR_ENV) or None
  return DataSource(local_dir=os.path.expanduser(local_dir) if local_dir else None,
                    tfds_data_dir=os.environ.get(TFDS_DATA_DIR_ENV) or None)


def set_vocabulary(path: Optional[str]) -> None:
  """Sets the SentencePiece model every task tokenizes with (None: use the environment)."""
  global _vocabulary_path
  _vocabulary_path = None if path is None else os.path.expanduser(os.fspath(path))


def vocabulary_path(check_exists: bool = True) -> str:
  """The configured SentencePiece model file.

  Args:
    check_exists: raise if the file does not exist.

  Raises:
    ValueError: if neither `set_vocabulary` nor $PROMPT_RECYCLING_VOCAB names one.
    FileNotFoundError: if the named file does not exist.
  """
  path = _vocabulary_path or os.environ.get(VOCAB_ENV)
  if path and not check_exists:
    return path
  if not path:
    raise ValueError(
        'No SentencePiece vocabulary is configured for the tasks. Call '
        "tasks.set_vocabulary('/path/to/sentencepiece.model') or set "
        f'${VOCAB_ENV}. The public T5 vocabulary (32,000 pieces, cc_all.32000) '
        'is the one T5 and T5 1.1 checkpoints were trained with.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    source = 'tasks.set_vocabulary' if _vocabulary_path else f'${VOCAB_ENV}'
    raise FileNotFoundError(f'SentencePiece model {path} (set by {source}) does not exist.')
  return path
