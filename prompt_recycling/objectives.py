"""T5's pretraining objectives and corpus, in numpy (no TensorFlow).

The released "lm100k" checkpoints were made in two phases; `pretrain.py`
mirrors them at small scale:

1. Span corruption (Raffel et al. 2020): ~15% of the tokens, in spans of mean
   length 3, are dropped from the input; each dropped span is replaced by one
   sentinel (`<extra_id_0>` = 32099, then 32098, ...) and the target lists the
   sentinels each followed by the span it stands for.
2. LM adaptation (Lester et al. 2021): a prefix-LM objective: the input is a
   text's beginning, the target its continuation.

The corpus is plain text (the English Wikipedia sample in
`../shared/data/pretrain_corpus`, near-empty pages dropped), tokenized with the
T5 SentencePiece model, concatenated and cut into fixed-length chunks.
"""
import gzip
import hashlib
import json
import pathlib
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

EOS_ID = 1
SENTINEL_TOP = 32099  # <extra_id_0> in T5's 32,100-id vocabulary.


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
  """T5's noise mask: [length] bool, noise spans interleaved with kept spans.

  The number of noise tokens is round(length * density) (at least 1, at most
  length - 1), the number of spans round(noise / mean span length) (at least
  1). Noise and kept tokens are each cut into that many non-empty random
  pieces, interleaved starting with a kept piece, so the mask ends in noise.
  """
  num_noise = int(np.clip(round(length * noise_density), 1, length - 1))
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  num_spans = min(num_spans, num_noise, length - num_noise)

  def segment(num_items, num_segments):
    # A random composition of num_items into num_segments positive parts.
    cuts = np.sort(rng.choice(np.arange(1, num_items), num_segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [num_items]]))

  noise_lengths = segment(num_noise, num_spans)
  kept_lengths = segment(length - num_noise, num_spans)
  mask = np.zeros(length, bool)
  start = 0
  for kept, noise in zip(kept_lengths, noise_lengths):
    mask[start + kept:start + kept + noise] = True
    start += kept + noise
  return mask


