"""Vocabulary selection and alignment, on the real filtered T5 vocabulary."""
import json

import numpy as np
import pytest
from conftest import shared_path

from prompt_recycling.recycling import vocab

T5_VOCAB_ROWS = 32128  # T5 1.1 embedding rows: 32,000 pieces + 100 sentinels, padded.


@pytest.fixture(scope='module')
def filtered_path():
  return shared_path('t5', 'filtered-vocab-english-only.json')


def test_load_real_filtered_vocab(filtered_path):
  ids = vocab.load_filtered_vocab(str(filtered_path))
  assert ids.shape == (16779,) and ids.dtype == np.int64
  assert (np.diff(ids) > 0).all()
  assert ids[:5].tolist() == [4, 7, 8, 9, 11]  # 'X', 's', 'the', 'a', 'and'.
  vocab.check_ids(ids, T5_VOCAB_ROWS, str(filtered_path))
  np.testing.assert_array_equal(vocab.select(str(filtered_path), T5_VOCAB_ROWS), ids)


def test_real_filtered_vocab_outside_a_smaller_table(filtered_path):
  with pytest.raises(ValueError, match=(
      rf'{filtered_path}: token id 30000 is outside the embedding table of 30000 rows '
      r'\(\d+ ids out of range, max id 31997\)')):
    vocab.select(str(filtered_path), 30000)


def test_first_n_and_all():
  np.testing.assert_array_equal(vocab.first_n(3, offset=5), [5, 6, 7])
  np.testing.assert_array_equal(vocab.select('first:3@5', 10), [5, 6, 7])
  np.testing.assert_array_equal(vocab.select('first:4', 10), [0, 1, 2, 3])
  np.testing.assert_array_equal(vocab.select('all', 4), [0, 1, 2, 3])
  with pytest.raises(ValueError, match=r'ids \[5, 15\) run past the table of 10 rows'):
    vocab.select('first:10@5', 10)
  with pytest.raises(ValueError, match="spec 'first10' is not 'filtered:PATH.json@OFFSET:NUM', 'words:PATH', 'all'"):
    vocab.select('first10', 10)


def test_check_ids_and_take():
  table = np.arange(12.0).reshape(6, 2)
  np.testing.assert_array_equal(vocab.take(table, [4, 1]), [[8, 9], [2, 3]])
  with pytest.raises(ValueError, match=r'my.json: token id -1 is outside the embedding table of 6'):
    vocab.take(table, [1, -1], 'my.json')
  with pytest.raises(ValueError, match=r'ids repeat \(1 duplicates\)'):
    vocab.check_ids([1, 1], 6)
  with pytest.raises(ValueError, match='integer ids'):
    vocab.check_ids([1.0], 6)


def test_malformed_vocab_files(tmp_path):
  path = tmp_path / 'bad.json'
  path.write_text(json.dumps({'12': 'a', 'x': 'b'}))
  with pytest.raises(ValueError, match=f'{path}: every key must be an integer token id'):
    vocab.load_filtered_vocab(str(path))
  path.write_text('[1, 2]')
  with pytest.raises(ValueError, match=f'{path} must hold a non-empty JSON object'):
    vocab.load_filtered_vocab(str(path))
  with pytest.raises(ValueError, match='Cannot read the vocabulary file'):
    vocab.load_filtered_vocab(str(tmp_path / 'missing.json'))


def test_align_by_piece():
  source = ['<pad>', 'a', 'b', 'c', 'd', 'a']
  target = ['d', 'x', 'a', 'c', 'c']
  src, tgt, coverage = vocab.align_by_piece(source, target)
  np.testing.assert_array_equal(src, [1, 3, 4])  # The second 'a' repeats the first.
  np.testing.assert_array_equal(tgt, [2, 3, 0])  # First occurrence of 'c'.
  assert coverage == pytest.approx(3 / 6)
  src, tgt, coverage = vocab.align_by_piece(source, target, source_ids=[4, 2])
  np.testing.assert_array_equal(src, [4])
  assert coverage == 0.5
  with pytest.raises(ValueError, match='No piece of the 1 source ids'):
    vocab.align_by_piece(source, target, source_ids=[2])


