"""The T5 SentencePiece vocabulary, without TensorFlow.

`get_vocabulary(path)` returns SeqIO's `SentencePieceVocabulary` when asked
(`prefer_seqio=True`, for the tasks) and otherwise a light one on
`sentencepiece` alone, for the core. Both have T5's layout: the 32,000
SentencePiece pieces, then 100 sentinels `<extra_id_0>` = 32099 down to
`<extra_id_99>` = 32000; the model's embedding table is padded to 32,128 rows.
Ids 0, 1 and 2 are padding, EOS and UNK.
"""
import pathlib
from typing import List, Sequence

import sentencepiece as spm

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
EXTRA_IDS = 100


class SentencePieceVocabulary:
  """T5's vocabulary: SentencePiece pieces plus 100 sentinel ids (encode adds no EOS)."""

  def __init__(self, path: str, extra_ids: int = EXTRA_IDS):
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f'SentencePiece model {path} does not exist. The T5 vocabulary is '
                              'public: gs://t5-data/vocabs/cc_all.32000/sentencepiece.model '
                              '(a copy ships in prompt_recycling/assets/t5/).')
    self.path = str(path)
    self._sp = spm.SentencePieceProcessor(model_file=self.path)
    self.extra_ids = extra_ids

  @property
  def base_vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def vocab_size(self) -> int:
    """Pieces plus sentinels (32,100 for T5)."""
    return self.base_vocab_size + self.extra_ids

  @property
  def eos_id(self) -> int:
    return EOS_ID

  def sentinel_id(self, i: int) -> int:
    """Id of `<extra_id_i>`: the sentinels count down from the top of the vocabulary."""
    return self.vocab_size - 1 - i

  def encode(self, text: str) -> List[int]:
    return list(self._sp.encode(text))

  def decode(self, ids: Sequence[int]) -> str:
    """Ids -> text; stops at EOS, drops padding, spells sentinels `<extra_id_N>`."""
    out, pieces = [], []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i == PAD_ID:
        continue
      if i >= self.base_vocab_size:
        out.append(self._sp.decode(pieces))
        pieces = []
        out.append(f'<extra_id_{self.vocab_size - 1 - i}>')
      else:
        pieces.append(i)
    out.append(self._sp.decode(pieces))
    return ''.join(out)

  def pieces(self) -> List[str]:
    """The piece string of every id below `vocab_size` (sentinels as `<extra_id_N>`)."""
    base = [self._sp.id_to_piece(i) for i in range(self.base_vocab_size)]
    return base + [f'<extra_id_{self.extra_ids - 1 - j}>' for j in range(self.extra_ids)]


def get_vocabulary(path: str, prefer_seqio: bool = False):
  """The T5 vocabulary at `path`; SeqIO's class (imports TensorFlow) only if asked."""
  if prefer_seqio:
    try:
      import seqio  # pylint: disable=g-import-not-at-top
    except ImportError:
      pass
    else:
      return seqio.SentencePieceVocabulary(str(path), extra_ids=EXTRA_IDS)
  return SentencePieceVocabulary(path)
