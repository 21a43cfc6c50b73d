"""Which vocabulary rows a recycler is fit on, and how two vocabularies line up.

Recyclers learn from pairs (source row, target row) of the *same token*. For two
models sharing a SentencePiece vocabulary (T5 1.1 sizes, T5 vs T5 1.1) the
pairs are the same ids in both tables, usually restricted to a subset: Lester
et al. (2022) fit on the English-only filtered T5 vocabulary
(`filtered-vocab-english-only.json`, 16,779 ids), or on the first N ids after an
offset (SentencePiece orders pieces roughly by frequency). For two different
vocabularies, `align_by_piece` pairs rows whose piece strings are equal.

Pure numpy: nothing here touches a device.
"""
import json
import re
from typing import Optional, Sequence, Tuple

import numpy as np


def load_filtered_vocab(path: str) -> np.ndarray:
  """Token ids of a filtered-vocabulary JSON file, sorted.

  Args:
    path: a JSON object `{"token_id_as_string": "piece", ...}`, e.g.
      `filtered-vocab-english-only.json` (16,779 entries).

  Returns:
    [num_tokens] int64 ids, ascending.

  Raises:
    ValueError: the file is not such an object, a key is not an integer, or
      the file is empty.
  """
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'Cannot read the vocabulary file {path}: {e}') from e
  if not isinstance(data, dict) or not data:
    raise ValueError(f'{path} must hold a non-empty JSON object {{"token_id": "piece", ...}}; '
                     f'found {type(data).__name__} with {len(data)} entries.')
  try:
    ids = np.array(sorted(int(k) for k in data), dtype=np.int64)
  except ValueError as e:
    raise ValueError(f'{path}: every key must be an integer token id ({e}).') from e
  if ids[0] < 0:
    raise ValueError(f'{path}: token id {int(ids[0])} is negative.')
  return ids


def first_n(n: int, offset: int = 0, vocab_size: Optional[int] = None) -> np.ndarray:
  """Ids `offset, ..., offset + n - 1`.

  Args:
    n: how many ids.
    offset: the first id, e.g. to skip special and byte tokens.
    vocab_size: if given, the ids must all be below it.

  Returns:
    [n] int64 ids.

  Raises:
    ValueError: n <= 0, offset < 0, or the range runs past `vocab_size`.
  """
  if n <= 0 or offset < 0:
    raise ValueError(f'first_n needs n > 0 and offset >= 0; found n={n}, offset={offset}.')
  if vocab_size is not None and offset + n > vocab_size:
    raise ValueError(f'ids [{offset}, {offset + n}) run past the table of {vocab_size} rows.')
  return np.arange(offset, offset + n, dtype=np.int64)


def all_ids(vocab_size: int) -> np.ndarray:
  """Every id of a table with `vocab_size` rows."""
  return first_n(vocab_size, 0, vocab_size)


_FIRST = re.compile(r'^first:(\d+)(?:@(\d+))?$')


def select(spec: str, vocab_size: int) -> np.ndarray:
  """Ids named by a one-string spec, checked against a table of `vocab_size` rows.

  Args:
    spec: 'all'; 'first:N' or 'first:N@OFFSET'; or the path of a filtered
      vocabulary JSON file (`load_filtered_vocab`).
    vocab_size: rows of the (smaller) embedding table the ids index.

  Returns:
    [num_tokens] int64 ids, ascending.

  Raises:
    ValueError: a malformed spec or an id outside the table.
  """
  if spec == 'all':
    return all_ids(vocab_size)
  match = _FIRST.match(spec)
  if match:
    return first_n(int(match.group(1)), int(match.group(2) or 0), vocab_size)
  if spec.endswith('.json'):
    ids = load_filtered_vocab(spec)
    check_ids(ids, vocab_size, source=spec)
    return ids
  raise ValueError(f"Vocabulary spec {spec!r} is not 'all', 'first:N[@OFFSET]' or a .json file.")


def check_ids(ids, vocab_size: int, source: str = 'vocabulary ids') -> None:
  """Raises ValueError unless every id indexes a row of a `vocab_size`-row table.

  Args:
    ids: integer ids.
    vocab_size: rows in the embedding table.
    source: where the ids came from (a file name), for the message.
  """
  ids = np.asarray(ids)
  if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f'{source}: expected a non-empty 1-D array of integer ids; found shape '
                     f'{ids.shape} dtype {ids.dtype}.')
  bad = ids[(ids < 0) | (ids >= vocab_size)]
  if bad.size:
    raise ValueError(f'{source}: token id {int(bad[0])} is outside the embedding table of '
                     f'{vocab_size} rows ({bad.size} ids out of range, max id {int(ids.max())}).')
  if np.unique(ids).size != ids.size:
    raise ValueError(f'{source}: ids repeat ({ids.size - np.unique(ids).size} duplicates).')


def take(table: np.ndarray, ids, source: str = 'vocabulary ids') -> np.ndarray:
  """Rows `ids` of `table`, after `check_ids`.

  Args:
    table: [vocab, embed].
    ids: [num_tokens] ids.
    source: where the ids came from, for error messages.

  Returns:
    [num_tokens, embed].
  """
  check_ids(ids, np.shape(table)[0], source)
  return np.asarray(table)[np.asarray(ids)]


def align_by_piece(source_pieces: Sequence[str], target_pieces: Sequence[str],
                   source_ids=None) -> Tuple[np.ndarray, np.ndarray, float]:
  """Pairs the rows of two vocabularies whose piece strings are equal.

  A piece that occurs more than once in a vocabulary pairs through its first
  occurrence.

  Args:
    source_pieces: [source_vocab] piece strings (`id_to_piece` of each id).
    target_pieces: [target_vocab] piece strings.
    source_ids: optional source ids to consider (e.g. a filtered vocabulary);
      default all of `source_pieces`.

  Returns:
    (source_index [pairs], target_index [pairs], coverage): int64 row indices
    into each table, in ascending source order, and the fraction of the
    considered source ids that found a partner.

  Raises:
    ValueError: `source_ids` outside `source_pieces`, or no piece in common.
  """
  if source_ids is None:
    source_ids = np.arange(len(source_pieces))
  else:
    source_ids = np.asarray(source_ids)
    check_ids(source_ids, len(source_pieces), 'source_ids')
    source_ids = np.sort(source_ids)
  target_index = {}
  for i, piece in enumerate(target_pieces):
    target_index.setdefault(piece, i)
  seen = set()
  pairs = []
  for i in source_ids:
    piece = source_pieces[i]
    if piece in target_index and piece not in seen:
      seen.add(piece)
      pairs.append((int(i), target_index[piece]))
  if not pairs:
    raise ValueError(f'No piece of the {len(source_ids)} source ids occurs in the target '
                     f'vocabulary of {len(target_pieces)} pieces.')
  src, tgt = (np.array(c, dtype=np.int64) for c in zip(*pairs))
  return src, tgt, len(pairs) / len(source_ids)
