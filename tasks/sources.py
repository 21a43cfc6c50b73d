"""Data sources that read TFDS or the original release files, chosen at build time.

Every task's source is a `seqio.FunctionDataSource` whose function looks at
`settings.data_source()` when a dataset is built, so `tasks.set_data_source`
takes effect after import. Both paths yield the same examples: the local
readers convert each release format into the schema of the TFDS builder (same
feature names, dtypes and label ids), so one set of preprocessors serves both.

Local layout under the data directory (the first existing candidate wins):

  SuperGLUE  superglue/<Task>/{train,val,test}.jsonl   (Task: BoolQ CB COPA MultiRC
             ReCoRD RTE WiC WSC, as in the official zips; also super_glue/, SuperGLUE/
             or <Task>/ directly under the data directory); the diagnostics
             superglue/AX-b/AX-b.jsonl, superglue/AX-g/AX-g.jsonl (test split)
  SST-2      sst2/{train,dev,test}.tsv                 (or SST-2/, glue/SST-2/, glue_data/SST-2/)
  QQP        qqp/{train,dev,test}.tsv                  (or QQP/, glue/QQP/, glue_data/QQP/)
  IMDB       imdb/{train,test}.jsonl.gz                ({"text", "label"} per line), or the
             aclImdb/{train,test}/{neg,pos}/*.txt tree (aclImdb/ or imdb/aclImdb/)
  LAMA       lama/relations.jsonl and lama/trex_original/<P>/{train,dev,test}.jsonl
             ({"sub","obj"} or {"sub_label","obj_label"}), or LAMA's own
             lama/TREx/<P>.jsonl (test only)

Split names are TFDS's everywhere: 'train', 'validation', 'test'. A task may
read a slice of one (`switchable_source(split_specs=...)`, TFDS's syntax:
'train[:-1000]'), from local files and TFDS alike. GLUE tasks other than SST-2
and QQP, and DPR, have no local reader: they are read from TFDS. A local split
is read once per process and held in memory (every release here is tens of MB
at most); a file changed on disk is read again.
"""
import csv
import functools
import gzip
import json
import pathlib
import re
from typing import Any, Callable, Dict, Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import seqio
import tensorflow as tf

from tasks import settings

Example = Dict[str, Any]

# --- Layouts ------------------------------------------------------------------


class LocalLayout(NamedTuple):
  """One way a dataset's release files can be laid out under the data directory.

  Attributes:
    dirs: candidate directories, relative to the data directory.
    files: split name -> file (or directory) name inside such a directory.
    read: `read(path, directory) -> iterator of examples` in the TFDS schema.
  """
  dirs: Tuple[str, ...]
  files: Mapping[str, str]
  read: Callable[[pathlib.Path, pathlib.Path], Iterator[Example]]


class LocalFormat(NamedTuple):
  """A dataset's local release: its layouts, schema and where to get it.

  Attributes:
    name: human-readable dataset name, for errors.
    layouts: alternatives tried in order.
    signature: `tf.TensorSpec`s of one example (the TFDS builder's features).
    obtain: how to get the files, for errors.
  """
  name: str
  layouts: Tuple[LocalLayout, ...]
  signature: Mapping[str, Any]
  obtain: str


def find_local_file(fmt: LocalFormat, root: pathlib.Path,
                    split: str) -> Tuple[LocalLayout, pathlib.Path, pathlib.Path]:
  """(layout, directory, file) of `split` under `root`.

  Raises:
    FileNotFoundError: naming every path tried and how to obtain the files.
  """
  tried = []
  for layout in fmt.layouts:
    if split not in layout.files:
      continue
    for d in layout.dirs:
      directory = root / d
      path = directory / layout.files[split]
      if path.exists():
        return layout, directory, path
      tried.append(str(path))
  if not tried:
    splits = sorted({s for layout in fmt.layouts for s in layout.files})
    raise ValueError(f'{fmt.name} has no {split!r} split in its release files; '
                     f'available: {splits}.')
  listing = '\n  '.join(tried)
  raise FileNotFoundError(
      f'{fmt.name} {split!r} split: none of the expected files exists under the local '
      f'data directory {root}. Expected one of:\n  {listing}\n{fmt.obtain}\n'
      'Or read TFDS instead: tasks.set_data_source(None).')


# Local releases are small (IMDB: 25,000 reviews, ~33 MB) and often sorted by
# label, which SeqIO's 1,000-example shuffle buffer would not undo: a shuffled
# read shuffles the whole split.
_FULL_SHUFFLE_BUFFER = 1 << 20


