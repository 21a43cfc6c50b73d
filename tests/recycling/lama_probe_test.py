"""LAMA P@1 (OptiPrompt's protocol, for T5) on the real tiny T5 checkpoint and the real LAMA files."""
import json

import jax
import numpy as np
import pytest
from conftest import shared_path

from prompt_recycling import lama_probe
from prompt_recycling.models import t5

TEMPLATE = '[X] was born in [Y] .'


@pytest.fixture(scope='module')
def setup(tiny_frozen, t5_vocab):
  config, frozen = tiny_frozen
  words = ['Paris', 'London', 'Rome', 'Florence', 'Vienna', 'Berlin', 'Tokyo', 'Madrid']
  kept, ids = lama_probe.candidates(words, t5_vocab)
  return t5.T5(config), frozen, kept, ids


def test_load_facts_dedupes_and_keeps_common_vocab_objects(tmp_path):
  path = tmp_path / 'test.jsonl'
  rows = [{'sub': 'A', 'obj': 'Paris'}, {'sub': 'A', 'obj': 'Paris'}, {'sub': 'B', 'obj': 'Xyzzy'},
          {'sub_label': 'C', 'obj_label': 'Rome'}, {'sub': 'A', 'obj': 'Rome'}]
  path.write_text('\n'.join(json.dumps(r) for r in rows))
  assert lama_probe.load_facts(str(path), {'Paris', 'Rome'}) == [
      ('A', 'Paris'), ('C', 'Rome'), ('A', 'Rome')]


def test_real_lama_files_and_candidates(t5_vocab):
  facts, templates, words = lama_probe.load_lama(str(shared_path('lama')), relations=['P19'])
  assert templates['P19'] == TEMPLATE and len(words) == 21018
  assert facts['P19'][:2] == [('Allan Peiper', 'Alexandra'), ('Anthony Barber', 'Doncaster')]
  kept, ids = lama_probe.candidates(words, t5_vocab)
  assert 10000 < len(kept) < len(words) and t5_vocab.encode(' Paris') == [ids[kept.index('Paris')]]


def test_soft_prompt_in_the_slot_equals_the_manual_template(setup, t5_vocab):
  # The template's middle tokens ('was born in') as a soft prompt between subject and blank
  # reproduce the manual template's logits: the prompt goes where OptiPrompt puts it.
  model, frozen, kept, ids = setup
  facts = [('Dante', 'Florence'), ('Mozart', 'Vienna')]
  index = {w: i for i, w in enumerate(kept)}
  manual = lama_probe.make_batch(facts, t5_vocab, index, 24, template=TEMPLATE)
  middle = t5_vocab.encode('was born in')
  prompt = np.asarray(frozen['token_embedder']['embedding'])[middle]
  soft = lama_probe.make_batch(facts, t5_vocab, index, 24, prompt_length=len(middle))
  np.testing.assert_array_equal(soft['slot'], [len(t5_vocab.encode(s)) for s, _ in facts])
  a = lama_probe.candidate_logits(model, frozen, manual['tokens'], manual['slot'], None, ids)
  b = lama_probe.candidate_logits(model, frozen, soft['tokens'], soft['slot'], prompt, ids)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  other = lama_probe.candidate_logits(model, frozen, soft['tokens'], soft['slot'], prompt + 1.0, ids)
  assert not np.allclose(a, other, atol=1e-3)


def test_one_pass_ranks_as_scoring_each_candidate(setup, t5_vocab):
  # Reference: a separate pass per candidate, log-likelihood of the target '<extra_id_0> cand'.
  model, frozen, kept, ids = setup
  index = {w: i for i, w in enumerate(kept)}
  batch = lama_probe.make_batch([('Dante', 'Florence')], t5_vocab, index, 24, template=TEMPLATE)
  # Teacher forcing: every candidate's pass has the same decoder input [<pad>, <extra_id_0>].
  logits = jax.jit(model.apply)({'params': frozen}, batch['tokens'], np.array([[0, 32099]]))
  log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
  scores = [float(log_probs[0, 0, 32099] + log_probs[0, 1, cid]) for cid in ids]
  one_pass = lama_probe.candidate_logits(model, frozen, batch['tokens'], batch['slot'], None, ids)
  assert int(np.argmax(one_pass[0])) == int(np.argmax(scores))
  np.testing.assert_allclose(np.asarray(one_pass[0]) - np.asarray(one_pass[0]).max(),
                             np.array(scores) - max(scores), atol=1e-4)


