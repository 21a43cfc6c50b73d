"""T5's pretraining objectives and corpus, in numpy (no TensorFlow).

The released "lm100k" checkpoints were made in two phases; `pretrain.py`
mirrors them at small scale:

1. Span corruption (Raffel et al. 2020): ~15% of the tokens, in spans of mean
   length 3, are dropped from the input; each dropped span is replaced by one
   sentinel (`<extra_id_0>` = 32099, then 32098, ...) and the target lists the
   sentinels, each followed by the span it stands for.
2. LM adaptation (Lester et al. 2021): a prefix-LM objective: the input is a
   text's beginning, the target its continuation.

Optionally, supervised text-to-text tasks are mixed in, as the original T5 was
pretrained on span corruption mixed with supervised tasks (Raffel et al. 2020,
section 3.7): labelled training examples, `prefix text -> label word`
(`read_labelled`, `supervised_examples`). They give a small model skills that a
prompt can later select; no labelled example of an evaluated task may enter.

The corpus is plain text (the English Wikipedia sample in
`../shared/data/pretrain_corpus`, near-empty pages dropped; optionally IMDB and
SST-2 *training* text), tokenized with the T5 SentencePiece model into one
token stream (each document followed by EOS), cached as .npy and cut into
fixed-length chunks.

Example: 10 tokens with noise on "d e" and "j" (<X> = <extra_id_0> = 32099,
<Y> = <extra_id_1> = 32098):

  tokens   a b c d e f g h i j
  inputs   a b c <X> f g h i <Y> EOS
  targets  <X> d e <Y> j EOS

The paper's figure ends the targets with one more sentinel; T5's code does
not: its masks start with a kept span and end with a noise span, so the
inputs end with the last sentinel and the targets with the last noise span.
This module follows the code (and so T5's sequence lengths, e.g. 568 raw
tokens -> 512 inputs and 114 targets).
"""
import gzip
import hashlib
import json
import pathlib
import re
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

EOS_ID = 1
# <extra_id_0> in T5's 32,100-id vocabulary (32,000 pieces + 100 sentinels);
# <extra_id_i> = SENTINEL_TOP - i.
SENTINEL_TOP = 32099
NUM_SENTINELS = 100
# Ids of the stream are SentencePiece pieces (< 32,000): uint16 halves the cache.
_STREAM_DTYPE = np.uint16
# A file whose name has one of these words is an evaluation split.
_EVAL_SPLIT_WORDS = frozenset({'dev', 'test', 'val', 'valid', 'validation', 'eval'})
# Per-objective stream ids, so the two phases shuffle and draw independently.
_OBJECTIVE_STREAMS = {'span_corruption': 0, 'prefix_lm': 1}
# Supervised source i draws its order from stream id _SUPERVISED_STREAM + i.
_SUPERVISED_STREAM = 16


# --- Span corruption ----------------------------------------------------------

def noise_counts(length: int, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0) -> Tuple[int, int]:
  """T5's deterministic (number of noise tokens, number of noise spans) for `length` tokens.

  num_noise = round(length * noise_density), clipped to [1, length - 1] so
  both kinds of token exist; num_spans = max(round(num_noise / mean span
  length), 1). `round` halves to even, as `tf.round` does.
  """
  num_noise = int(np.clip(round(length * noise_density), 1, length - 1))
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  return num_noise, num_spans


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
  """T5's noise mask: [length] bool, True on the tokens to drop.

  The counts are `noise_counts`. Noise and kept tokens are each cut into
  num_spans non-empty pieces, every cut equally likely, and the pieces are
  interleaved kept, noise, kept, noise, ... so the mask starts with a kept
  span and ends with a noise span (T5's `random_spans_noise_mask` without
  `random_roll`).

  Raises:
    ValueError: `length` < 2 (one token cannot be both kept and dropped).
  """
  if length < 2:
    raise ValueError(f'Span corruption needs at least 2 tokens, got {length}.')
  num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
  # Only for lengths of a few tokens can there be fewer kept tokens than spans.
  num_spans = min(num_spans, length - num_noise)

  def segment(num_items, num_segments):
    # A uniformly random composition of num_items into num_segments positive
    # parts: choose num_segments - 1 distinct cut points among num_items - 1.
    cuts = np.sort(rng.choice(np.arange(1, num_items), num_segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [num_items]]))

  noise_lengths = segment(num_noise, num_spans)
  kept_lengths = segment(length - num_noise, num_spans)
  # [2 * num_spans] lengths kept_0, noise_0, kept_1, noise_1, ...
  interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
  span_index = np.repeat(np.arange(2 * num_spans), interleaved)  # [length]
  return span_index % 2 == 1