def local_dataset(fmt: LocalFormat, root: pathlib.Path, split: str, *, shuffle: bool = False,
                  seed: Optional[int] = None) -> tf.data.Dataset:
  """The examples of `split`, read from the release files under `root`.

  Args:
    fmt: the dataset's local format.
    root: the local data directory.
    split: 'train', 'validation' or 'test'.
    shuffle: shuffle the whole split (in memory), differently each epoch.
    seed: makes the shuffling deterministic.
  """
  return _rows_dataset(fmt, _local_rows(fmt, split, root), shuffle=shuffle, seed=seed)


def _rows_dataset(fmt: LocalFormat, rows: Sequence[Example], *, shuffle: bool,
                  seed: Optional[int]) -> tf.data.Dataset:
  """`rows` as a dataset of `fmt.signature`, in their order (then shuffled if asked).

  Scalar features go in as columns, which tf.data slices in C++: a Python
  generator costs ~0.25 ms an example, paid again every epoch and every run
  (a demo run reads SST-2's 4,000 rows in ~1 s that way, ~0.1 s as columns).
  Formats with list or nested features keep the generator.
  """
  if all(isinstance(spec, tf.TensorSpec) and spec.shape.rank == 0
         for spec in fmt.signature.values()):
    ds = tf.data.Dataset.from_tensor_slices(
        {name: tf.constant([row[name] for row in rows], dtype=spec.dtype, shape=[len(rows)])
         for name, spec in fmt.signature.items()})
  else:
    ds = tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=dict(fmt.signature))
  if shuffle:
    ds = ds.shuffle(_FULL_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
  return ds


@functools.lru_cache(maxsize=None)
def _tfds_source(tfds_name: str, tfds_data_dir: Optional[str]) -> seqio.TfdsDataSource:
  return seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir)


_SPLIT_SPEC = re.compile(r'^(\w+)(?:\[(-?\d*):(-?\d*)\])?$')


_SLICE_SEED = 0
# (dataset, file, its mtime and size) -> its examples: a split is read once per process.
_LOCAL_ROWS: Dict[Tuple[str, pathlib.Path, int, int], list] = {}


def _local_rows(fmt: LocalFormat, split: str, root: pathlib.Path) -> list:
  layout, directory, path = find_local_file(fmt, root, split)
  stat = path.stat()
  key = (fmt.name, path, stat.st_mtime_ns, stat.st_size)
  if key not in _LOCAL_ROWS:
    _LOCAL_ROWS[key] = list(layout.read(path, directory))
  return _LOCAL_ROWS[key]


def _local_slice(fmt: LocalFormat, root: pathlib.Path, spec: str, *, shuffle: bool,
                 seed: Optional[int]) -> tf.data.Dataset:
  """The examples of a split spec ('train', 'train[:-1000]', 'train[-1000:]'), TFDS's slicing.

  Release files are often sorted by label (IMDB: 12,500 negatives first), so a
  slice is taken from a fixed permutation (seed 0) of the split, not from its
  file order.
  """
  match = _SPLIT_SPEC.match(spec)
  if not match:
    raise ValueError(f'Split {spec!r}: expected a split name, optionally sliced as '
                     "'train[:-1000]' or 'train[-1000:]'.")
  split, start, stop = match.groups()
  if start is None:
    return local_dataset(fmt, root, split, shuffle=shuffle, seed=seed)
  rows = _local_rows(fmt, split, root)
  order = np.random.default_rng(_SLICE_SEED).permutation(len(rows))
  chosen = order[slice(int(start) if start else None, int(stop) if stop else None)]
  return _rows_dataset(fmt, [rows[i] for i in chosen], shuffle=shuffle, seed=seed)


