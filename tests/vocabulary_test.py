"""The TF-free T5 vocabulary on the real SentencePiece model, and its agreement with SeqIO."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import shared_path
from prompt_recycling import vocabulary

TEXTS = ['Hello world!', 'sst2 sentence: it is a charming, often affecting journey. ',
         'Ünïcödé   spaces\ttab 1234', '', '  leading spaces',
         'Dante was born in <extra_id_0> .', '<extra_id_0> x <extra_id_12>ly jel<extra_id_3> y',
         'Numbers 3.14 and naïve café — 東京.',
         # A sentinel glued to a word is not one (as in SeqIO); special pieces typed as text are text.
         'x<extra_id_0>y', 'a <pad> b </s> c <unk>']


@pytest.fixture(scope='module')
def vocab():
  return vocabulary.SentencePieceVocabulary(str(shared_path('t5', 'sentencepiece.model')))


def test_get_vocabulary_is_the_light_class_by_default(sentencepiece_model):
  vocab = vocabulary.get_vocabulary(str(sentencepiece_model))
  assert type(vocab) is vocabulary.SentencePieceVocabulary
  assert vocab.path == str(sentencepiece_model)


def test_layout_is_t5s(vocab):
  assert (vocab.base_vocab_size, vocab.vocab_size) == (32000, 32100)
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  assert vocab.sentinel_id(0) == 32099 and vocab.sentinel_id(99) == 32000
  with pytest.raises(ValueError, match=r'sentinel index must be in \[0, 100\), got 100'):
    vocab.sentinel_id(100)
  pieces = vocab.pieces()
  assert len(pieces) == 32100
  assert pieces[:3] == ['<pad>', '</s>', '<unk>'] and pieces[32099] == '▁<extra_id_0>'


def test_encode_decode(vocab):
  assert vocab.encode('Hello world!') == [8774, 296, 55]
  assert vocab.encode('Hello world!', add_eos=True) == [8774, 296, 55, 1]
  for text in TEXTS[:2]:
    assert vocab.decode(vocab.encode(text, add_eos=True) + [0, 0]) == text.strip()
  # Sentinels are whole pieces at word starts, both ways.
  ids = vocab.encode('Dante was born in <extra_id_0> .')
  assert 32099 in ids and vocab.decode(ids) == 'Dante was born in <extra_id_0> .'
  ids = vocab.encode('Fill <extra_id_0> the blank <extra_id_1>.')
  assert 32099 in ids and 32098 in ids
  assert vocab.decode(ids) == 'Fill <extra_id_0> the blank <extra_id_1>.'
  assert vocab.decode([32000]) == '<extra_id_99>'
  # Decoding stops at EOS, drops padding, and shows padding rows of the table as UNK.
  assert vocab.decode(np.asarray([0, 8774, 32127, 296, 1, 55])) == 'Hello ⁇  world'
  assert vocab.decode([1, 8774, 296]) == ''


def test_agrees_with_seqio(vocab, sentencepiece_model):
  """Same ids and text as the vocabulary the SeqIO tasks use (skipped without seqio)."""
  pytest.importorskip('seqio')
  reference = vocabulary.get_vocabulary(str(sentencepiece_model), prefer_seqio=True)
  assert type(reference).__module__.startswith('seqio')
  assert reference.vocab_size == vocab.vocab_size
  for text in TEXTS:
    assert vocab.encode(text) == list(reference.encode(text)), text
  rng = np.random.RandomState(0)
  sequences = [list(rng.randint(0, 32128, size=n)) for n in (1, 5, 20, 40) for _ in range(10)]
  sequences += [[8774, 32099, 296, 32000, 32105, 1, 55], [0, 0, 8774], [], [1]]
  for ids in sequences:
    assert vocab.decode(ids) == reference.decode(ids), ids


def test_core_does_not_import_tensorflow(sentencepiece_model):
  code = ('import sys\n'
          'from prompt_recycling import checkpoints, vocabulary\n'
          f'v = vocabulary.get_vocabulary({str(sentencepiece_model)!r})\n'
          'assert type(v) is vocabulary.SentencePieceVocabulary, type(v)\n'
          'loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "seqio"))\n'
          'assert not loaded, loaded[:5]\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]


def test_missing_model_file(tmp_path):
  with pytest.raises(FileNotFoundError, match=rf'SentencePiece model {tmp_path}/none.model does not'):
    vocabulary.get_vocabulary(str(tmp_path / 'none.model'))