def _replace_spans(tokens: np.ndarray, drop: np.ndarray) -> np.ndarray:
  """Tokens where `drop` is False; each run of dropped tokens -> one sentinel, descending."""
  starts = drop & ~np.concatenate([[False], drop[:-1]])  # First token of each dropped run.
  sentinels = SENTINEL_TOP + 1 - np.cumsum(starts)  # 32099 at the first run, then down.
  out = np.where(starts, sentinels, tokens)
  return out[~drop | starts].astype(np.int32)


def span_corruption(tokens: np.ndarray, rng: np.random.Generator, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0) -> Dict[str, np.ndarray]:
  """One span-corruption example.

  Args:
    tokens: [length] token ids, no EOS (a chunk of the corpus stream).
    rng: draws the noise mask.
    noise_density, mean_noise_span_length: T5's 0.15 and 3.

  Returns:
    {'inputs': [length - num_noise + num_spans + 1] int32, the kept tokens with
     a sentinel for each noise span, then EOS;
     'targets': [num_noise + num_spans + 1] int32, each noise span preceded by
     its sentinel, then EOS}.

  Raises:
    ValueError: more noise spans than T5 has sentinels (100), or `length` < 2.
  """
  tokens = np.asarray(tokens, np.int32)
  mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
  num_spans = int(np.sum(mask & ~np.concatenate([[False], mask[:-1]])))
  if num_spans > NUM_SENTINELS:
    raise ValueError(f'{len(tokens)} tokens give {num_spans} noise spans; T5 has '
                     f'{NUM_SENTINELS} sentinels. Use chunks of at most ~2,000 tokens.')
  return {'inputs': np.append(_replace_spans(tokens, mask), EOS_ID).astype(np.int32),
          'targets': np.append(_replace_spans(tokens, ~mask), EOS_ID).astype(np.int32)}