def test_align_real_sentencepiece_with_a_shuffled_subset(filtered_path):
  # A second "vocabulary": 90% of the real T5 pieces in shuffled order.
  spm = pytest.importorskip('sentencepiece')
  sp = spm.SentencePieceProcessor(model_file=str(shared_path('t5', 'sentencepiece.model')))
  pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
  rng = np.random.default_rng(0)
  kept = rng.permutation(len(pieces))[:int(0.9 * len(pieces))]
  other = [pieces[i] for i in kept]
  ids = vocab.load_filtered_vocab(str(filtered_path))
  src, tgt, coverage = vocab.align_by_piece(pieces, other, source_ids=ids)
  assert 0.85 < coverage < 0.95
  assert [pieces[i] for i in src] == [other[j] for j in tgt]
  np.testing.assert_array_equal(kept[tgt], src)


def test_authors_fit_set_is_positions_1000_to_5000_of_the_shipped_filter(filtered_path):
  # prompt-tuning configs/sst2.json: num_words 4000, word_offset 1000, file order.
  ids = vocab.select(vocab.LESTER_2022, T5_VOCAB_ROWS)
  with open(filtered_path) as f:
    in_file_order = [int(k) for k in json.load(f)]
  assert ids.tolist() == in_file_order[1000:5000]
  assert ids[:3].tolist() == [1494, 1499, 1500] and ids[-1] == 7991
  # The shipped copy is the release file.
  with open(vocab.ENGLISH_ONLY_PATH) as f, open(filtered_path) as g:
    assert f.read() == g.read()
  with pytest.raises(ValueError, match=r'positions \[16000, 17000\) are not inside its 16779'):
    vocab.select(f'filtered:{filtered_path}@16000:1000', T5_VOCAB_ROWS)


def test_single_token_anchors_keep_words_one_known_token_in_every_model():
  # Two toy tokenizers: model a splits 'ab' and knows no 'zz'; model b maps 'cd' to UNK.
  table_a = {' x': [5], ' ab': [6, 7], ' cd': [8], ' zz': [0], ' y': [9]}
  table_b = {' x': [15], ' ab': [16], ' cd': [3], ' zz': [17], ' y': [18]}
  words, ids = vocab.single_token_anchors(
      ['x', 'ab', 'cd', 'zz', 'y'], [table_a.__getitem__, table_b.__getitem__], [0, 3])
  assert words == ['x', 'y']
  np.testing.assert_array_equal(ids, [[5, 9], [15, 18]])
  with pytest.raises(ValueError, match='None of the 1 words is a single known token'):
    vocab.single_token_anchors(['ab'], [table_a.__getitem__], [0])


def test_words_spec_on_the_real_t5_vocabulary(sentencepiece_model):
  from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
  words_path = shared_path('lama', 'common_vocabs', vocab.WU_2024_WORDS)
  t5 = vocabulary.get_vocabulary(str(sentencepiece_model))
  ids = vocab.select(f'words:{words_path}', T5_VOCAB_ROWS, tokenizer=t5)
  # 11,609 of the 17,230 BERT/RoBERTa/ALBERT words are one T5 piece after a space.
  assert ids.shape == (11609,)
  words, _ = vocab.single_token_anchors(vocab.read_word_list(str(words_path)), [t5.encode], [2])
  assert 'Paris' in words and t5.encode(' Paris') == [int(ids[words.index('Paris')])]
  assert ids[0] == t5.encode(' ' + words[0])[0] and len(t5.encode(' ' + words[0])) == 1
  assert 2 not in ids.tolist()
  # Without a tokenizer, the shipped T5 SentencePiece model (the same vocabulary).
  np.testing.assert_array_equal(vocab.select(f'words:{words_path}', T5_VOCAB_ROWS), ids)
  # The tokenizer's own whole-word pieces: no word list needed.
  pieces = vocab.select('words:pieces', T5_VOCAB_ROWS, tokenizer=t5)
  assert pieces.size == 22084 and pieces[:4].tolist() == [8, 11, 12, 13]  # the, and, to, of.
  assert t5.encode(' the') == [8]


def test_string_spec_is_the_strings_tokens_with_repeats():
  # Wayward prompts: the recycler is fit on the instruction's own tokens, repeats included.
  from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
  t5 = vocabulary.get_vocabulary(vocab.ENGLISH_ONLY_PATH.replace(
      'filtered-vocab-english-only.json', 'sentencepiece.model'))
  text = 'Use the string ` positive ` for the positive class .'
  ids = vocab.select(f'string:{text}', T5_VOCAB_ROWS)
  assert ids.tolist() == t5.encode(text) and len(set(ids.tolist())) < ids.size
