"""`vocabulary.py` on the real T5 SentencePiece model (cc_all.32000 + 100 sentinels)."""
import re

import pytest

from conftest import shared_path
from prompt_recycling import vocabulary

SENTENCES = (
    'The quick brown fox jumps over the lazy dog.',
    "sst2 sentence: it's a charming and often affecting journey.",
    'Fill <extra_id_0> the blank <extra_id_1>.',
    'Numbers 3.14 and naïve café — 東京.',
    # Edge cases: a sentinel glued to a word is not one (as in SeqIO), one at
    # the start is; special pieces typed as text are text.
    'x<extra_id_0>y', '<extra_id_5> start', 'a <pad> b </s> c <unk>',
)


@pytest.fixture(scope='module')
def vocab():
  return vocabulary.get_vocabulary(str(shared_path('t5', 'sentencepiece.model')))


def test_get_vocabulary_is_the_light_class_by_default(vocab, sentencepiece_model):
  assert isinstance(vocab, vocabulary.SentencePieceVocabulary)
  assert vocab.path == str(sentencepiece_model)


def test_sizes_and_special_ids(vocab):
  assert vocab.vocab_size == 32100
  assert vocab.base_vocab_size == 32000
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  assert vocab.pieces()[:3] == ['<pad>', '</s>', '<unk>']


def test_round_trip_of_a_sentence(vocab):
  text = 'The quick brown fox jumps over the lazy dog.'
  ids = vocab.encode(text)
  assert ids[0] == 37  # '▁The'.
  assert all(3 <= i < 32000 for i in ids)  # Plain text: no specials, no sentinels.
  assert vocab.decode(ids) == text
  assert vocab.encode(text, add_eos=True) == ids + [1]


def test_sentinels_count_down_from_the_top(vocab):
  assert vocab.sentinel_id(0) == 32099
  assert vocab.sentinel_id(99) == 32000
  pieces = vocab.pieces()
  assert pieces[32099] == '▁<extra_id_0>' and pieces[32000] == '▁<extra_id_99>'
  # A sentinel in text is one id, never split into pieces, and decodes back.
  ids = vocab.encode('Fill <extra_id_0> the blank <extra_id_1>.')
  assert 32099 in ids and 32098 in ids
  assert vocab.decode(ids) == 'Fill <extra_id_0> the blank <extra_id_1>.'
  assert vocab.decode([32000]) == '<extra_id_99>'
  with pytest.raises(ValueError, match=r'sentinel index must be in \[0, 100\)'):
    vocab.sentinel_id(100)


def test_decode_stops_at_eos_and_drops_padding(vocab):
  ids = vocab.encode('hello world')
  assert vocab.decode(ids + [1] + vocab.encode('never shown') + [0, 0]) == 'hello world'
  assert vocab.decode([0] + ids + [0, 0, 0]) == 'hello world'
  assert vocab.decode([1] + ids) == ''
  # Ids past the vocabulary (the embedding table's padding rows) read as UNK.
  assert vocab.decode(ids + [32127]) == 'hello world ⁇ '


def test_agrees_with_seqio(vocab, sentencepiece_model):
  seqio = pytest.importorskip('seqio')  # Imports TensorFlow: one test only.
  reference = vocabulary.get_vocabulary(str(sentencepiece_model), prefer_seqio=True)
  assert isinstance(reference, seqio.SentencePieceVocabulary)
  assert reference.vocab_size == vocab.vocab_size
  for text in SENTENCES:
    ids = vocab.encode(text)
    assert ids == list(reference.encode(text)), text
    assert vocab.decode(ids) == reference.decode(ids), text
  padded = vocab.encode(SENTENCES[0]) + [32099, 1, 7, 0, 0]
  assert vocab.decode(padded) == reference.decode(padded)


def test_missing_model_file_is_named(tmp_path):
  missing = tmp_path / 'sentencepiece.model'
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
    vocabulary.get_vocabulary(str(missing))