def switchable_source(*, local: Optional[LocalFormat], splits: Sequence[str],
                      tfds_name: Optional[str] = None,
                      split_specs: Optional[Mapping[str, str]] = None,
                      name: Optional[str] = None) -> seqio.FunctionDataSource:
  """A source reading TFDS or local files, whichever `settings.data_source()` says.

  Args:
    local: the dataset's local release format, or None when there is no local
      reader (then TFDS is required).
    splits: split names the task offers.
    tfds_name: 'builder/config:version', or None when TFDS has no such dataset
      (then a local data directory is required).
    split_specs: split name -> the split it reads, TFDS's slicing syntax
      (e.g. {'train': 'train[:-1000]', 'validation': 'train[-1000:]',
      'test': 'validation'}), for local files and TFDS alike. Default: itself.
    name: the dataset's name in errors (default: the local format's).
  """
  name = name or (local.name if local else tfds_name)
  split_specs = dict(split_specs or {})

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    source = settings.data_source()
    spec = split_specs.get(split, split)
    if source.is_local:
      if local is None:
        raise ValueError(
            f'{name} has no local reader here; it is read from TFDS ({tfds_name}): call '
            f'tasks.set_data_source(None) (and unset ${settings.DATA_DIR_ENV}) to read it.')
      return _local_slice(local, pathlib.Path(source.local_dir), spec, shuffle=shuffle_files,
                          seed=seed)
    if tfds_name is None:
      raise ValueError(
          f'{name} has no TFDS builder; its release files must be read locally: '
          f"call tasks.set_data_source(local_dir=DIR) or set ${settings.DATA_DIR_ENV}. "
          f'{local.obtain}')
    return _tfds_source(tfds_name, source.tfds_data_dir).get_dataset(
        split=spec, shuffle=shuffle_files, seed=seed)

  dataset_fn.__name__ = f'read_{re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()}'
  return seqio.FunctionDataSource(dataset_fn, splits=tuple(splits))


# --- Readers ------------------------------------------------------------------

def _jsonl(path: pathlib.Path) -> Iterator[Dict[str, Any]]:
  opener = gzip.open if path.suffix == '.gz' else open
  with opener(path, 'rt', encoding='utf-8') as f:
    for line_number, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f'{path}:{line_number} is not a JSON line: {e}') from None


def _tsv(path: pathlib.Path) -> Iterator[Dict[str, str]]:
  with open(path, encoding='utf-8', newline='') as f:
    # GLUE's tsvs are unquoted: a '"' is part of the text.
    yield from csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE)


def _class_id(value: Any, names: Sequence[str], path: pathlib.Path) -> int:
  """A label of the release (bool, int or class name) -> TFDS's class id."""
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, int):
    return value
  if value in names:
    return list(names).index(value)
  raise ValueError(f'{path}: label {value!r} is not one of {list(names)}.')


def _scalar(spec_dtype=tf.string):
  return tf.TensorSpec(shape=(), dtype=spec_dtype)


_STR, _I32, _I64 = _scalar(tf.string), _scalar(tf.int32), _scalar(tf.int64)

# --- SuperGLUE ----------------------------------------------------------------

SUPER_GLUE_OBTAIN = ('SuperGLUE: download the task zips from https://super.gluebenchmark.com/tasks '
                     '(BoolQ.zip, CB.zip, ...) and unzip each into superglue/<Task>/.')

# TFDS's label classes, whose order fixes the class ids.
SUPER_GLUE_LABELS = {
    'boolq': ('False', 'True'),
    'cb': ('entailment', 'contradiction', 'neutral'),
    'copa': ('choice1', 'choice2'),
    'multirc': ('False', 'True'),
    'rte': ('entailment', 'not_entailment'),
    'wic': ('False', 'True'),
    'wsc': ('False', 'True'),
    'axb': ('entailment', 'not_entailment'),
    'axg': ('entailment', 'not_entailment'),
}

_SUPER_GLUE_FIELDS = {
    'boolq': {'question': _STR, 'passage': _STR},
    'cb': {'premise': _STR, 'hypothesis': _STR},
    'copa': {'premise': _STR, 'choice1': _STR, 'choice2': _STR, 'question': _STR},
    'rte': {'premise': _STR, 'hypothesis': _STR},
    'wic': {'word': _STR, 'sentence1': _STR, 'sentence2': _STR, 'start1': _I32,
            'start2': _I32, 'end1': _I32, 'end2': _I32},
    'wsc': {'text': _STR, 'span1_index': _I32, 'span2_index': _I32, 'span1_text': _STR,
            'span2_text': _STR},
    'axb': {'sentence1': _STR, 'sentence2': _STR},
    'axg': {'premise': _STR, 'hypothesis': _STR},
}


def _wsc_span_text(text: str, span: str, index: int) -> str:
  """A WSC span text repaired to occur in the text, as TFDS's `wsc.fixed` does.

  A few releases' spans differ from the text by case of the first letter, a
  trailing period or a newline; the text is authoritative.
  """
  if span in text:
    return span
  span = span.replace('\n', ' ').rstrip('.')
  words = text.split()
  if span and 0 <= index < len(words):
    first = words[index][:1]
    span = (span[0].upper() if first.isupper() else span[0].lower()) + span[1:]
  return span


