"""Which vocabulary rows a recycler is fit on, and how two vocabularies line up.

Recyclers learn from pairs (source row, target row) of the *same token*. For two
models sharing a SentencePiece vocabulary (T5 1.1 sizes, T5 vs T5 1.1) the
pairs are the same ids in both tables, usually restricted to a subset: Lester
et al. (2022) fit on the English-only filtered T5 vocabulary
(`filtered-vocab-english-only.json`, 16,779 ids), or on the first N ids after an
offset (SentencePiece orders pieces roughly by frequency). For two different
vocabularies, `align_by_piece` pairs rows whose piece strings are equal.

The authors' fit set is `LESTER_2022`: positions 1,000..4,999 of the English
filter in file order (prompt-tuning `configs/sst2.json` and `imdb.json`:
`num_words` 4000, `word_offset` 1000; `recycle.default_load_embeddings`). The
relative search of Wu et al. (2024) uses *anchor words* instead:
`single_token_anchors` keeps the words of a word list that every model
tokenizes, with a leading space, to exactly one known token (PTfer
`rel2abs_util.get_abs_anchors`); `WU_2024_WORDS` is their default list.

Pure numpy: nothing here touches a device.
"""
import json
import pathlib
import re
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

_ASSETS = pathlib.Path(__file__).resolve().parents[1] / 'assets' / 't5'
# google-research/prompt-tuning prompt_tuning/recycling/data/filtered-vocab-english-only.json
# (16,779 ids, ascending in file order), shipped with the package.
ENGLISH_ONLY_PATH = str(_ASSETS / 'filtered-vocab-english-only.json')
# Lester et al. (2022): the 4,000 filtered English ids after skipping the first 1,000.
LESTER_2022 = f'filtered:{ENGLISH_ONLY_PATH}@1000:4000'
# Wu et al. (2024): OptiPrompt's BERT/RoBERTa/ALBERT common vocabulary (PTfer get_emb.py
# --common_vocab default), as laid out in ../shared/data/lama/common_vocabs/.
WU_2024_WORDS = 'common_vocab_cased_be_ro_al.txt'


# The fit rows each recycler's authors used; `vocabulary='auto'` resolves to these.
# Wu et al. take anchors from a word list that is not shipped (LAMA's vocabulary is
# CC BY-NC); 'words:pieces' is their no-list branch (the vocabulary intersection). Pass
# 'words:<...>/common_vocab_cased_be_ro_al.txt' for their exact anchors.
_AUTHORS_VOCABULARY = {'relative': 'words:pieces'}


def default_vocabulary(recycler: str) -> str:
  """The authors' fit-set spec for a registered recycler name (`LESTER_2022` unless listed)."""
  return _AUTHORS_VOCABULARY.get(recycler, LESTER_2022)


def resolve(spec: str, recycler: str) -> str:
  """`spec`, or the recycler's `default_vocabulary` when `spec` is 'auto'."""
  return default_vocabulary(recycler) if spec == 'auto' else spec


