"""`optiprompt`: LAMA facts -> OptiPrompt inputs for each family, and P@1, on the real files.

Token ids are checked against the authors' pipelines run with the
transformers 3.0.2 they pinned (tests/testdata/optiprompt, RoBERTa and GPT-2 on
75 real facts), by hand against the real vocab.json files, and on small
WordPiece / SentencePiece vocabularies (BERT, ALBERT); the
filter against an independent count; P@1 against a loop; and a tiny random
RoBERTa and GPT-2 give the same target logits for a query alone or padded in
a batch.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TESTDATA, shared_path

from prompt_recycling import family_tokenizers
from prompt_recycling import optiprompt
from prompt_recycling.models import encoder
from prompt_recycling.models import gpt2

pytest.importorskip('transformers')

FACT = optiprompt.Fact('Simcoe Composite School', 'Canada')  # trex_original/P17/test.jsonl row 2.


def _vocab():
  return optiprompt.read_vocab(shared_path('lama', 'common_vocabs', 'common_vocab_cased_be_ro_al.txt'))


@pytest.fixture(scope='module')
def real():
  out = {}
  for family, directory in (('gpt2', 'gpt2'), ('roberta', 'roberta-base')):
    path = shared_path('tokenizers', directory)
    out[family] = (family_tokenizers.load_tokenizer(str(path), family),
                   json.loads((path / 'vocab.json').read_text(encoding='utf-8')))
  return out


def test_read_and_filter_real_facts():
  vocab = _vocab()
  facts = optiprompt.read_facts(shared_path('lama', 'trex_original', 'P1376', 'test.jsonl'))
  assert facts[1] == optiprompt.Fact('Ankara', 'Turkey')  # Hand-read from the file.
  kept = optiprompt.filter_facts(facts, vocab)
  # Independent: first occurrences of distinct pairs with the object in the word set.
  words, expected = set(vocab), []
  for fact in facts:
    if fact not in expected and fact.object in words:
      expected.append(fact)
  assert kept == expected
  assert (len(facts), len(set(facts)), len(kept)) == (234, 233, 178)
  assert kept.count(optiprompt.Fact('London', 'England')) == 1  # Twice in the file.
  # ParaRel's LAMA rows use sub_label / obj_label.
  pararel = optiprompt.read_facts(shared_path('lama', 'trex_lms_vocab_pararel', 'P1376.jsonl'))
  assert len(pararel) == 179 and len(optiprompt.filter_facts(pararel, vocab)) == 178


def test_roberta_query(real):
  tokenizer, v = real['roberta']
  query = optiprompt.build_query(FACT, 'roberta', tokenizer)
  unk = v['<unk>']
  # The subject opens the text: 'Sim', not 'ĠSim'; the stop after <mask> is 'Ġ.'.
  assert query.tokens == ([v['<s>'], v['Sim'], v['coe'], v['ĠComposite'], v['ĠSchool']]
                          + [unk] * 5 + [v['<mask>'], v['Ġ.'], v['</s>']])
  assert query.prompt_positions == [5, 6, 7, 8, 9]
  assert query.target_position == 10 and query.tokens[10] == tokenizer.mask_token_id == 50264
  assert query.label == v['ĠCanada']


def test_gpt2_query(real):
  tokenizer, v = real['gpt2']
  query = optiprompt.build_query(FACT, 'gpt2', tokenizer, num_vectors=3)
  assert query.tokens == [v['Sim'], v['coe'], v['ĠComposite'], v['ĠSchool']] + [50256] * 3
  assert query.prompt_positions == [4, 5, 6]
  assert query.target_position == 6  # The last [V] predicts the object.
  assert query.label == v['ĠCanada']


def test_bert_query_word_by_word(tmp_path):
  pieces = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'Sim', '##co', '##e', 'Composite',
            'School', '.', 'Canada']
  (tmp_path / 'vocab.txt').write_text('\n'.join(pieces) + '\n')
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'do_lower_case': False}))
  tokenizer = family_tokenizers.load_tokenizer(str(tmp_path), 'bert')
  query = optiprompt.build_query(FACT, 'bert', tokenizer)
  assert query.tokens == [2, 5, 6, 7, 8, 9] + [1] * 5 + [4, 10, 3]
  assert query.prompt_positions == [6, 7, 8, 9, 10] and query.target_position == 11
  assert query.label == 11
  with pytest.raises(ValueError, match="Object 'Canadian' is 1 tokens \\[1\\]"):
    optiprompt.build_query(optiprompt.Fact('Simcoe', 'Canadian'), 'bert', tokenizer)


def test_albert_query(tmp_path):
  spm = pytest.importorskip('sentencepiece')
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(w.lower() for w in _vocab()[:3000] + ['canada', 'school']),
      model_prefix=str(tmp_path / 'spiece'), vocab_size=400, model_type='unigram', pad_id=0,
      unk_id=1, bos_id=2, eos_id=3, bos_piece='[CLS]', eos_piece='[SEP]',
      user_defined_symbols=['[MASK]'], minloglevel=2)
  tokenizer = family_tokenizers.load_tokenizer(str(tmp_path), 'albert')
  processor = spm.SentencePieceProcessor(model_file=str(tmp_path / 'spiece.model'))
  label = family_tokenizers.word_ids_fn(tokenizer)('Canada')
  if len(label) != 1:
    with pytest.raises(ValueError, match='OptiPrompt keeps single-token objects'):
      optiprompt.build_query(FACT, 'albert', tokenizer)
    fact = optiprompt.Fact(FACT.subject, 'a')  # A one-piece object of any vocabulary.
  else:
    fact = FACT
  query = optiprompt.build_query(fact, 'albert', tokenizer)
  words = [i for w in fact.subject.split() for i in processor.encode(w.lower())]
  mask = processor.piece_to_id('[MASK]')
  assert query.tokens == [2] + words + [1] * 5 + [mask] + processor.encode('.') + [3]
  assert query.target_position == 1 + len(words) + 5


def test_candidates_and_precision(real):
  tokenizer, v = real['gpt2']
  vocab = ['Canada', 'France', '10th', 'Paris']
  candidates = optiprompt.candidate_ids(vocab, tokenizer, 'gpt2')
  assert candidates.tolist() == [v['ĠCanada'], v['ĠFrance'], v['ĠParis']]  # '10th' is 2 tokens.
  rng = np.random.RandomState(0)
  logits = rng.normal(size=(6, 4, 50257)).astype(np.float32)
  targets = rng.randint(0, 4, size=6)
  labels = candidates[rng.randint(0, 3, size=6)]
  logits[np.arange(6), targets, 50256] = 100.0  # Not a candidate: never predicted.
  logits[0, targets[0], labels[0]] = 50.0  # Row 0 is right.
  got = optiprompt.correct_at_1(logits, targets, labels, candidates)
  expected = []
  for i in range(6):
    scores = {c: logits[i, targets[i], c] for c in candidates}
    expected.append(max(scores, key=scores.get) == labels[i])
  assert got.tolist() == expected and got[0]
  assert optiprompt.macro_precision({'P1': [True, False], 'P2': [True]}) == pytest.approx(0.75)


def _models(real):
  """Tiny random RoBERTa and GPT-2 over the real vocabulary sizes."""
  roberta = encoder.EncoderConfig(vocab_size=50265, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=8,
                                  num_layers=2, max_positions=40, type_vocab_size=1, pad_id=1,
                                  positions_from_padding=True, layer_norm_epsilon=1e-5)
  small = gpt2.GPT2Config(vocab_size=50257, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=8,
                          num_layers=2, max_positions=40)
  return {'roberta': (encoder.Encoder(roberta), real['roberta'][0].pad_token_id),
          'gpt2': (gpt2.GPT2(small), 50256)}


@pytest.mark.parametrize('family', ['roberta', 'gpt2'])
def test_padded_batch_gives_each_query_its_own_logits(real, family):
  tokenizer = real[family][0]
  facts = optiprompt.filter_facts(
      optiprompt.read_facts(shared_path('lama', 'trex_original', 'P17', 'test.jsonl')), _vocab())[:4]
  queries = sorted((optiprompt.build_query(f, family, tokenizer) for f in facts),
                   key=lambda q: len(q.tokens))
  queries = [queries[0], queries[-1]]  # Real subjects of different lengths; one gets padded.
  assert len(queries[0].tokens) < len(queries[1].tokens)
  module, pad_id = _models(real)[family]
  params = jax.jit(module.init)(jax.random.key(0), jnp.ones((1, 4), jnp.int32))['params']
  # Kernels and tables well above their 0.02 init, so that logits vary by more than rounding.
  params = jax.tree.map(lambda x: x * 25.0 if x.ndim == 2 else x, params)
  prompt = jax.random.normal(jax.random.key(1), (len(queries), 5, 8))

  @jax.jit
  def target_logits(b, prompt):
    extra = {'mask': b['mask']} if family == 'gpt2' else {}
    logits = module.apply({'params': params}, b['tokens'], **extra, prompt=prompt,
                          prompt_positions=b['prompt_positions'])
    return logits[jnp.arange(logits.shape[0]), b['target_positions']]  # [batch, vocab]

  b = optiprompt.batch(queries, pad_id)
  together = target_logits(b, prompt)
  for i, q in enumerate(queries):
    alone = target_logits(optiprompt.batch([q], pad_id), prompt[i:i + 1])
    np.testing.assert_allclose(together[i], alone[0], rtol=0, atol=1e-5)
  # The prompt is read: another prompt changes the target logits (a constant shift would not:
  # layer norms remove it).
  other = target_logits(b, jax.random.normal(jax.random.key(2), prompt.shape))
  assert np.abs(np.asarray(other - together)).max() > 1e-3


@pytest.mark.parametrize('family', ['roberta', 'gpt2'])
@pytest.mark.parametrize('relation', ['P17', 'P19', 'P1376'])
def test_queries_equal_the_authors_pipeline(real, family, relation):
  """Ids equal those of OptiPrompt / PTfer under transformers 3.0.2 (tests/testdata/optiprompt)."""
  ref = np.load(TESTDATA / 'optiprompt' / 'inputs_transformers_3_0_2.npz')
  tokenizer = real[family][0]
  facts = [optiprompt.Fact(str(s), str(o))
           for s, o in zip(ref[f'{relation}_subjects'], ref[f'{relation}_objects'])]
  # The same facts survive our filter, in the same order.
  ours_facts = optiprompt.filter_facts(
      optiprompt.read_facts(shared_path('lama', 'trex_original', relation, 'test.jsonl')),
      _vocab())[:25]
  assert ours_facts == facts
  v_ids = ref[f'v_ids_{family}'].tolist()
  for fact, row, label in zip(facts, ref[f'{family}_{relation}_tokens'],
                              ref[f'{family}_{relation}_labels']):
    expected = [int(i) for i in row if i >= 0]
    query = optiprompt.build_query(fact, family, tokenizer)
    assert [expected.index(v) for v in v_ids] == query.prompt_positions, fact
    slots = set(query.prompt_positions)
    assert [t for i, t in enumerate(expected) if i not in slots] == [
        t for i, t in enumerate(query.tokens) if i not in slots], fact
    assert query.label == label, fact

