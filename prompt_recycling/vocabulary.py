"""The T5 SentencePiece vocabulary, without TensorFlow.

`get_vocabulary(path)` returns a light vocabulary on `sentencepiece` alone, for
the core; with `prefer_seqio=True` (the tasks) it returns SeqIO's
`SentencePieceVocabulary`, which imports TensorFlow. Both have T5's layout and
give the same ids and the same decoded text:

  * ids 0, 1 and 2 are padding, EOS and UNK;
  * 32,000 SentencePiece pieces, then 100 sentinels counting down from the top,
    `<extra_id_0>` = 32099 ... `<extra_id_99>` = 32000 (vocab_size 32,100);
  * the model's embedding table is padded to 32,128 rows; ids 32100-32127 have
    no piece and decode as UNK.

Sentinels are real pieces (`▁<extra_id_N>`, user-defined, so never split):
`encode('in <extra_id_0> .')` yields 32099, and decoding spells them back.
"""
import pathlib
from typing import List, Sequence

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
EXTRA_IDS = 100


class SentencePieceVocabulary:
  """T5's vocabulary: the SentencePiece model plus `extra_ids` sentinel pieces.

  Attributes:
    path: the SentencePiece model file.
    extra_ids: number of sentinels appended (100 for T5).
  """

  def __init__(self, path: str, extra_ids: int = EXTRA_IDS):
    path = pathlib.Path(path)
    if not path.is_file():
      raise FileNotFoundError(f'SentencePiece model {path} does not exist. The T5 vocabulary is '
                              'public: gs://t5-data/vocabs/cc_all.32000/sentencepiece.model '
                              '(a copy ships in prompt_recycling/assets/t5/).')
    self.path = str(path)
    self.extra_ids = extra_ids
    model = sentencepiece_model_pb2.ModelProto.FromString(path.read_bytes())
    self._base_size = len(model.pieces)
    # Appended highest sentinel first, so <extra_id_0> gets the top id as in
    # span corruption; user-defined pieces are matched whole when encoding.
    for i in reversed(range(extra_ids)):
      model.pieces.add(piece=f'▁<extra_id_{i}>', score=0.0,
                       type=sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED)
    self._sp = spm.SentencePieceProcessor(model_proto=model.SerializeToString())

  @property
  def base_vocab_size(self) -> int:
    """Pieces of the SentencePiece model itself (32,000 for T5)."""
    return self._base_size

  @property
  def vocab_size(self) -> int:
    """Pieces plus sentinels (32,100 for T5)."""
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  def sentinel_id(self, i: int) -> int:
    """Id of `<extra_id_i>`: the sentinels count down from the top of the vocabulary."""
    if not 0 <= i < self.extra_ids:
      raise ValueError(f'{self.path}: sentinel index must be in [0, {self.extra_ids}), got {i}.')
    return self.vocab_size - 1 - i

  def encode(self, text: str, add_eos: bool = False) -> List[int]:
    """Text -> ids; `add_eos` appends EOS (1), as T5's feature converters do."""
    ids = list(self._sp.encode(text))
    return ids + [EOS_ID] if add_eos else ids

  def decode(self, ids: Sequence[int]) -> str:
    """Ids -> text, as SeqIO decodes: stops at EOS, drops padding, unknown ids -> UNK.

    Args:
      ids: [length] ints (a list or a 1-D array), possibly padded with 0.

    Returns:
      The text; sentinels spelled `<extra_id_N>`, ids outside [0, vocab_size)
      (the embedding table's padding rows) as the UNK piece ' ⁇ '.
    """
    ids = [int(i) for i in ids]
    if EOS_ID in ids:
      ids = ids[:ids.index(EOS_ID)]
    size = self.vocab_size
    return self._sp.decode([i if 0 <= i < size else UNK_ID for i in ids if i != PAD_ID])

  def pieces(self) -> List[str]:
    """The piece of every id below `vocab_size` ('▁' starts a word; sentinels `▁<extra_id_N>`)."""
    return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]


def get_vocabulary(path: str, prefer_seqio: bool = False):
  """The T5 vocabulary at `path`.

  Args:
    path: the SentencePiece model file.
    prefer_seqio: return `seqio.SentencePieceVocabulary` (imports TensorFlow)
      when seqio is installed; the light class otherwise.

  Returns:
    An object with `encode`, `decode`, `vocab_size` and `eos_id`.
  """
  if prefer_seqio:
    try:
      import seqio  # pylint: disable=g-import-not-at-top  (pulls in TensorFlow)
    except ImportError:
      pass
    else:
      return seqio.SentencePieceVocabulary(str(path), extra_ids=EXTRA_IDS)
  return SentencePieceVocabulary(path)
