"""recycle.py between two SentencePiece vocabularies: the T5 1.1 -> mT5 path, with stand-ins.

No mT5 files are here, so two SentencePiece unigram models of different sizes
(1,000 and 2,000 pieces, T5's layout: pad 0, EOS 1, UNK 2) are trained in
seconds on the real Wikipedia sample in ../shared/data/pretrain_corpus and
given to `recycle --source_tokenizer/--target_tokenizer` as .model files, the
way T5 1.1's and mT5's would be (both read in T5's layout, `vocabulary.py`,
so each also holds the 100 sentinels <extra_id_N>, which pair with each other). Each side is a HF T5 directory
(`save_pretrained`) whose table is the vocabulary plus T5's 100 sentinels,
rounded up to a multiple of 128 rows (as T5 1.1's 32,128 and mT5's 250,112).
As in recycle_cross_family_test, the source table is made from the target's
through a fixed linear map on the rows of words both vocabularies hold as one
piece; a prompt of source word rows must come back as exactly the target rows
of the same words. The anchor pairs are recomputed with `sentencepiece`
directly (not the project's vocabulary wrapper).
"""
import gzip
import io
import itertools
import json

import numpy as np
import pytest
from conftest import shared_path

from prompt_recycling import recycle

spm = pytest.importorskip('sentencepiece')
torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

SIZES = {'source': 1000, 'target': 2000}


def _train(sentences, size):
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=size,
      model_type='unigram', pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
      num_threads=1, minloglevel=2)
  return model.getvalue()


def _rows(size):
  return -(-(size + 100) // 128) * 128  # Pieces + 100 sentinels, padded to 128.


def _one_piece_words(processor):
  """{word: id} of the words ' ' + word encodes to as one non-UNK piece."""
  out = {}
  for i in range(processor.get_piece_size()):
    piece = processor.id_to_piece(i)
    if piece.startswith('\u2581') and len(piece) > 1 and not processor.is_control(i):
      word = piece[1:]
      ids = processor.encode(' ' + word)
      if len(ids) == 1 and ids[0] != processor.unk_id():
        out[word] = ids[0]
  return out


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('sp')
  with gzip.open(shared_path('pretrain_corpus', 'enwiki_wikiextractor_sample.jsonl.gz'), 'rt') as f:
    texts = [json.loads(line)['text'] for line in itertools.islice(f, 1000)]
  sentences = [line for text in texts for line in text.split('\n') if len(line) > 20][:6000]
  processors = {}
  for side, size in SIZES.items():
    (root / f'{side}.model').write_bytes(_train(sentences, size))
    processors[side] = spm.SentencePieceProcessor(model_file=str(root / f'{side}.model'))
  source_words, target_words = (_one_piece_words(processors[s]) for s in ('source', 'target'))
  common = sorted(set(source_words) & set(target_words))
  rng = np.random.default_rng(0)
  target = rng.normal(size=(_rows(SIZES['target']), 8)).astype(np.float32)
  source = rng.normal(size=(_rows(SIZES['source']), 8)).astype(np.float32)
  linear = rng.normal(size=(8, 8)).astype(np.float32)
  for word in common:
    source[source_words[word]] = target[target_words[word]] @ linear
  for i in range(100):  # <extra_id_i>: a piece of both T5 layouts, so an anchor word too.
    source[SIZES['source'] + 99 - i] = target[SIZES['target'] + 99 - i] @ linear
  for side, table in (('source', source), ('target', target)):
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=table.shape[0], d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
        feed_forward_proj='gated-gelu', tie_word_embeddings=False))
    with torch.no_grad():
      model.shared.weight.copy_(torch.from_numpy(table))
    model.save_pretrained(root / side)
  words = [w for w in common if len(w) > 3][:6]
  np.save(root / 'prompt.npy', np.stack([source[source_words[w]] for w in words]))
  expected = np.stack([target[target_words[w]] for w in words])
  return root, common, expected


def test_two_sentencepiece_vocabularies_pair_the_rows_of_the_same_words(setup, tmp_path):
  root, common, expected = setup
  assert _rows(SIZES['source']) != _rows(SIZES['target'])  # 1,152 and 2,176 rows.
  result = recycle.recycle(
      str(root / 'source'), str(root / 'target'), str(root / 'prompt.npy'), 'v2v-lin',
      str(tmp_path / 'out.npy'), source_tokenizers=str(root / 'source.model'),
      target_tokenizer=str(root / 'target.model'))
  # The default pairing ('words:pieces') keeps exactly the words one piece on both sides, and
  # the 100 sentinels both T5 layouts append (as T5 1.1 and mT5 share <extra_id_0..99>).
  assert result['num_anchors'] == len(common) + 100 and len(common) > 200
  # float32 least squares over ~600 pairs: within 5e-3 of rows of size ~1 (a wrong pairing is
  # off by about 1).
  np.testing.assert_allclose(np.load(tmp_path / 'out.npy'), expected, rtol=0, atol=5e-3)


def test_without_the_tokenizers_the_tables_are_refused(setup, tmp_path):
  root, _, _ = setup
  with pytest.raises(ValueError, match=r'1152 \(.*source\) and 2176 \(.*target\) rows'):
    recycle.recycle(str(root / 'source'), str(root / 'target'), str(root / 'prompt.npy'),
                    'v2v-lin', str(tmp_path / 'out.npy'))
