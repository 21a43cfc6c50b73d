"""Registering tasks with their label words, and looking them up.

`add_task` wraps `seqio.TaskRegistry.add` with the T5 output features (the
configured SentencePiece vocabulary, EOS appended) and records the task's
label words: the strings a classifier chooses among, used by the class-label
prompt initialiser and by rank-classification evaluation.
"""
import difflib
from typing import Callable, Dict, List, Optional, Sequence, Union

import seqio

from tasks import settings

LabelWords = Union[None, Sequence[str], Callable[[], Sequence[str]]]

_LABEL_WORDS: Dict[str, LabelWords] = {}  # Our tasks -> their label words.
_CANDIDATES: Dict[str, str] = {}  # Tasks ranking per-example candidates -> the feature holding them.
_TARGET_LENGTHS: Dict[str, int] = {}  # Tasks whose targets need more tokens than the stock 8.
_MIXTURES = set()  # Our mixtures.


class ConfiguredVocabulary(seqio.SentencePieceVocabulary):
  """A SentencePiece vocabulary whose model file is `settings.vocabulary_path()`.

  The path is looked up when the model is first needed (tokenizing, decoding,
  vocab_size), not at construction, so tasks can be registered at import and
  the vocabulary chosen later; changing the setting reloads the model.
  """

  def __init__(self, extra_ids: int = 100):
    self._loaded_from: Optional[str] = None
    super().__init__(sentencepiece_model_file='', extra_ids=extra_ids)

  @property
  def _sentencepiece_model_file(self) -> str:
    return settings.vocabulary_path()

  @_sentencepiece_model_file.setter
  def _sentencepiece_model_file(self, value: str) -> None:
    del value  # The setting, not the constructor, decides.

  def _model_context(self):
    if self._model is not None and self._loaded_from == settings.vocabulary_path(False):
      return self._model  # Hot path (every encode/decode): no file-system check.
    path = settings.vocabulary_path()
    self._model, self._loaded_from = None, path
    return super()._model_context()

  def __getstate__(self):
    state = super().__getstate__()
    state.pop('_loaded_from', None)
    return state

  def __setstate__(self, state):
    super().__setstate__(state)
    self._loaded_from = None

  def __str__(self) -> str:
    return f'ConfiguredVocabulary(extra_ids={self._extra_ids})'


# T5's vocabulary: 32,000 SentencePiece pieces + 100 sentinels (<extra_id_0> = 32099).
VOCABULARY = ConfiguredVocabulary(extra_ids=100)
OUTPUT_FEATURES = {
    'inputs': seqio.Feature(vocabulary=VOCABULARY, add_eos=True, required=False),
    'targets': seqio.Feature(vocabulary=VOCABULARY, add_eos=True),
}

# Tokenize (keeping `inputs_pretokenized`/`targets_pretokenized`), then EOS after trimming.
TOKENIZE = (seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim)


def add_task(name: str, *, source: seqio.DataSource, preprocessors: Sequence[Callable],
             postprocess_fn: Callable, metric_fns: Sequence[Callable],
             label_words: LabelWords, candidates_feature: Optional[str] = None,
             target_length: Optional[int] = None) -> seqio.Task:
  """Registers a text-to-text task with T5's features and its label words.

  Args:
    name: registry name.
    source: where the raw examples come from.
    preprocessors: text formatting; tokenization and EOS are appended.
    postprocess_fn: `fn(text, example=..., is_target=...)`.
    metric_fns: `fn(targets, predictions) -> {name: value}`.
    label_words: the class names in class-id order, None for generative tasks,
      or a function computing them when asked (LAMA's candidates need data).
    candidates_feature: for a task whose candidates differ by example
      (ReCoRD's entities, DPR's two noun phrases), the example feature that
      lists them: rank classification chooses among those.
    target_length: for a task whose answers run longer than the stock
      `TASK_FEATURE_LENGTHS['targets']` (ReCoRD's entity names), the target
      tokens (EOS included) that no answer exceeds: training and decoding use
      at least this many (`target_length`).
  """
  if candidates_feature:
    _CANDIDATES[name] = candidates_feature
  if target_length:
    _TARGET_LENGTHS[name] = int(target_length)
  if label_words is not None and not callable(label_words):
    label_words = tuple(label_words)
  _LABEL_WORDS[name] = label_words
  return seqio.TaskRegistry.add(
      name, source=source, preprocessors=[*preprocessors, *TOKENIZE],
      output_features=OUTPUT_FEATURES, postprocess_fn=postprocess_fn, metric_fns=list(metric_fns))


def names() -> List[str]:
  """Every task and mixture this package registers, sorted."""
  return sorted(set(_LABEL_WORDS) | _MIXTURES)


def add_mixture(name: str, tasks: Sequence[Union[str, tuple]], **kwargs) -> seqio.Mixture:
  """Registers a mixture (see `seqio.MixtureRegistry.add`) and remembers it as ours."""
  _MIXTURES.add(name)
  return seqio.MixtureRegistry.add(name, list(tasks), **kwargs)


def is_mixture(name: str) -> bool:
  return name in _MIXTURES


def _unknown(name: str) -> ValueError:
  known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
  close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
  hint = f' Did you mean: {", ".join(close)}?' if close else ''
  return ValueError(f'Unknown task or mixture {name!r}.{hint} '
                    f'`python -m tasks.show_tasks` lists all {len(names())} of ours.')


def get_task(name: str) -> Union[seqio.Task, seqio.Mixture]:
  """The registered task or mixture `name`.

  Raises:
    ValueError: for an unknown name, listing close matches.
  """
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  raise _unknown(name)


def label_words(name: str) -> Optional[List[str]]:
  """The strings a task's classifier chooses among, in class-id order.

  Args:
    name: a task registered here, e.g. 'glue_sst2_v2' -> ['negative', 'positive'].
      For a LAMA relation, its candidate objects (read from the data, or the
      configured candidate vocabulary; see `tasks.lama`). For a mixture, the
      label words its tasks share, if they all have the same.

  Returns:
    A new list, or None for generative tasks (ReCoRD) and mixtures whose tasks
    differ.

  Raises:
    ValueError: for a name not registered by this package.
  """
  if name in _MIXTURES:
    words = {_static_label_words(t.name) for t in get_task(name).tasks}
    return list(words.pop()) if len(words) == 1 and None not in words else None
  if name not in _LABEL_WORDS:
    raise _unknown(name)
  words = _LABEL_WORDS[name]
  if callable(words):
    words = words()
  return None if words is None else list(words)


def _static_label_words(name: str) -> Optional[tuple]:
  words = _LABEL_WORDS.get(name)
  return None if words is None or callable(words) else tuple(words)


def target_length(name: str) -> Optional[int]:
  """The target tokens (EOS included) a task's answers need, where it declares them.

  For a mixture, the most any of its tasks declares. None where no task
  declares one (its label words or answers fit the stock lengths).
  """
  if name in _MIXTURES:
    lengths = [n for n in (target_length(t.name) for t in get_task(name).tasks) if n]
    return max(lengths) if lengths else None
  return _TARGET_LENGTHS.get(name)


def candidates_feature(name: str) -> Optional[str]:
  """The example feature listing a task's per-example rank candidates, or None."""
  return _CANDIDATES.get(name)
