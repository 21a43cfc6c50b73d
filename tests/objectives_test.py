"""T5's span corruption and prefix LM on known sequences and sentences; the pretraining corpus."""
import collections
import gzip
import itertools
import json

import numpy as np
import pytest

from conftest import shared_path
from prompt_recycling import objectives


def _uncorrupt(inputs, targets):
  """Puts each target span back where its sentinel stands in the inputs (EOS dropped)."""
  spans, current = {}, None
  for t in targets[:-1]:
    if t >= 32000:
      current = spans[t] = []
    else:
      current.append(t)
  out = []
  for t in inputs[:-1]:
    out.extend(spans[t] if t >= 32000 else [t])
  return out


@pytest.mark.parametrize('length', [2, 10, 50, 141, 568], ids=lambda n: f'len{n}')
@pytest.mark.parametrize('seed', [0, 1, 2], ids=lambda s: f'seed{s}')
def test_span_corruption_reassembles_and_follows_t5s_counts(length, seed):
  tokens = np.arange(100, 100 + length)
  ex = objectives.span_corruption(tokens, np.random.default_rng(seed))
  inputs, targets = list(ex['inputs']), list(ex['targets'])
  np.testing.assert_array_equal(_uncorrupt(inputs, targets), tokens)
  # T5's formulas, written out independently of the module.
  num_noise = min(max(int(round(length * 0.15)), 1), length - 1)
  num_spans = max(int(round(num_noise / 3.0)), 1)
  sentinels = [t for t in inputs if t >= 32000]
  assert sentinels == list(range(32099, 32099 - num_spans, -1))  # <extra_id_0>, <extra_id_1>, ...
  assert [t for t in targets if t >= 32000] == sentinels
  assert sum(1 for t in targets if 1 < t < 32000) == num_noise
  assert (len(inputs), len(targets)) == objectives.corrupted_lengths(length)
  # The mask starts kept and ends in noise (T5's code, not the paper's figure):
  # the inputs end with the last sentinel, the targets with the last noise token.
  assert inputs[0] == 100 and inputs[-2:] == [sentinels[-1], objectives.EOS_ID]
  assert targets[0] == 32099 and targets[-2:] == [100 + length - 1, objectives.EOS_ID]


def test_span_corruption_on_a_real_sentence(t5_vocab):
  text = 'Thank you for inviting me to your party last week.'
  tokens = np.asarray(t5_vocab.encode(text))
  ex = objectives.span_corruption(tokens, np.random.default_rng(3))
  assert t5_vocab.decode(_uncorrupt(list(ex['inputs']), list(ex['targets']))) == text
  shown_inputs, shown_targets = t5_vocab.decode(ex['inputs']), t5_vocab.decode(ex['targets'])
  assert '<extra_id_0>' in shown_inputs and shown_targets.startswith('<extra_id_0>')
  again = objectives.span_corruption(tokens, np.random.default_rng(3))
  np.testing.assert_array_equal(ex['inputs'], again['inputs'])  # Deterministic under a seed.
  np.testing.assert_array_equal(ex['targets'], again['targets'])
  other = objectives.span_corruption(np.arange(100, 300), np.random.default_rng(4))
  assert not np.array_equal(other['inputs'],
                            objectives.span_corruption(np.arange(100, 300),
                                                       np.random.default_rng(5))['inputs'])


def test_noise_masks_are_all_equally_likely():
  # 40 tokens: 6 noise tokens in 2 spans (5 ways), 34 kept in 2 spans (33 ways).
  rng = np.random.default_rng(0)
  counts = collections.Counter(
      objectives.random_spans_noise_mask(40, 0.15, 3.0, rng).tobytes() for _ in range(4000))
  assert len(counts) == 5 * 33
  assert min(counts.values()) > 5 and max(counts.values()) < 50  # Mean 24.
  for mask in map(lambda b: np.frombuffer(b, bool), counts):
    assert not mask[0] and mask[-1] and mask.sum() == 6
    assert np.sum(np.diff(mask.astype(int)) == 1) == 2


def test_noise_mask_refuses_one_token():
  with pytest.raises(ValueError, match='at least 2 tokens'):
    objectives.random_spans_noise_mask(1, 0.15, 3.0, np.random.default_rng(0))


@pytest.mark.parametrize('inputs_length, expected', [(128, (141, 29)), (512, (568, 114)),
                                                     (32, (34, 8))], ids=['128', '512', '32'])
def test_chunk_length_fits_the_inputs_exactly(inputs_length, expected):
  assert objectives.chunk_length_for(inputs_length) == expected  # 512: T5's own numbers.
  assert objectives.corrupted_lengths(expected[0])[0] == inputs_length
  assert objectives.corrupted_lengths(expected[0] + 1)[0] > inputs_length


def test_prefix_lm_reassembles_and_splits_uniformly():
  tokens = np.arange(5, 15)
  splits = set()
  for seed in range(200):
    ex = objectives.prefix_lm(tokens, np.random.default_rng(seed))
    assert ex['inputs'][-1] == ex['targets'][-1] == objectives.EOS_ID
    np.testing.assert_array_equal(np.concatenate([ex['inputs'][:-1], ex['targets'][:-1]]), tokens)
    splits.add(len(ex['inputs']) - 1)
  assert splits == set(range(1, 10))  # Every split from 1 to length - 1 occurs.