def load_filtered_vocab(path: str, file_order: bool = False) -> np.ndarray:
  """Token ids of a filtered-vocabulary JSON file, sorted (or in file order).

  Args:
    path: a JSON object `{"token_id_as_string": "piece", ...}`, e.g.
      `filtered-vocab-english-only.json` (16,779 entries).
    file_order: keep the file's order, as the authors index it
      (`utils.load_english_only_embedding`); their file is ascending anyway.

  Returns:
    [num_tokens] int64 ids, ascending (or in file order).

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
    ids = np.array([int(k) for k in data], dtype=np.int64)
  except ValueError as e:
    raise ValueError(f'{path}: every key must be an integer token id ({e}).') from e
  if ids.min() < 0:
    raise ValueError(f'{path}: token id {int(ids.min())} is negative.')
  return ids if file_order else np.sort(ids)


def filtered_positions(path: str, offset: int, num: int) -> np.ndarray:
  """Entries `offset .. offset + num - 1` of a filtered vocabulary, in file order.

  Args:
    path: a filtered-vocabulary JSON file (`load_filtered_vocab`).
    offset: entries skipped (the authors' `word_offset`).
    num: entries kept (the authors' `num_words`).

  Returns:
    [num] int64 token ids.

  Raises:
    ValueError: the range runs past the file's entries.
  """
  ids = load_filtered_vocab(path, file_order=True)
  if num <= 0 or offset < 0 or offset + num > ids.size:
    raise ValueError(f'{path}: positions [{offset}, {offset + num}) are not inside its '
                     f'{ids.size} entries (expected 0 <= offset and 0 < num, offset + num <= '
                     f'{ids.size}).')
  return ids[offset:offset + num]


def read_word_list(path: str) -> List[str]:
  """The words of a one-word-a-line file (OptiPrompt's `common_vocabs/*.txt`), stripped, in order."""
  try:
    with open(path) as f:
      words = [line.strip() for line in f]
  except OSError as e:
    raise ValueError(f'Cannot read the word list {path}: {e}') from e
  words = [w for w in words if w]
  if not words:
    raise ValueError(f'{path} holds no words; expected one word a line.')
  return words


def single_token_anchors(
    words: Sequence[str], encoders: Sequence[Callable[[str], Sequence[int]]],
    unk_ids: Sequence[Optional[int]]) -> Tuple[List[str], np.ndarray]:
  """Anchor words of Wu et al. (2024): one known token in every model.

  A word is kept when, for every model, `encoder(' ' + word)` is exactly one
  id and that id is not the model's UNK (PTfer `rel2abs_util.get_abs_anchors`,
  which tokenizes `' ' + word` with each Hugging Face tokenizer). Words keep
  the list's order; every kept word is an anchor (`--all_anchors`).

  Args:
    words: the word list, e.g. `read_word_list(WU_2024_WORDS path)`.
    encoders: one `word -> ids` callable per model (no EOS appended), e.g. a
      SentencePiece `encode` or a Hugging Face tokenizer's
      `lambda s: tok.convert_tokens_to_ids(tok.tokenize(s))`.
    unk_ids: the UNK id of each model (None: the tokenizer has none).

  Returns:
    (kept words [n], ids [num_models, n] int64): row m holds model m's token id
    of each kept word.

  Raises:
    ValueError: encoders and unk_ids differ in length, or no word is kept.
  """
  if not encoders or len(encoders) != len(unk_ids):
    raise ValueError(f'Expected one UNK id per encoder; found {len(encoders)} encoders and '
                     f'{len(unk_ids)} UNK ids.')
  kept, ids = [], []
  for word in words:
    row = []
    for encode, unk in zip(encoders, unk_ids):
      tokens = list(encode(' ' + word))
      if len(tokens) != 1 or tokens[0] == unk:
        break
      row.append(int(tokens[0]))
    else:
      kept.append(word)
      ids.append(row)
  if not kept:
    raise ValueError(f'None of the {len(words)} words is a single known token in every model.')
  return kept, np.array(ids, dtype=np.int64).T


def anchor_ids(words: Sequence[str], encoders: Sequence[Callable[[str], Sequence[int]]],
               unk_ids: Sequence[Optional[int]]) -> np.ndarray:
  """Row pairs of models with different vocabularies, through anchor words.

  `single_token_anchors` over every model at once (two, or three and more for
  multi-source), then each token at most once per model: a word whose id in
  some model an earlier word already took is dropped, so the fit sees every
  row of every table once.

  Returns:
    [num_models, num_anchors] int64: column j is the same word's row in each model.
  """
  _, ids = single_token_anchors(words, encoders, unk_ids)
  seen = [set() for _ in range(ids.shape[0])]
  keep = []
  for j in range(ids.shape[1]):
    if all(ids[m, j] not in seen[m] for m in range(ids.shape[0])):
      keep.append(j)
      for m in range(ids.shape[0]):
        seen[m].add(ids[m, j])
  return ids[:, keep]


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
_FILTERED = re.compile(r'^filtered:(.+\.json)@(\d+):(\d+)$')
_WORDS = re.compile(r'^words:(.+)$')
_STRING = re.compile(r'^string:(.+)$', re.DOTALL)


def select(spec: str, vocab_size: int, tokenizer=None) -> np.ndarray:
  """Ids named by a one-string spec, checked against a table of `vocab_size` rows.

  Args:
    spec: one of
      'filtered:PATH@OFFSET:NUM': entries OFFSET..OFFSET+NUM-1 of a filtered
        vocabulary JSON, in file order (`LESTER_2022`, the authors' fit set);
      'words:PATH': the single-token anchor words of a word list
        (`single_token_anchors`), in list order (Wu et al.'s anchors: PATH =
        OptiPrompt's `common_vocab_cased_be_ro_al.txt`);
      'string:TEXT': the tokens of TEXT, repeats and order kept (wayward
        prompts: the recycler is fit on the instruction string's tokens only,
        prompt-tuning `recycle.load_embeddings_from_string`);
      'words:pieces': the same over the tokenizer's own whole-word pieces (the
        authors' no-word-list branch: the models' vocabulary intersection,
        which for models sharing one tokenizer is that tokenizer's words);
      'all'; 'first:N' or 'first:N@OFFSET' (raw ids); or the path of a
        filtered vocabulary JSON file (all its ids, ascending).
    vocab_size: rows of the (smaller) embedding table the ids index.
    tokenizer: for 'words:', the models' shared tokenizer: `.encode(text)`,
      `.unk_id` and `.pieces()`; None loads the T5 SentencePiece model shipped
      with the package.

  Returns:
    [num_tokens] int64 ids.

  Raises:
    ValueError: a malformed spec or an id outside the table.
  """
  if spec == 'all':
    return all_ids(vocab_size)
  match = _FIRST.match(spec)
  if match:
    return first_n(int(match.group(1)), int(match.group(2) or 0), vocab_size)
  match = _FILTERED.match(spec)
  if match:
    ids = filtered_positions(match.group(1), int(match.group(2)), int(match.group(3)))
    check_ids(ids, vocab_size, source=spec)
    return ids
  match = _WORDS.match(spec) or _STRING.match(spec)
  if match and tokenizer is None:
    from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
    tokenizer = vocabulary.get_vocabulary(str(_ASSETS / 'sentencepiece.model'))
  if _STRING.match(spec):
    ids = np.array(tokenizer.encode(match.group(1)), dtype=np.int64)
    check_ids(ids, vocab_size, source='string: spec', allow_repeats=True)
    return ids
  if match:
    if match.group(1) == 'pieces':
      words = [p[1:] for p in tokenizer.pieces() if p.startswith('\u2581') and len(p) > 1]
    else:
      words = read_word_list(match.group(1))
    _, ids = single_token_anchors(words, [tokenizer.encode], [tokenizer.unk_id])
    # Two words can share a token; the first keeps it.
    _, first = np.unique(ids[0], return_index=True)
    ids = ids[0][np.sort(first)]
    check_ids(ids, vocab_size, source=spec)
    return ids
  if spec.endswith('.json'):
    ids = load_filtered_vocab(spec)
    check_ids(ids, vocab_size, source=spec)
    return ids
  raise ValueError(f"Vocabulary spec {spec!r} is not 'filtered:PATH.json@OFFSET:NUM', "
                   "'words:PATH', 'all', 'first:N[@OFFSET]' or a .json file.")


def select_pairs(spec: str, tokenizers: Sequence, vocab_sizes: Sequence[int],
                 names: Sequence[str]) -> np.ndarray:
  """The rows that pair models of different tokenizers: [num_models, num_anchors] int64.

  Rows are paired through anchor words (`anchor_ids`), the only way two
  vocabularies line up by meaning: 'words:PATH' (a word list, e.g.
  OptiPrompt's `common_vocab_cased_be_ro_al.txt`) or 'words:pieces' (the
  words every tokenizer has as one word-initial piece, markers stripped:
  `family_tokenizers.whole_words`). Specs of raw ids ('all', 'first:',
  'filtered:', a .json, 'string:') name rows of one vocabulary and are refused.

  Args:
    spec: 'words:PATH' or 'words:pieces'.
    tokenizers: one per model (`family_tokenizers.load_any`): sources, then target.
    vocab_sizes: rows of each model's embedding table.
    names: each model's path, for messages.
  """
  from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
  match = _WORDS.match(spec)
  if not match:
    raise ValueError(
        f'Vocabulary spec {spec!r} names token ids of one vocabulary, but the models '
        f'{", ".join(names)} have different tokenizers (tables of {list(vocab_sizes)} rows); '
        "pair their rows through anchor words: --vocabulary=words:PATH (a word list) or "
        'words:pieces (the words all tokenizers share).')
  if match.group(1) == 'pieces':
    common = None
    for tokenizer in tokenizers:
      words = set(family_tokenizers.whole_words(tokenizer))
      common = words if common is None else common & words
    words = [w for w in family_tokenizers.whole_words(tokenizers[0]) if w in common]
  else:
    words = read_word_list(match.group(1))
  # single_token_anchors encodes ' ' + word; word_ids_fn puts the space back itself.
  encoders = [lambda text, ids_of=family_tokenizers.word_ids_fn(t): ids_of(text[1:])
              for t in tokenizers]
  ids = anchor_ids(words, encoders, [family_tokenizers.unk_id(t) for t in tokenizers])
  for row, size, name in zip(ids, vocab_sizes, names):
    check_ids(row, size, source=f'{spec} anchors of {name}')
  return ids


def check_ids(ids, vocab_size: int, source: str = 'vocabulary ids',
              allow_repeats: bool = False) -> None:
  """Raises ValueError unless every id indexes a row of a `vocab_size`-row table.

  Args:
    ids: integer ids.
    vocab_size: rows in the embedding table.
    source: where the ids came from (a file name), for the message.
    allow_repeats: accept an id more than once (a string's tokens).
  """
  ids = np.asarray(ids)
  if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f'{source}: expected a non-empty 1-D array of integer ids; found shape '
                     f'{ids.shape} dtype {ids.dtype}.')
  bad = ids[(ids < 0) | (ids >= vocab_size)]
  if bad.size:
    raise ValueError(f'{source}: token id {int(bad[0])} is outside the embedding table of '
                     f'{vocab_size} rows ({bad.size} ids out of range, max id {int(ids.max())}).')
  if not allow_repeats and np.unique(ids).size != ids.size:
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
