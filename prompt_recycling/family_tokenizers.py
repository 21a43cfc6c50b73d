"""Tokenizers of BERT, RoBERTa, ALBERT and GPT-2 from local files, and how each tokenises a word.

Each family's tokenizer is built by Hugging Face's `transformers` class for it
from the files in a local directory (no download):

| family  | kind                        | files                                      |
|---------|-----------------------------|--------------------------------------------|
| bert    | WordPiece                   | vocab.txt (+ tokenizer_config.json; cased models say do_lower_case false) |
| roberta | byte-level BPE              | vocab.json + merges.txt (or tokenizer.json) |
| gpt2    | byte-level BPE              | vocab.json + merges.txt (or tokenizer.json) |
| albert  | SentencePiece (unigram)     | spiece.model (or tokenizer.json)           |

`word_ids_fn(tokenizer)` gives the `word -> list[int]` callable that
cross-tokenizer anchors are built from. Wu et al. (2024)'s code calls each
tokenizer's `tokenize(' ' + word)` (no special tokens) and keeps a word when
every model yields exactly one token that is not its UNK; we return the ids of
that same tokenisation, and `unk_id(tokenizer)` the id to compare with. The
leading space is what selects the word-initial piece: `Ġword` in byte-level
BPE, `▁word` in SentencePiece; WordPiece strips it. The project's T5
SentencePiece vocabulary (`vocabulary.py`) is accepted too, so T5 and mT5 take
part the same way.

`transformers` is imported lazily: the T5 core does not need it.
"""
import json
import os
from typing import Any, Callable, List, Optional

FAMILIES = ('bert', 'roberta', 'albert', 'gpt2')
_CLASSES = {'bert': 'BertTokenizer', 'roberta': 'RobertaTokenizer', 'albert': 'AlbertTokenizer',
            'gpt2': 'GPT2Tokenizer'}
# Files from which each family's tokenizer can be built; any one set suffices.
_FILES = {'bert': (('vocab.txt',), ('tokenizer.json',)),
          'roberta': (('vocab.json', 'merges.txt'), ('tokenizer.json',)),
          'gpt2': (('vocab.json', 'merges.txt'), ('tokenizer.json',)),
          'albert': (('spiece.model',), ('tokenizer.json',))}


def _family_from_config(path: str) -> Optional[str]:
  config = os.path.join(path, 'config.json')
  if not os.path.isfile(config):
    return None
  with open(config) as f:
    return json.load(f).get('model_type')


def load_tokenizer(path: str, family: Optional[str] = None) -> Any:
  """A `transformers` tokenizer of `family` built from the files in directory `path`.

  Args:
    path: local directory with the family's tokenizer files (table above),
      e.g. a checkpoint directory written by save_pretrained.
    family: one of FAMILIES; default: config.json's model_type in `path`.

  Raises:
    ValueError: unknown family, or none of the family's file sets in `path`.
  """
  family = family or _family_from_config(path)
  if family not in FAMILIES:
    raise ValueError(f'Tokenizer family {family!r} (for {path}) is not one of {FAMILIES}; pass '
                     'family= when the directory has no config.json.')
  if not any(all(os.path.isfile(os.path.join(path, f)) for f in files) for files in _FILES[family]):
    wanted = ' or '.join(' + '.join(files) for files in _FILES[family])
    raise ValueError(f'{path} has no {family} tokenizer files: expected {wanted}.')
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'{family} tokenizers need Hugging Face transformers: pip install '
                      "transformers (included in the '.[test]' extra).") from e
  return getattr(transformers, _CLASSES[family]).from_pretrained(path)


def word_ids_fn(tokenizer: Any) -> Callable[[str], List[int]]:
  """`word -> ids of ' ' + word` without special tokens, as the anchors use them.

  Args:
    tokenizer: a `transformers` tokenizer (`load_tokenizer`) or the project's
      T5 `vocabulary.SentencePieceVocabulary`.
  """
  if not hasattr(tokenizer, 'convert_tokens_to_ids'):  # T5's (ours or SeqIO's).
    return lambda word: list(tokenizer.encode(' ' + word))

  def word_ids(word: str) -> List[int]:
    return list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(' ' + word)))
  return word_ids


def unk_id(tokenizer: Any) -> Optional[int]:
  """The id a tokenizer gives unknown text (GPT-2 has none of its own: its <|endoftext|>)."""
  if hasattr(tokenizer, 'unk_token_id'):
    return tokenizer.unk_token_id
  return tokenizer.unk_id  # T5's SentencePiece vocabularies (ours or SeqIO's).


def load_any(path: str) -> Any:
  """A tokenizer from a path: a SentencePiece `.model` file (T5, mT5: `vocabulary.py`) or a
  directory of a family's files (`load_tokenizer`, the family from its config.json or its files).
  """
  if os.path.isfile(path):
    if not path.endswith('.model'):
      raise ValueError(f'Tokenizer path {path} is a file but not a SentencePiece .model; give a '
                       'SentencePiece model file or a directory of tokenizer files.')
    from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
    return vocabulary.get_vocabulary(path)
  family = _family_from_config(path)
  if family is None:  # No config.json: guess from the files present.
    if os.path.isfile(os.path.join(path, 'vocab.txt')):
      family = 'bert'
    elif os.path.isfile(os.path.join(path, 'spiece.model')):
      family = 'albert'
    elif os.path.isfile(os.path.join(path, 'vocab.json')):
      # RoBERTa's files are GPT-2's kind; its vocabulary has its own specials (<mask>, <unk>).
      with open(os.path.join(path, 'vocab.json'), encoding='utf-8') as f:
        family = 'roberta' if '<mask>' in json.load(f) else 'gpt2'
  return load_tokenizer(path, family)


def whole_words(tokenizer: Any) -> List[str]:
  """The tokenizer's word-initial pieces with the marker stripped, in id order.

  `Ġword` (byte-level BPE) and `▁word` (SentencePiece) give `word`; WordPiece
  pieces give themselves unless they continue a word (`##...`) or are
  special (`[CLS]`). The vocabulary-intersection anchors of Wu et al. (2024)
  start from these (`recycling.vocab.anchor_ids`), since raw piece strings of
  two conventions never match.
  """
  if hasattr(tokenizer, 'pieces'):  # T5's SentencePiece vocabulary.
    pieces = list(enumerate(tokenizer.pieces()))
  else:
    pieces = sorted(((i, p) for p, i in tokenizer.get_vocab().items()))
  special = set(getattr(tokenizer, 'all_special_tokens', ()))
  words = []
  for _, piece in pieces:
    if piece in special:
      continue
    if piece[:1] in ('\u0120', '\u2581'):  # 'Ġ', '▁'
      if len(piece) > 1:
        words.append(piece[1:])
    elif type(tokenizer).__name__.startswith('Bert') and not piece.startswith('##'):
      words.append(piece)
  return words