def test_examples_resume_exactly_and_objectives_draw_independently():
  rows = np.arange(60 * 20).reshape(60, 20) + 100
  full = list(itertools.islice(objectives.examples(rows, 'span_corruption', seed=4), 130))
  resumed = objectives.examples(rows, 'span_corruption', seed=4, start=70)  # Crosses an epoch.
  for want in full[70:]:
    got = next(resumed)
    np.testing.assert_array_equal(want['inputs'], got['inputs'])
    np.testing.assert_array_equal(want['targets'], got['targets'])
  lm = list(itertools.islice(objectives.examples(rows, 'prefix_lm', seed=4), 60))
  first_tokens = lambda exs: [int(e['inputs'][0]) for e in exs]
  assert sorted(first_tokens(lm)) == sorted(first_tokens(full[:60]))  # One epoch each...
  assert first_tokens(lm) != first_tokens(full[:60])  # ...in different orders.
  with pytest.raises(ValueError, match='Unknown objective'):
    next(objectives.examples(rows, 'mlm', seed=0))


def _write_jsonl(path, texts):
  with gzip.open(path, 'wt') as f:
    for text in texts:
      f.write(json.dumps({'text': text}) + '\n')


def test_corpus_drops_short_pages_keeps_sentences_and_caps(tmp_path, t5_vocab):
  wiki = tmp_path / 'wiki_train.jsonl.gz'
  _write_jsonl(wiki, ['Stub.', 'A long article. ' * 30, '   ', 'Another long one here. ' * 20])
  sst = tmp_path / 'train.tsv'
  sst.write_text('sentence\tlabel\ncontains no wit \t0\n\t1\ngreat fun \t1\n')
  docs = list(objectives.read_documents([str(wiki), str(sst)]))
  assert docs == [('A long article. ' * 30).strip(), ('Another long one here. ' * 20).strip(),
                  'contains no wit', 'great fun']
  stream = objectives.token_stream(docs, t5_vocab)
  assert stream.dtype == np.uint16 and (stream == objectives.EOS_ID).sum() == 4  # EOS per document.
  assert (objectives.token_stream(docs, t5_vocab, max_documents=1) == 1).sum() == 1
  capped = objectives.token_stream(docs, t5_vocab, max_tokens=5)
  assert len(capped) == len(t5_vocab.encode(docs[0])) + 1  # Stops after the first document.
  rows = objectives.chunks(stream, 16)
  assert rows.shape == (len(stream) // 16, 16)
  with pytest.raises(ValueError, match='fewer than one chunk'):
    objectives.chunks(stream[:10], 16)


def test_corpus_refuses_eval_splits_before_reading(tmp_path):
  train = tmp_path / 'train.jsonl.gz'
  _write_jsonl(train, ['x' * 300])
  for name in ['dev.tsv', 'test.jsonl.gz', 'validation.jsonl', 'sst2_val.tsv']:
    with pytest.raises(ValueError, match='evaluation split'):
      next(objectives.read_documents([str(train), str(tmp_path / name)]))  # Absent, never opened.


def test_token_stream_cache(tmp_path, t5_vocab):
  wiki = tmp_path / 'train.jsonl.gz'
  _write_jsonl(wiki, ['Some words about something. ' * 10] * 3)
  first = objectives.cached_token_stream([str(wiki)], t5_vocab, str(tmp_path / 'cache'))
  files = list((tmp_path / 'cache').glob('*.npy'))
  assert len(files) == 1 and not list((tmp_path / 'cache').glob('*.tmp*'))
  wiki.unlink()  # A cache hit reads nothing else.
  np.testing.assert_array_equal(
      objectives.cached_token_stream([str(wiki)], t5_vocab, str(tmp_path / 'cache')), first)
  with pytest.raises(FileNotFoundError):  # Another cap is another stream.
    objectives.cached_token_stream([str(wiki)], t5_vocab, str(tmp_path / 'cache'), max_documents=1)


def test_real_corpus_files(t5_vocab):
  wiki = shared_path('pretrain_corpus', 'enwiki_wikiextractor_sample.jsonl.gz')
  with gzip.open(wiki, 'rt') as f:  # The first 1,000 raw lines: most are near-empty.
    raw = [json.loads(line)['text'] for line in itertools.islice(f, 1000)]
  kept = [t.strip() for t in raw if len(t.strip()) >= 200]
  assert 0.1 < len(kept) / len(raw) < 0.6
  docs = list(itertools.islice(objectives.read_documents([str(wiki)]), len(kept)))
  assert docs == kept
  stream = objectives.token_stream(docs[:50], t5_vocab)
  rows = objectives.chunks(stream, 141)
  assert rows.shape[1] == 141 and rows.max() < 32000 and len(rows) > 20
  train_files = [shared_path('imdb', 'train.jsonl.gz'), shared_path('sst2', 'train.tsv')]
  for path in train_files:
    assert len(list(itertools.islice(objectives.read_documents([str(path)]), 5))) == 5
  for path in [shared_path('imdb', 'test.jsonl.gz'), shared_path('sst2', 'dev.tsv')]:
    with pytest.raises(ValueError, match='evaluation split'):
      next(objectives.read_documents([str(path)]))