def test_precision_at_1_batches_like_fact_by_fact(setup, t5_vocab):
  model, frozen, kept, ids = setup
  facts = {'P19': [('Dante', 'Florence'), ('Mozart', 'Salzburg'), ('Rossini', 'Pesaro'),
                   ('Kafka', 'Prague'), ('Goya', 'Madrid')],
           'P20': [('Keats', 'Rome'), ('Marx', 'London')]}
  templates = {'P19': TEMPLATE, 'P20': '[X] died in [Y] .'}
  result = lama_probe.precision_at_1(model, frozen, t5_vocab, facts, kept, ids,
                                     templates=templates, batch_size=4, length=24)
  assert result['dropped'] == {'P19': 3, 'P20': 0}  # Salzburg, Pesaro, Prague: not candidates.
  index = {w: i for i, w in enumerate(kept)}
  expected = {}
  for relation, rel_facts in facts.items():
    hits = []
    for fact in rel_facts:
      if fact[1] in index:
        b = lama_probe.make_batch([fact], t5_vocab, index, 24, template=templates[relation])
        hits.append(lama_probe.predict(model, frozen, b['tokens'], b['slot'], None, ids)[0]
                    == b['gold'][0])
    expected[relation] = 100.0 * np.mean(hits)
  assert result['per_relation'] == pytest.approx(expected)
  assert result['p@1'] == pytest.approx(np.mean(list(expected.values())))


def test_lama_transfer_grid_on_the_tiny_model(tmp_path):
  # A -> B (v2v-lin, relative) and A + A -> B (multi-source relative), two relations; both
  # names are the real tiny checkpoint (the wiring is under test; it compiles fastest).
  from prompt_recycling import lama_transfer  # pylint: disable=g-import-not-at-top
  tiny = str(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3'))
  models = {'A': tiny, 'B': tiny}
  # A small LAMA directory: the real files' first 12 facts of two relations.
  lama = tmp_path / 'lama'
  (lama / 'common_vocabs').mkdir(parents=True)
  real = shared_path('lama')
  (lama / 'relations.jsonl').write_text((real / 'relations.jsonl').read_text())
  words = (real / 'common_vocabs' / 'common_vocab_cased.txt').read_text().splitlines()
  (lama / 'common_vocabs' / 'common_vocab_cased.txt').write_text('\n'.join(words[:3000]))
  for relation in ('P19', 'P20'):
    (lama / 'trex_original' / relation).mkdir(parents=True)
    lines = (real / 'trex_original' / relation / 'test.jsonl').read_text().splitlines()[:12]
    (lama / 'trex_original' / relation / 'test.jsonl').write_text('\n'.join(lines))
  rng = np.random.default_rng(0)
  for name in ('A', 'B'):
    (tmp_path / name).mkdir()
    for relation in ('P19', 'P20'):
      np.save(tmp_path / name / f'{relation}.npy', rng.normal(size=(5, 4)).astype(np.float32))
  rows = lama_transfer.run(
      models=models, prompt_dirs={n: str(tmp_path / n) for n in models},
      transfers=[{'sources': ['A'], 'target': 'B'}, {'sources': ['A', 'A'], 'target': 'B'}],
      recyclers={'v2v-lin': {'name': 'v2v-lin'},
                 'relative': {'name': 'relative', 'steps': 5, 'top_k': 500}},
      lama_dir=str(lama), output_dir=str(tmp_path / 'out'),
      vocabulary_path=str(shared_path('t5', 'sentencepiece.model')), batch_size=16)
  kinds = {(r['transfer'], r['recycler']) for r in rows}
  assert kinds == {('-> B', 'manual template'), ('B -> B', 'tuned on the target'),
                   ('A -> B', 'v2v-lin'), ('A -> B', 'relative'), ('A + A -> B', 'relative')}
  assert len(rows) == 2 * len(kinds) and all(0 <= r['p@1'] <= 100 for r in rows)
  assert 'A + A -> B | relative' in (tmp_path / 'out' / 'summary.md').read_text()
