"""`family_tokenizers`: real GPT-2 / RoBERTa files, and small WordPiece / SentencePiece vocabularies.

The word-level counts on the real files are recomputed independently of the
tokenizers: GPT-2's byte-to-character table and pre-tokenisation regex are
rewritten here from their published definition, and a word counts as one token
when its single pre-token `' ' + word` is an entry of vocab.json. The anchor
counts also equal those the authors' code gives (tests/testdata/optiprompt).
"""
import json

import numpy as np
import pytest
from conftest import TESTDATA, shared_path

from prompt_recycling import family_tokenizers
from prompt_recycling import vocabulary

pytest.importorskip('transformers')
regex = pytest.importorskip('regex')  # Installed with transformers.


def _words(name: str):
  # The files' lines carry leading spaces (be_ro_al) that the authors' code strips.
  with shared_path('lama', 'common_vocabs', name).open(encoding='utf-8') as f:
    return [w.strip() for w in f if w.strip()]


def _byte_chars():
  """GPT-2's reversible byte -> printable character table."""
  keep = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
          + list(range(ord('®'), ord('ÿ') + 1)))
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table


# GPT-2's pre-tokenisation (contractions, letters, digits, other, spaces).
_PRETOKEN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def _single_bpe_id(word: str, vocab: dict, table: dict):
  """vocab id of `' ' + word` when it is one pre-token and one vocabulary entry, else None."""
  text = ' ' + word
  if _PRETOKEN.findall(text) != [text]:
    return None
  return vocab.get(''.join(table[b] for b in text.encode('utf-8')))


@pytest.fixture(scope='module')
def real():
  """{family: (tokenizer, vocab.json dict)} for the real GPT-2 and RoBERTa files."""
  out = {}
  for family, directory in (('gpt2', 'gpt2'), ('roberta', 'roberta-base')):
    path = shared_path('tokenizers', directory)
    tokenizer = family_tokenizers.load_tokenizer(str(path), family)
    out[family] = tokenizer, json.loads((path / 'vocab.json').read_text(encoding='utf-8'))
  return out


def _single_token_words(tokenizer, words):
  word_ids, unk = family_tokenizers.word_ids_fn(tokenizer), family_tokenizers.unk_id(tokenizer)
  return {w: ids[0] for w in words for ids in [word_ids(w)] if len(ids) == 1 and ids[0] != unk}


@pytest.mark.parametrize('name,both,key', [
    ('common_vocab_cased_be_ro_al.txt', 17230, 'anchors_be_ro_al'),
    ('common_vocab_cased.txt', 18137, 'anchors_lama_common')], ids=['be_ro_al', 'lama_common'])
def test_single_token_words_on_real_gpt2_and_roberta(real, name, both, key):
  words = _words(name)
  table = _byte_chars()
  singles = {}
  for family, (tokenizer, vocab) in real.items():
    singles[family] = _single_token_words(tokenizer, words)
    expected = {w: i for w in words for i in [_single_bpe_id(w, vocab, table)] if i is not None}
    assert singles[family] == expected, family
  # RoBERTa re-uses GPT-2's byte-level BPE (other ids), so the same words survive.
  assert set(singles['gpt2']) == set(singles['roberta'])
  assert len(set(singles['gpt2']) & set(singles['roberta'])) == both
  # The count PTfer's get_abs_anchors gives with transformers 3.0.2 (tests/testdata/optiprompt).
  assert both == int(np.load(TESTDATA / 'optiprompt' / 'inputs_transformers_3_0_2.npz')[key])


def test_words_by_hand(real):
  gpt2, gpt2_vocab = real['gpt2']
  roberta, roberta_vocab = real['roberta']
  for tokenizer, vocab in ((gpt2, gpt2_vocab), (roberta, roberta_vocab)):
    word_ids = family_tokenizers.word_ids_fn(tokenizer)
    assert word_ids('Paris') == [vocab['ĠParis']]
    assert word_ids('Café') == [vocab['ĠCafÃ©']]  # é is bytes C3 A9 -> 'Ã©'.
    assert word_ids('10th') == [vocab['Ġ10'], vocab['th']]  # Digits and letters split.
    assert word_ids('paris') != word_ids('Paris')  # Cased.
  assert family_tokenizers.word_ids_fn(gpt2)('Paris') == [6342]
  assert family_tokenizers.word_ids_fn(roberta)('Paris') == [2201]
  # No special tokens: RoBERTa's <s> (0) and </s> (2) do not appear.
  assert family_tokenizers.unk_id(roberta) == roberta_vocab['<unk>'] == 3
  assert family_tokenizers.unk_id(gpt2) == gpt2_vocab['<|endoftext|>'] == 50256


def test_wordpiece_cased(tmp_path):
  pieces = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'Paris', 'play', '##ing', 'U', '.', 'S']
  (tmp_path / 'vocab.txt').write_text('\n'.join(pieces) + '\n')
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'do_lower_case': False}))
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
  tokenizer = family_tokenizers.load_tokenizer(str(tmp_path))  # Family from config.json.
  word_ids = family_tokenizers.word_ids_fn(tokenizer)
  assert word_ids('Paris') == [5]
  assert word_ids('playing') == [6, 7]
  assert word_ids('U.S.') == [8, 9, 10, 9]  # Punctuation is split off before WordPiece.
  assert word_ids('paris') == [1] == [family_tokenizers.unk_id(tokenizer)]


def test_sentencepiece_albert(tmp_path):
  spm = pytest.importorskip('sentencepiece')
  words = _words('common_vocab_cased_be_ro_al.txt')[:3000]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(w.lower() for w in words), model_prefix=str(tmp_path / 'spiece'),
      vocab_size=400, model_type='unigram', pad_id=0, unk_id=1, bos_id=2, eos_id=3,
      bos_piece='[CLS]', eos_piece='[SEP]', control_symbols=['[MASK]'], minloglevel=2)
  tokenizer = family_tokenizers.load_tokenizer(str(tmp_path), 'albert')
  processor = spm.SentencePieceProcessor(model_file=str(tmp_path / 'spiece.model'))
  word_ids = family_tokenizers.word_ids_fn(tokenizer)
  for word in ('Paris', 'Canada', 'football'):
    # ALBERT lowercases; SentencePiece's leading '▁' marks the word start.
    assert word_ids(word) == processor.encode(word.lower()), word
    assert processor.id_to_piece(word_ids(word)[0]).startswith('▁')
  assert family_tokenizers.unk_id(tokenizer) == 1
  assert 1 in word_ids('日本')  # Characters never seen in training are UNK.


def test_t5_vocabulary_word_ids(sentencepiece_model):
  vocab = vocabulary.get_vocabulary(str(sentencepiece_model))
  word_ids = family_tokenizers.word_ids_fn(vocab)
  ids = word_ids('Paris')
  assert len(ids) == 1 and vocab.pieces()[ids[0]] == '▁Paris'
  assert family_tokenizers.unk_id(vocab) == vocabulary.UNK_ID


def test_missing_files_are_named(tmp_path):
  with pytest.raises(ValueError, match='vocab.json \\+ merges.txt or tokenizer.json'):
    family_tokenizers.load_tokenizer(str(tmp_path), 'gpt2')
  with pytest.raises(ValueError, match="family None .* pass family="):
    family_tokenizers.load_tokenizer(str(tmp_path))
