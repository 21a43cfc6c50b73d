"""recycle.py across model families: RoBERTa -> GPT-2 rows paired through anchor words.

The two tables are written as Hugging Face checkpoints (random-init small
models, the real vocabulary sizes 50,265 and 50,257) and the real tokenizer
files are used. The source table is built from the target's, word by word,
through a fixed linear map: for every word that is one `Ġword` entry of both
vocab.json files, source[roberta id] = target[gpt2 id] @ A. A linear recycler
fit on correctly paired rows then maps a prompt made of source word rows back
onto exactly the target rows of the same words; pairing by raw id would not.
"""
import json

import numpy as np
import pytest
from conftest import shared_path

from prompt_recycling import recycle

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

WORDS = ['house', 'music', 'water', 'city', 'river']


def _vocab(name):
  with shared_path('tokenizers', name, 'vocab.json').open(encoding='utf-8') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp('cross')
  roberta_vocab, gpt2_vocab = _vocab('roberta-base'), _vocab('gpt2')
  common = sorted(p for p in gpt2_vocab if p.startswith('\u0120') and p in roberta_vocab)
  rng = np.random.default_rng(0)
  target = rng.normal(size=(len(gpt2_vocab), 8)).astype(np.float32)
  linear = rng.normal(size=(8, 8)).astype(np.float32)
  source = rng.normal(size=(len(roberta_vocab), 8)).astype(np.float32)
  for piece in common:
    source[roberta_vocab[piece]] = target[gpt2_vocab[piece]] @ linear
  gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=len(gpt2_vocab), n_embd=8, n_layer=1, n_head=2, n_positions=16))
  roberta = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
      vocab_size=len(roberta_vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=16, max_position_embeddings=20))
  with torch.no_grad():
    gpt2.transformer.wte.weight.copy_(torch.from_numpy(target))
    roberta.roberta.embeddings.word_embeddings.weight.copy_(torch.from_numpy(source))
  gpt2.save_pretrained(root / 'gpt2')
  roberta.save_pretrained(root / 'roberta')
  prompt = np.stack([source[roberta_vocab['\u0120' + w]] for w in WORDS])
  np.save(root / 'prompt.npy', prompt)
  expected = np.stack([target[gpt2_vocab['\u0120' + w]] for w in WORDS])
  return root, expected


@pytest.mark.parametrize('vocabulary', ['words:pieces', 'auto', 'words'])
def test_roberta_to_gpt2_through_anchor_words(models, tmp_path, vocabulary):
  root, expected = models
  if vocabulary == 'words':
    vocabulary = 'words:' + str(shared_path('lama', 'common_vocabs', 'common_vocab_cased_be_ro_al.txt'))
  result = recycle.recycle(
      str(root / 'roberta'), str(root / 'gpt2'), str(root / 'prompt.npy'), 'v2v-lin',
      str(tmp_path / 'out.npy'), vocabulary=vocabulary,
      source_tokenizers=str(shared_path('tokenizers', 'roberta-base')),
      target_tokenizer=str(shared_path('tokenizers', 'gpt2')))
  assert result['shape'] == [len(WORDS), 8] and result['num_anchors'] > 1000
  np.testing.assert_allclose(np.load(tmp_path / 'out.npy'), expected, rtol=0, atol=1e-3)


def test_different_vocabularies_without_tokenizers_are_refused(models, tmp_path):
  root, _ = models
  with pytest.raises(ValueError, match=r'50265 \(.*roberta\) and 50257 \(.*gpt2\) rows.*tokenizer'):
    recycle.recycle(str(root / 'roberta'), str(root / 'gpt2'), str(root / 'prompt.npy'),
                    'v2v-lin', str(tmp_path / 'out.npy'))
  assert not (tmp_path / 'out.npy').exists()


def test_id_specs_are_refused_across_tokenizers(models, tmp_path):
  root, _ = models
  with pytest.raises(ValueError, match=r"'first:100' names token ids of one vocabulary.*words:"):
    recycle.recycle(str(root / 'roberta'), str(root / 'gpt2'), str(root / 'prompt.npy'),
                    'v2v-lin', str(tmp_path / 'out.npy'), vocabulary='first:100',
                    source_tokenizers=str(shared_path('tokenizers', 'roberta-base')),
                    target_tokenizer=str(shared_path('tokenizers', 'gpt2')))
  with pytest.raises(ValueError, match='needs every model.s tokenizer'):
    recycle.recycle(str(root / 'roberta'), str(root / 'gpt2'), str(root / 'prompt.npy'),
                    'v2v-lin', str(tmp_path / 'out.npy'),
                    target_tokenizer=str(shared_path('tokenizers', 'gpt2')))