def _read_super_glue_rows(config: str, path: pathlib.Path, directory: pathlib.Path):
  del directory
  fields = _SUPER_GLUE_FIELDS[config]
  for row in _jsonl(path):
    if config == 'wsc':
      row = {**row, **row['target']}
      for k in ('span1', 'span2'):
        row[f'{k}_text'] = _wsc_span_text(row['text'], row[f'{k}_text'], row[f'{k}_index'])
    ex = {k: row[k] for k in fields}
    ex['idx'] = int(row['idx'])  # AX-b's ids are strings.
    ex['label'] = _class_id(row['label'], SUPER_GLUE_LABELS[config], path) if 'label' in row else -1
    yield ex


def _read_multirc(path: pathlib.Path, directory: pathlib.Path):
  """One example per answer option, as TFDS's multirc."""
  del directory
  for row in _jsonl(path):
    passage = row['passage']
    for question in passage['questions']:
      for answer in question['answers']:
        yield {'paragraph': passage['text'], 'question': question['question'],
               'answer': answer['text'],
               'idx': {'paragraph': row['idx'], 'question': question['idx'],
                       'answer': answer['idx']},
               'label': int(answer['label']) if 'label' in answer else -1}


def _read_record(path: pathlib.Path, directory: pathlib.Path):
  """One example per query, with the distinct entity and answer strings sorted.

  ReCoRD's character offsets are inclusive of `end`.
  """
  del directory
  for row in _jsonl(path):
    text = row['passage']['text']
    entities = sorted({text[e['start']:e['end'] + 1] for e in row['passage']['entities']})
    for qa in row['qas']:
      yield {'passage': text, 'query': qa['query'], 'entities': entities,
             'answers': sorted({a['text'] for a in qa.get('answers', [])}),
             'idx': {'passage': row['idx'], 'query': qa['idx']}}


def super_glue_format(config: str) -> LocalFormat:
  """The local format of one SuperGLUE task (`config` as TFDS names it, 'wsc' for wsc.fixed)."""
  task_dir = {'boolq': 'BoolQ', 'cb': 'CB', 'copa': 'COPA', 'multirc': 'MultiRC',
              'record': 'ReCoRD', 'rte': 'RTE', 'wic': 'WiC', 'wsc': 'WSC', 'axb': 'AX-b',
              'axg': 'AX-g'}[config]
  if config == 'multirc':
    read = _read_multirc
    signature = {'paragraph': _STR, 'question': _STR, 'answer': _STR,
                 'idx': {'paragraph': _I32, 'question': _I32, 'answer': _I32}, 'label': _I64}
  elif config == 'record':
    read = _read_record
    strings = tf.TensorSpec(shape=(None,), dtype=tf.string)
    signature = {'passage': _STR, 'query': _STR, 'entities': strings, 'answers': strings,
                 'idx': {'passage': _I32, 'query': _I32}}
  else:
    read = functools.partial(_read_super_glue_rows, config)
    signature = {**_SUPER_GLUE_FIELDS[config], 'idx': _I32, 'label': _I64}
  layout = LocalLayout(
      dirs=tuple(f'{parent}/{task_dir}' for parent in ('superglue', 'super_glue', 'SuperGLUE'))
      + (task_dir,),
      files=({'test': f'{task_dir}.jsonl'} if config in ('axb', 'axg') else
             {'train': 'train.jsonl', 'validation': 'val.jsonl', 'test': 'test.jsonl'}),
      read=read)
  return LocalFormat(name=f'SuperGLUE {task_dir}', layouts=(layout,), signature=signature,
                     obtain=SUPER_GLUE_OBTAIN)


# --- GLUE (SST-2, QQP) ---------------------------------------------------------

GLUE_OBTAIN = ('GLUE: download {task}.zip (GLUE tsv files) from https://gluebenchmark.com/tasks '
               'and unzip it into {dirname}/.')
_GLUE_SPLIT_FILES = {'train': 'train.tsv', 'validation': 'dev.tsv', 'test': 'test.tsv'}


def _read_sst2(path: pathlib.Path, directory: pathlib.Path):
  del directory
  for i, row in enumerate(_tsv(path)):
    yield {'sentence': row['sentence'],
           'label': int(row['label']) if row.get('label') not in (None, '') else -1,
           'idx': int(row['index']) if row.get('index') else i}


def _read_qqp(path: pathlib.Path, directory: pathlib.Path):
  """QQP rows; the few malformed train rows (missing a question) are skipped, as TFDS does."""
  del directory
  for i, row in enumerate(_tsv(path)):
    if not row.get('question1') or not row.get('question2'):
      continue
    label = row.get('is_duplicate')
    yield {'question1': row['question1'], 'question2': row['question2'],
           'label': int(label) if label not in (None, '') else -1,
           'idx': int(row['id']) if 'is_duplicate' not in row and row.get('id') else i}