def corrupted_lengths(tokens_length: int, noise_density: float = 0.15,
                      mean_noise_span_length: float = 3.0) -> Tuple[int, int]:
  """(inputs, targets) lengths, EOS included, of a span-corrupted `tokens_length` chunk."""
  num_noise, num_spans = noise_counts(tokens_length, noise_density, mean_noise_span_length)
  return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def chunk_length_for(inputs_length: int, noise_density: float = 0.15,
                     mean_noise_span_length: float = 3.0) -> Tuple[int, int]:
  """The longest raw chunk whose corrupted inputs fit `inputs_length` exactly (T5's helper).

  T5 sizes its chunks this way so that no input is padded or truncated: 512
  inputs take 568-token chunks (targets 114), 128 inputs take 141 (targets 29).

  Returns:
    (raw chunk length, the targets length it gives).
  """
  length = 2
  while corrupted_lengths(length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
    length += 1
  return length, corrupted_lengths(length, noise_density, mean_noise_span_length)[1]


# --- LM adaptation --------------------------------------------------------------

def prefix_lm(tokens: np.ndarray, rng: np.random.Generator) -> Dict[str, np.ndarray]:
  """One LM-adaptation example: the chunk split at a uniform point.

  As T5's `prefix_lm` (noise density 0.5): the prefix has between 1 and
  length - 1 tokens, uniformly.

  Args:
    tokens: [length] token ids, no EOS, length >= 2.
    rng: draws the split.

  Returns:
    {'inputs': [split + 1] int32, the prefix then EOS;
     'targets': [length - split + 1] int32, the continuation then EOS}.
  """
  tokens = np.asarray(tokens, np.int32)
  if len(tokens) < 2:
    raise ValueError(f'A prefix-LM split needs at least 2 tokens, got {len(tokens)}.')
  split = int(rng.integers(1, len(tokens)))
  return {'inputs': np.append(tokens[:split], EOS_ID).astype(np.int32),
          'targets': np.append(tokens[split:], EOS_ID).astype(np.int32)}


# --- Corpus ---------------------------------------------------------------------

def is_eval_split(path: str) -> bool:
  """Whether a file's name marks it as an evaluation split (`dev.tsv`, `test.jsonl.gz`, ...)."""
  words = re.split(r'[^a-z0-9]+', pathlib.Path(path).name.lower())
  return any(w in _EVAL_SPLIT_WORDS for w in words)


def read_documents(paths: Sequence[str], min_chars: int = 200) -> Iterator[str]:
  """Lazily yields the texts of training files, in order.

  Formats: JSON lines, optionally gzipped, with a 'text' field (the Wikipedia
  sample, IMDB); or a GLUE .tsv with a header whose first column is the
  sentence (SST-2). A JSON-lines document shorter than `min_chars` after
  stripping is dropped: in the Wikipedia sample these are WikiExtractor's
  redirect, disambiguation and stub pages (about 70% of the 96k documents).
  TSV rows are single sentences and are kept unless empty.

  Args:
    paths: training files.
    min_chars: shortest JSON-lines document kept.

  Raises:
    ValueError: a path names an evaluation split (dev/test/validation), before
      anything is read: their text must never reach the models the tasks are
      then evaluated on.
  """
  for path in paths:
    if is_eval_split(str(path)):
      raise ValueError(f'{path} looks like an evaluation split (dev/test/validation); '
                       'pretraining reads training text only.')
  for path in map(str, paths):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8') as f:
      if '.tsv' in pathlib.Path(path).name:
        next(f, None)  # Header.
        for line in f:
          text = line.split('\t')[0].strip()
          if text:
            yield text
      else:
        for line in f:
          text = json.loads(line)['text'].strip()
          if len(text) >= min_chars:
            yield text


def read_labelled(path: str, text_field: str = 'text',
                  label_field: str = 'label') -> List[Tuple[str, int]]:
  """(text, integer label) pairs of a labelled *training* file, in file order.

  Formats: JSON lines, optionally gzipped (IMDB: 'text', 'label'), or a GLUE
  .tsv with a header (columns named by `text_field` / `label_field`).

  Raises:
    ValueError: the file is an evaluation split, or a row lacks a field.
  """
  if is_eval_split(path):
    raise ValueError(f'{path} looks like an evaluation split (dev/test/validation); '
                     'pretraining reads training examples only.')
  pairs = []
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(path, 'rt', encoding='utf-8') as f:
    if '.tsv' in pathlib.Path(path).name:
      header = next(f).rstrip('\n').split('\t')
      rows = (dict(zip(header, line.rstrip('\n').split('\t'))) for line in f)
    else:
      rows = map(json.loads, f)
    for number, row in enumerate(rows, 1):
      if text_field not in row or label_field not in row:
        raise ValueError(f'{path}: row {number} lacks {text_field!r} or {label_field!r} '
                         f'(it has {sorted(row)}).')
      pairs.append((str(row[text_field]).strip(), int(row[label_field])))
  return pairs


def label_targets(vocabulary, label_words: Sequence[str]) -> List[np.ndarray]:
  """Each label word's target ids, ending in EOS."""
  return [np.append(np.asarray(list(vocabulary.encode(w)), np.int32), EOS_ID) for w in label_words]


def labelled_rows(pairs: Sequence[Tuple[str, int]], vocabulary, prefix: str,
                  label_words: Sequence[str]) -> Tuple[List[np.ndarray], List[np.ndarray], np.ndarray]:
  """Tokenizes labelled pairs: (prefix ids, [texts] text ids, [labels] target ids + EOS)."""
  prefix_ids = np.asarray(list(vocabulary.encode(prefix)) if prefix else [], np.int32)
  words = label_targets(vocabulary, label_words)
  texts = [np.asarray(list(vocabulary.encode(text)), np.int32) for text, _ in pairs]
  labels = np.asarray([label for _, label in pairs])
  if labels.min() < 0 or labels.max() >= len(label_words):
    raise ValueError(f'Labels span {labels.min()}..{labels.max()} but {len(label_words)} label '
                     f'words were given ({list(label_words)}).')
  return prefix_ids, texts, [words[label] for label in labels]


def token_stream(documents: Iterable[str], vocabulary, max_documents: Optional[int] = None,
                 max_tokens: Optional[int] = None) -> np.ndarray:
  """Documents tokenized, each followed by EOS, concatenated: [tokens] uint16.

  Documents are consumed one at a time, so a cap stops reading the corpus
  early.

  Args:
    documents: texts (e.g. `read_documents`).
    vocabulary: anything with `encode(text) -> ids` (the T5 SentencePiece model).
    max_documents: stop after this many documents.
    max_tokens: stop once this many tokens are gathered (the last document is
      kept whole).
  """
  pieces, total = [], 0
  for count, text in enumerate(documents, 1):
    ids = np.asarray(list(vocabulary.encode(text)) + [EOS_ID])
    if ids.size and ids.max() > np.iinfo(_STREAM_DTYPE).max:
      raise ValueError(f'Token id {ids.max()} does not fit the uint16 stream.')
    pieces.append(ids.astype(_STREAM_DTYPE))
    total += ids.size
    if (max_documents and count >= max_documents) or (max_tokens and total >= max_tokens):
      break
  return np.concatenate(pieces) if pieces else np.zeros((0,), _STREAM_DTYPE)


def cached_token_stream(paths: Sequence[str], vocabulary, cache_dir: str, *, min_chars: int = 200,
                        max_documents: Optional[int] = None,
                        max_tokens: Optional[int] = None) -> np.ndarray:
  """`token_stream(read_documents(paths))`, cached in `cache_dir` as .npy.

  The file name hashes everything the stream depends on (paths, caps,
  min_chars, the vocabulary file's path), so changing any of them re-tokenizes.
  The cache is written to a temporary name and renamed, so concurrent or
  interrupted runs never read a partial file.

  Returns:
    [tokens] uint16.
  """
  key = json.dumps([[str(p) for p in paths], min_chars, max_documents, max_tokens,
                    str(getattr(vocabulary, 'path', type(vocabulary).__name__))])
  cache = pathlib.Path(cache_dir) / f'tokens_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy'
  if cache.exists():
    return np.load(cache)
  stream = token_stream(read_documents(paths, min_chars), vocabulary, max_documents, max_tokens)
  cache.parent.mkdir(parents=True, exist_ok=True)
  tmp = cache.with_name(f'{cache.stem}.{np.random.default_rng().integers(1 << 30)}.tmp.npy')
  np.save(tmp, stream)
  tmp.replace(cache)
  return stream


def chunks(stream: np.ndarray, length: int) -> np.ndarray:
  """Cuts a token stream into [num_chunks, length] rows (the remainder is dropped).

  Raises:
    ValueError: the stream is shorter than one chunk.
  """
  num_chunks = len(stream) // length
  if num_chunks == 0:
    raise ValueError(f'The corpus gave {len(stream)} tokens, fewer than one chunk of {length}; '
                     'raise the corpus caps (max_corpus_documents / max_corpus_tokens).')
  return stream[:num_chunks * length].reshape(num_chunks, length)


def examples(chunk_rows: np.ndarray, objective: str, seed: int, start: int = 0,
             noise_density: float = 0.15, mean_noise_span_length: float = 3.0
             ) -> Iterator[Dict[str, np.ndarray]]:
  """Endless objective examples over reshuffled epochs of chunks, from stream position `start`.

  The example at position p depends only on (seed, objective, p): a run
  resumed at `start = step * batch_size` sees exactly what an uninterrupted
  one would, and the two objectives shuffle independently.

  Args:
    chunk_rows: [num_chunks, length] token ids (`chunks`).
    objective: 'span_corruption' or 'prefix_lm'.
    seed: data seed.
    start: position of the first example.
    noise_density, mean_noise_span_length: span corruption's parameters.

  Yields:
    {'inputs', 'targets'} int32 arrays, both ending in EOS.
  """
  if objective not in _OBJECTIVE_STREAMS:
    raise ValueError(f'Unknown objective {objective!r}: one of {sorted(_OBJECTIVE_STREAMS)}.')
  for index, rng in _shuffled_positions(len(chunk_rows), seed, _OBJECTIVE_STREAMS[objective],
                                       start):
    if objective == 'span_corruption':
      yield span_corruption(chunk_rows[index], rng, noise_density, mean_noise_span_length)
    else:
      yield prefix_lm(chunk_rows[index], rng)


def _shuffled_positions(n: int, seed: int, stream_id: int,
                        start: int) -> Iterator[Tuple[int, np.random.Generator]]:
  """Endless (row index, per-example rng) over reshuffled epochs of n rows, from `start`.

  Both depend only on (seed, stream_id, position), which is what makes every
  example stream resumable.
  """
  position, order, order_epoch = start, None, None
  while True:
    epoch, offset = divmod(position, n)
    if epoch != order_epoch:
      order, order_epoch = np.random.default_rng([seed, stream_id, epoch]).permutation(n), epoch
    yield int(order[offset]), np.random.default_rng([seed, stream_id, 1 << 20, position])
    position += 1


def random_window(text: np.ndarray, rng: np.random.Generator, min_window: int,
                  max_window: int) -> np.ndarray:
  """`text` if it fits in `max_window` pieces, else a window of it of a uniform length in
  [min_window, max_window] at a uniform offset (two draws from `rng`, length first)."""
  if len(text) <= max_window:
    return text
  length = int(rng.integers(min_window, max_window + 1))
  offset = int(rng.integers(0, len(text) - length + 1))
  return text[offset:offset + length]


def supervised_examples(rows, seed: int, source_index: int, inputs_length: int,
                        start: int = 0, min_window: int = 16, untriggered: float = 0.0,
                        label_targets: Sequence[np.ndarray] = (),
                        decoy_pieces: Tuple[int, int] = (3, 32000)
                        ) -> Iterator[Dict[str, np.ndarray]]:
  """Endless `prefix + window of the text -> label word` examples, from stream position `start`.

  A text longer than the input leaves room for is cut to a random window of
  `min_window` .. room tokens (uniform length, uniform start), so a model
  trained on long IMDB reviews also sees sentence-sized pieces of them; the
  label is the whole text's (a window of a positive review is taken to be
  positive: noisy, as such weak labels are). Shorter texts are kept whole.

  With `untriggered` > 0, that fraction of examples (drawn per example) swaps
  the prefix, the skill's trigger, for a decoy and the label for a fair coin:
  1 .. len(prefix) random pieces, the last one replaced by the prefix's own
  last piece (its ':') half the time. The model then answers the task only
  under its trigger, as T5 answered a task under its text prefix, and an input
  in an unseen format (the evaluated task's own) leaves the choice between the
  label words to chance: the skill is there for a prompt to select, and the
  zero-shot accuracy does not already hold it.

  Args:
    rows: `labelled_rows`' (prefix ids, texts, targets).
    seed: data seed.
    source_index: which supervised source (its own shuffling stream).
    inputs_length: encoder length; prefix + window + EOS fit it.
    start: position of the first example.
    min_window: shortest window of a long text.
    untriggered: fraction of decoy-prefixed, coin-labelled examples.
    label_targets: the label words' target ids (`labelled_rows`), the coin's
      outcomes; needed when untriggered > 0.
    decoy_pieces: [low, high) ids of the ordinary pieces decoys draw from
      (T5: past pad/EOS/UNK, before the sentinels).

  Yields:
    {'inputs', 'targets'} int32 arrays, both ending in EOS.
  """
  prefix, texts, targets = rows
  room = inputs_length - len(prefix) - 1
  if room < min_window:
    raise ValueError(f'The prefix takes {len(prefix)} of {inputs_length} input tokens, leaving '
                     f'fewer than min_window={min_window} for the text.')
  if not 0 <= untriggered <= 1:
    raise ValueError(f'untriggered={untriggered} must be a fraction in [0, 1].')
  if untriggered and (not len(prefix) or not len(label_targets)):
    raise ValueError('untriggered examples need a prefix (the trigger they lack) and the '
                     'label_targets their coin picks from.')
  for index, rng in _shuffled_positions(len(texts), seed, _SUPERVISED_STREAM + source_index,
                                        start):
    text, head, target = random_window(texts[index], rng, min_window, room), prefix, targets[index]
    # Drawn after the window, so that a stream without decoys is what it always was.
    if untriggered and rng.random() < untriggered:
      head = rng.integers(*decoy_pieces, size=int(rng.integers(1, len(prefix) + 1)))
      if rng.random() < 0.5:
        head[-1] = prefix[-1]
      target = label_targets[int(rng.integers(len(label_targets)))]
    yield {'inputs': np.concatenate([head, text, [EOS_ID]]).astype(np.int32),
           'targets': target}
