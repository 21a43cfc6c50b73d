"""T5's span corruption and prefix LM on known sentences; the pretraining corpus and command."""
import gzip
import itertools
import json
import os
import subprocess
import sys

import jax

import numpy as np
import pytest

from conftest import REPO, shared_path
from prompt_recycling import checkpoints
from prompt_recycling import data
from prompt_recycling import objectives
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling.models import t5


def _uncorrupt(inputs, targets):
  """Puts each target span back where its sentinel stands in the inputs."""
  spans, current = {}, None
  for t in targets[:-1]:  # Drop EOS.
    if t >= 32000:
      current = t
      spans[current] = []
    else:
      spans[current].append(t)
  out = []
  for t in inputs[:-1]:
    out.extend(spans[t] if t >= 32000 else [t])
  return out


@pytest.mark.parametrize('length', [10, 50, 141, 568], ids=lambda n: f'len{n}')
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_span_corruption_reassembles_and_follows_t5s_counts(length, seed):
  tokens = np.arange(100, 100 + length)
  ex = objectives.span_corruption(tokens, np.random.default_rng(seed))
  inputs, targets = list(ex['inputs']), list(ex['targets'])
  assert inputs[-1] == targets[-1] == objectives.EOS_ID
  np.testing.assert_array_equal(_uncorrupt(inputs, targets), tokens)
  num_noise = int(np.clip(round(length * 0.15), 1, length - 1))
  num_spans = max(int(round(num_noise / 3.0)), 1)
  sentinels = [t for t in inputs if t >= 32000]
  assert sentinels == list(range(32099, 32099 - num_spans, -1))  # <extra_id_0>, <extra_id_1>, ...
  assert [t for t in targets if t >= 32000] == sentinels
  assert sum(1 for t in targets if 1 < t < 32000) == num_noise
  assert (len(inputs), len(targets)) == objectives.corrupted_lengths(length)
  assert targets[0] == 32099  # The target starts with the first sentinel.


def test_span_corruption_on_a_real_sentence(t5_vocab):
  text = 'Thank you for inviting me to your party last week.'
  tokens = np.asarray(t5_vocab.encode(text))
  ex = objectives.span_corruption(tokens, np.random.default_rng(3))
  assert t5_vocab.decode(_uncorrupt(list(ex['inputs']), list(ex['targets']))) == text
  shown = t5_vocab.decode(list(ex['inputs']))
  assert '<extra_id_0>' in shown and len(shown) < len(text) + 12
  again = objectives.span_corruption(tokens, np.random.default_rng(3))
  np.testing.assert_array_equal(ex['inputs'], again['inputs'])  # Deterministic under a seed.


def test_noise_mask_starts_kept_and_ends_noisy():
  for seed in range(20):
    mask = objectives.random_spans_noise_mask(40, 0.15, 3.0, np.random.default_rng(seed))
    assert not mask[0] and mask[-1] and mask.sum() == 6
    assert np.sum(np.diff(mask.astype(int)) == 1) == 2  # Two noise spans.


def test_chunk_length_fits_the_inputs_exactly():
  assert objectives.chunk_length_for(128) == (141, 29)
  assert objectives.chunk_length_for(512) == (568, 114)  # T5's numbers for 512 inputs.


def test_prefix_lm_reassembles():
  tokens = np.arange(5, 25)
  for seed in range(5):
    ex = objectives.prefix_lm(tokens, np.random.default_rng(seed))
    assert ex['inputs'][-1] == ex['targets'][-1] == 1
    np.testing.assert_array_equal(np.concatenate([ex['inputs'][:-1], ex['targets'][:-1]]), tokens)
    assert len(ex['inputs']) > 1 and len(ex['targets']) > 1