def _replace_spans(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Each masked span -> one descending sentinel; unmasked tokens kept."""
  out, sentinel = [], SENTINEL_TOP
  for i, (token, masked) in enumerate(zip(tokens, mask)):
    if not masked:
      out.append(token)
    elif i == 0 or not mask[i - 1]:
      out.append(sentinel)
      sentinel -= 1
  return np.asarray(out, np.int32)


def span_corruption(tokens: np.ndarray, rng: np.random.Generator, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0) -> Dict[str, np.ndarray]:
  """One span-corruption example from [length] token ids (no EOS).

  Returns:
    {'inputs': kept tokens with a sentinel per dropped span, then EOS;
     'targets': each sentinel followed by its dropped span, then EOS}.
  """
  tokens = np.asarray(tokens, np.int32)
  mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
  return {'inputs': np.append(_replace_spans(tokens, mask), EOS_ID).astype(np.int32),
          'targets': np.append(_replace_spans(tokens, ~mask), EOS_ID).astype(np.int32)}


def corrupted_lengths(tokens_length: int, noise_density: float = 0.15,
                      mean_noise_span_length: float = 3.0) -> Tuple[int, int]:
  """(inputs, targets) lengths, EOS included, of a corrupted `tokens_length` chunk."""
  num_noise = int(np.clip(round(tokens_length * noise_density), 1, tokens_length - 1))
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def chunk_length_for(inputs_length: int, noise_density: float = 0.15,
                     mean_noise_span_length: float = 3.0) -> Tuple[int, int]:
  """The longest raw chunk whose corrupted input fits `inputs_length` (T5's helper).

  Returns:
    (raw chunk length, the resulting targets length).
  """
  length = inputs_length
  while corrupted_lengths(length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
    length += 1
  while corrupted_lengths(length, noise_density, mean_noise_span_length)[0] > inputs_length:
    length -= 1
  return length, corrupted_lengths(length, noise_density, mean_noise_span_length)[1]


def prefix_lm(tokens: np.ndarray, rng: np.random.Generator) -> Dict[str, np.ndarray]:
  """LM adaptation: split at a uniform point in [1, length - 1]; continuation as target."""
  tokens = np.asarray(tokens, np.int32)
  split = int(rng.integers(1, len(tokens)))
  return {'inputs': np.append(tokens[:split], EOS_ID).astype(np.int32),
          'targets': np.append(tokens[split:], EOS_ID).astype(np.int32)}


# --- Corpus -----------------------------------------------------------------

def read_documents(paths: Sequence[str], min_chars: int = 200) -> Iterator[str]:
  """Texts from JSON-lines (optionally gzipped, field 'text') or GLUE .tsv training files.

  Documents shorter than `min_chars` (WikiExtractor's redirect and stub pages)
  are dropped. Only training files may be passed: evaluation splits would leak
  into the models the papers' tasks are then evaluated on.
  """
  for path in paths:
    name = pathlib.Path(path).name
    if any(s in name for s in ('dev', 'test', 'val')):
      raise ValueError(f'{path} looks like an evaluation split; pretraining reads training text only.')
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8') as f:
      if path.endswith('.tsv'):
        next(f)  # Header.
        texts = (line.split('\t')[0] for line in f)
      else:
        texts = (json.loads(line)['text'] for line in f)
      for text in texts:
        if len(text.strip()) >= min_chars:
          yield text.strip()


def tokenized_chunks(documents: Iterable[str], vocabulary, chunk_length: int,
                     max_tokens: Optional[int] = None) -> np.ndarray:
  """Documents tokenized, each followed by EOS, concatenated and cut: [chunks, chunk_length]."""
  stream, total = [], 0
  for text in documents:
    ids = list(vocabulary.encode(text)) + [EOS_ID]
    stream.append(np.asarray(ids, np.int32))
    total += len(ids)
    if max_tokens and total >= max_tokens:
      break
  tokens = np.concatenate(stream) if stream else np.zeros((0,), np.int32)
  usable = (len(tokens) // chunk_length) * chunk_length
  if usable == 0:
    raise ValueError(f'The corpus gave {len(tokens)} tokens, fewer than one chunk of {chunk_length}.')
  return tokens[:usable].reshape(-1, chunk_length)


def cached_chunks(paths: Sequence[str], vocabulary, chunk_length: int, cache_dir: str,
                  max_tokens: Optional[int] = None, min_chars: int = 200) -> np.ndarray:
  """`tokenized_chunks` of `read_documents(paths)`, cached as .npy keyed by the inputs."""
  key = hashlib.sha256(json.dumps([sorted(map(str, paths)), chunk_length, max_tokens, min_chars,
                                   getattr(vocabulary, 'path', '')]).encode()).hexdigest()[:16]
  cache = pathlib.Path(cache_dir) / f'chunks_{chunk_length}_{key}.npy'
  if cache.exists():
    return np.load(cache)
  chunks = tokenized_chunks(read_documents(paths, min_chars), vocabulary, chunk_length, max_tokens)
  cache.parent.mkdir(parents=True, exist_ok=True)
  tmp = cache.with_suffix('.tmp.npy')
  np.save(tmp, chunks)
  tmp.replace(cache)
  return chunks


def examples(chunks: np.ndarray, objective: str, seed: int, start: int = 0,
             noise_density: float = 0.15, mean_noise_span_length: float = 3.0
             ) -> Iterator[Dict[str, np.ndarray]]:
  """Endless objective examples over shuffled chunks, from stream position `start`.

  The corruption of the example at position p depends only on (seed, p), so a
  resumed run sees exactly what an uninterrupted one would.
  """
  position = start
  n = len(chunks)
  while True:
    epoch, offset = divmod(position, n)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    rng = np.random.default_rng([seed, 1 << 20, position])
    tokens = chunks[order[offset]]
    if objective == 'span_corruption':
      yield span_corruption(tokens, rng, noise_density, mean_noise_span_length)
    elif objective == 'prefix_lm':
      yield prefix_lm(tokens, rng)
    else:
      raise ValueError(f"Unknown objective {objective!r}: 'span_corruption' or 'prefix_lm'.")
    position += 1