def glue_format(task: str) -> LocalFormat:
  """The local format of GLUE's 'sst2' or 'qqp'."""
  zip_name, read, fields = {
      'sst2': ('SST-2', _read_sst2, {'sentence': _STR}),
      'qqp': ('QQP', _read_qqp, {'question1': _STR, 'question2': _STR}),
  }[task]
  layout = LocalLayout(dirs=(task, zip_name, f'glue/{zip_name}', f'glue_data/{zip_name}'),
                       files=_GLUE_SPLIT_FILES, read=read)
  return LocalFormat(name=f'GLUE {zip_name}', layouts=(layout,),
                     signature={**fields, 'label': _I64, 'idx': _I32},
                     obtain=GLUE_OBTAIN.format(task=zip_name, dirname=task))


# --- IMDB ---------------------------------------------------------------------

def _read_imdb_jsonl(path: pathlib.Path, directory: pathlib.Path):
  del directory
  for row in _jsonl(path):
    yield {'text': row['text'], 'label': int(row['label'])}


def _review_number(path: pathlib.Path) -> int:
  return int(path.stem.split('_')[0])


def _read_imdb_tree(path: pathlib.Path, directory: pathlib.Path):
  """aclImdb/<split>/{neg,pos}/<id>_<rating>.txt; negatives first, each by id."""
  del directory
  for label, polarity in enumerate(('neg', 'pos')):
    for review in sorted((path / polarity).glob('*.txt'), key=_review_number):
      yield {'text': review.read_text(encoding='utf-8'), 'label': label}


IMDB_FORMAT = LocalFormat(
    name='IMDB reviews',
    layouts=(
        LocalLayout(dirs=('imdb',), files={'train': 'train.jsonl.gz', 'test': 'test.jsonl.gz'},
                    read=_read_imdb_jsonl),
        LocalLayout(dirs=('aclImdb', 'imdb/aclImdb'), files={'train': 'train', 'test': 'test'},
                    read=_read_imdb_tree),
    ),
    signature={'text': _STR, 'label': _I64},
    obtain=('IMDB: download aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/ '
            'and untar it (aclImdb/), or provide imdb/{train,test}.jsonl.gz with one '
            '{"text": ..., "label": 0|1} review per line.'))

# --- LAMA ---------------------------------------------------------------------

LAMA_OBTAIN = ('LAMA T-REx: relations.jsonl and the T-REx facts come with LAMA '
               '(https://github.com/facebookresearch/LAMA, data.zip: relations.jsonl, '
               'TREx/P*.jsonl); '
               'the train/dev/test splits trex_original/<P>/*.jsonl are those of AutoPrompt / '
               'Qin & Eisner (2021).')


@functools.lru_cache(maxsize=None)
def lama_templates(relations_file: pathlib.Path) -> Dict[str, str]:
  """relation id -> manual template ('[X] was born in [Y] .') from relations.jsonl."""
  if not relations_file.exists():
    raise FileNotFoundError(f'{relations_file} is missing: LAMA templates are read from it. '
                            f'{LAMA_OBTAIN}')
  return {row['relation']: row['template'] for row in _jsonl(relations_file)}


def _read_lama(relation: str, path: pathlib.Path, directory: pathlib.Path):
  templates = lama_templates(directory / 'relations.jsonl')
  if relation not in templates:
    raise ValueError(f'{directory / "relations.jsonl"} has no template for relation {relation}.')
  for row in _jsonl(path):
    sub = row['sub'] if 'sub' in row else row['sub_label']
    obj = row['obj'] if 'obj' in row else row['obj_label']
    yield {'sub_label': sub, 'obj_label': obj, 'predicate_id': relation,
           'template': templates[relation]}


def lama_format(relation: str) -> LocalFormat:
  """The local format of one LAMA T-REx relation ('P19')."""
  read = functools.partial(_read_lama, relation)
  dirs = ('lama', 'LAMA', '.')
  return LocalFormat(
      name=f'LAMA T-REx {relation}',
      layouts=(
          LocalLayout(dirs=dirs, read=read,
                      files={'train': f'trex_original/{relation}/train.jsonl',
                             'validation': f'trex_original/{relation}/dev.jsonl',
                             'test': f'trex_original/{relation}/test.jsonl'}),
          LocalLayout(dirs=dirs, read=read, files={'test': f'TREx/{relation}.jsonl'}),
      ),
      signature={'sub_label': _STR, 'obj_label': _STR, 'predicate_id': _STR, 'template': _STR},
      obtain=LAMA_OBTAIN)