def test_examples_resume_exactly():
  chunks = np.arange(60 * 20).reshape(60, 20) + 100
  full = objectives.examples(chunks, 'span_corruption', seed=4)
  seen = [next(full) for _ in range(90)]
  resumed = objectives.examples(chunks, 'span_corruption', seed=4, start=70)
  for want in seen[70:]:
    got = next(resumed)
    np.testing.assert_array_equal(want['inputs'], got['inputs'])
    np.testing.assert_array_equal(want['targets'], got['targets'])


def test_corpus_drops_short_pages_and_refuses_eval_splits(tmp_path, t5_vocab):
  path = tmp_path / 'train.jsonl.gz'
  with gzip.open(path, 'wt') as f:
    for text in ['Stub.', 'A long article. ' * 30, '', 'Another long one here. ' * 20]:
      f.write(json.dumps({'text': text}) + '\n')
  docs = list(objectives.read_documents([str(path)]))
  assert len(docs) == 2 and docs[0].startswith('A long article.')
  chunks = objectives.tokenized_chunks(docs, t5_vocab, 16)
  assert chunks.shape[1] == 16 and (chunks == 1).sum() >= 1  # EOS between documents.
  with pytest.raises(ValueError, match='evaluation split'):
    list(objectives.read_documents([str(tmp_path / 'dev.tsv')]))


def test_real_corpus_sample(t5_vocab):
  corpus = shared_path('pretrain_corpus', 'enwiki_wikiextractor_sample.jsonl.gz')
  docs = []
  for doc in objectives.read_documents([str(corpus)]):
    docs.append(doc)
    if len(docs) == 50:
      break
  assert all(len(d) >= 200 for d in docs)
  chunks = objectives.tokenized_chunks(docs, t5_vocab, 141)
  assert chunks.ndim == 2 and chunks.shape[1] == 141 and chunks.max() < 32000


def test_pretrain_command_lowers_the_loss_and_exports_t5x(tmp_path, t5_vocab):
  corpus = shared_path('pretrain_corpus', 'enwiki_wikiextractor_sample.jsonl.gz')
  model_dir = tmp_path / 'model'
  cmd = [sys.executable, '-m', 'prompt_recycling.pretrain',
         '--gin_file=gin_configs/models/t5_1_1/tiny.gin', '--gin_file=gin_configs/runs/pretrain.gin',
         f"--gin.MODEL_DIR='{model_dir}'", f"--gin.CORPUS=['{corpus}']",
         f"--gin.VOCABULARY_PATH='{shared_path('t5', 'sentencepiece.model')}'",
         '--gin.SPAN_CORRUPTION_STEPS=30', '--gin.LM_ADAPTATION_STEPS=10',
         '--gin.pretrain.max_corpus_tokens=20000', '--gin.pretrain.batch_size=8',
         '--gin.pretrain.warmup_steps=5', '--gin.pretrain.learning_rate=1e-2',
         '--gin.pretrain.save_every=20', '--gin.pretrain.inputs_length=32']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  exported = result.stdout.strip().splitlines()[-1]
  params, config = checkpoints.load_params(exported)
  assert (config.emb_dim, config.num_encoder_layers) == (8, 2)

  # The trained model beats its own initialisation on span corruption of unseen text.
  docs = list(itertools.islice(objectives.read_documents([str(corpus)]), 400, 420))
  chunk, targets = objectives.chunk_length_for(32)
  chunks = objectives.tokenized_chunks(docs, t5_vocab, chunk)
  batch = data.to_batch(list(itertools.islice(objectives.examples(chunks, 'span_corruption', 9), 16)),
                        {'inputs': 32, 'targets': targets})
  model = t5.T5(config)
  initial = trainer.random_frozen(model, jax.random.key(0), None)  # An untrained model alike.

  def loss(frozen):
    out = trainer.eval_step({}, frozen, batch, model=model, method=prompts.no_prompt())
    return float(out['cross_ent_sum'] / out['num_tokens'])

  assert loss(params) < loss(initial) - 0.5, (loss(params), loss(initial))
