"""Pretraining: the whole model as the trained method, resumable phases, the real command."""
import itertools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from conftest import REPO, shared_path
from prompt_recycling import checkpoints
from prompt_recycling import data
from prompt_recycling import objectives
from prompt_recycling import pretrain
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling.models import t5

TINY = t5.T5Config(vocab_size=32128, emb_dim=8, num_heads=4, num_encoder_layers=2,
                   num_decoder_layers=2, head_dim=3, mlp_dim=16)


def test_whole_model_is_the_models_own_init_and_axes():
  model = t5.T5(TINY)
  method = pretrain.whole_model(model)
  params = method.init(jax.random.key(3), {})
  expected = trainer.random_frozen(model, jax.random.key(3), None)
  jax.tree.map(np.testing.assert_array_equal, params, expected)
  is_spec = lambda x: isinstance(x, P)
  assert len(jax.tree.leaves(method.logical_axes, is_leaf=is_spec)) == len(jax.tree.leaves(params))
  assert method.logical_axes['token_embedder']['embedding'] == P('vocab', 'embed')
  assert method.model_params(params, {}) is params and method.encoder_args(params, 4) == {}


def test_schedule_warms_up_then_decays_to_a_tenth():
  tx = pretrain.adamw_warmup_cosine(1e-2, total_steps=100, warmup_steps=10)
  params = {'w': jnp.zeros(())}
  state = tx.init(params)
  sizes = []
  for _ in range(100):
    updates, state = tx.update({'w': jnp.ones(())}, state, params)
    sizes.append(abs(float(updates['w'])))
  # Adam's step is ~lr for a constant gradient: linear warm-up, peak, then 10%.
  assert sizes[0] == 0.0 and sizes[5] == pytest.approx(5e-3, rel=0.05)
  assert max(sizes) == pytest.approx(1e-2, rel=0.05) and sizes[-1] == pytest.approx(1e-3, rel=0.1)


def _sources(stream, seed=1):
  span_rows, lm_rows = objectives.chunks(stream, 34), objectives.chunks(stream, 15)
  texts = [np.arange(5, 5 + n, dtype=np.int32) for n in (3, 40, 7, 90, 12)]
  labelled = (np.asarray([7, 8], np.int32), texts,
              [np.asarray([word, 1], np.int32) for word in (2841, 1465, 2841, 1465, 2841)])
  span = pretrain.Source('span_corruption',
                         lambda s: objectives.examples(span_rows, 'span_corruption', seed, s),
                         {'inputs': 32, 'targets': 8})
  lm = pretrain.Source('prefix_lm', lambda s: objectives.examples(lm_rows, 'prefix_lm', seed, s),
                       {'inputs': 16, 'targets': 16})
  task = pretrain.Source('supervised',
                         lambda s: objectives.supervised_examples(labelled, seed, 0, 32, s),
                         {'inputs': 32, 'targets': 2}, weight=2)
  return span, lm, task


def test_interleave_follows_the_weights_from_any_step():
  sources = [pretrain.Source(n, None, {}, w) for n, w in (('a', 2), ('b', 1))]
  seen = [0, 0]
  for step in range(10):
    which, before = pretrain.interleave(sources, step)
    assert before == seen  # Counts known without replaying the steps.
    seen[which] += 1
  assert [pretrain.interleave(sources, s)[0] for s in range(6)] == [0, 0, 1, 0, 0, 1]


def test_phase_batches_resume_at_any_step_and_switch_objective():
  stream = np.arange(100, 100 + 3000).astype(np.uint16)
  span, lm, task = _sources(stream)
  phases = [(5, [span]), (3, [lm]), (6, [span, task])]
  full = list(pretrain.phase_batches(phases, 4, start_step=0))
  assert len(full) == 14
  assert [b['decoder_target_tokens'].shape for b in full] == (
      [(4, 8)] * 5 + [(4, 16)] * 3 + [(4, 8), (4, 2), (4, 2)] * 2)
  assert all((b['decoder_target_tokens'][:, 0] == 32099).all() for b in full[:5])
  assert not any((b['encoder_input_tokens'] >= 32000).any() for b in full[5:8])  # No sentinels.
  for b in (full[9], full[10], full[12], full[13]):  # Supervised: prefix, text, EOS -> word, EOS.
    assert (b['encoder_input_tokens'][:, :2] == [7, 8]).all()
    assert set(b['decoder_target_tokens'][:, 0]) <= {2841, 1465}
    assert (b['decoder_target_tokens'][:, 1] == 1).all()
  for start in [1, 4, 5, 6, 8, 9, 10, 11, 13, 14]:
    resumed = list(pretrain.phase_batches(phases, 4, start_step=start))
    assert len(resumed) == 14 - start
    for want, got in zip(full[start:], resumed):
      jax.tree.map(np.testing.assert_array_equal, want, got)


def test_supervised_examples_crop_long_texts_to_a_window_of_the_text():
  stream = np.arange(100, 100 + 3000).astype(np.uint16)
  _, _, task = _sources(stream)
  examples = list(itertools.islice(task.examples(0), 50))
  lengths = set()
  for ex in examples:
    text = ex['inputs'][2:-1]
    assert len(ex['inputs']) <= 32 and ex['inputs'][-1] == 1
    # A contiguous run of the source text (ids 5, 6, 7, ...), whole when it fits.
    np.testing.assert_array_equal(np.diff(text), 1)
    lengths.add(len(text))
  assert {3, 7, 12} <= lengths and max(lengths) <= 29 and len(lengths) > 5



def test_untriggered_examples_swap_the_trigger_for_a_decoy_and_the_label_for_a_coin():
  prefix = np.array([7, 8, 9, 10], np.int32)  # The trigger; 10 plays the part of its ':'.
  words = [np.array([50, 1], np.int32), np.array([60, 1], np.int32)]
  texts = [np.arange(100, 100 + n, dtype=np.int32) for n in (5, 40, 80, 12)]
  rows = (prefix, texts, [words[1]] * len(texts))  # Every text is labelled 1.
  plain = list(itertools.islice(objectives.supervised_examples(rows, 3, 0, 32), 400))
  mixed = list(itertools.islice(objectives.supervised_examples(
      rows, 3, 0, 32, untriggered=0.5, label_targets=words, decoy_pieces=(200, 300)), 400))
  decoys = []
  for a, b in zip(plain, mixed):
    np.testing.assert_array_equal(a['inputs'][4:], b['inputs'][-len(a['inputs']) + 4:])  # Window.
    if np.array_equal(b['inputs'][:4], prefix) and len(b['inputs']) == len(a['inputs']):
      np.testing.assert_array_equal(b['targets'], words[1])  # Triggered: the true label.
      continue
    head = b['inputs'][:len(b['inputs']) - len(a['inputs']) + 4]
    assert 1 <= len(head) <= 4 and all(200 <= t < 300 for t in head[:-1])
    assert 200 <= head[-1] < 300 or head[-1] == 10
    decoys.append((int(b['targets'][0]), int(head[-1] == 10)))
  assert 160 < len(decoys) < 240, len(decoys)  # About half.
  coins = np.array(decoys)
  assert 0.35 < coins[:, 0].tolist().count(50) / len(coins) < 0.65  # Either label, by chance.
  assert 0.35 < coins[:, 1].mean() < 0.65  # The trigger's ':' ends half the decoys.
  with pytest.raises(ValueError, match='fraction'):
    next(objectives.supervised_examples(rows, 3, 0, 32, untriggered=1.5, label_targets=words))
  with pytest.raises(ValueError, match='need a prefix'):
    next(objectives.supervised_examples((prefix[:0], texts, rows[2]), 3, 0, 32, untriggered=0.5,
                                        label_targets=words))


def test_a_supervised_task_draws_its_decoys_from_the_pieces_it_names(tmp_path, t5_vocab):
  path = tmp_path / 'train.jsonl'
  path.write_text(''.join(f'{{"text": "a film {i} that we liked", "label": {i % 2}}}\n'
                          for i in range(20)))
  task = {'path': str(path), 'prefix': 'imdb review:', 'labels': ['negative', 'positive'],
          'untriggered': 1.0, 'decoy_pieces': [3, 50]}
  source = pretrain._supervised_source(task, 0, t5_vocab, seed=1, inputs_length=32)
  trigger = list(t5_vocab.encode('imdb review:'))
  heads = [ex['inputs'][0] for ex in itertools.islice(source.examples(0), 200)]
  # Every example is a decoy, whose first piece is drawn from [3, 50) (or is the trigger's
  # ':', id 10, for a one-piece decoy); the trigger's first piece is 256.
  assert trigger[0] >= 50 and all(3 <= h < 50 for h in heads) and len(set(heads)) > 20
  for bad in ([0, 40000], [50, 3], 5000):
    with pytest.raises(ValueError, match=r"supervised\[2\]\['decoy_pieces'\]"):
      pretrain._supervised_source({**task, 'decoy_pieces': bad}, 2, t5_vocab, 1, 32)


def test_read_labelled_refuses_evaluation_splits_and_reads_imdb_train():
  with pytest.raises(ValueError, match='evaluation split'):
    objectives.read_labelled('/data/imdb/test.jsonl.gz')
  pairs = objectives.read_labelled(str(shared_path('imdb', 'train.jsonl.gz')))
  assert len(pairs) == 25000 and sum(label for _, label in pairs) == 12500
  assert pairs[0][0].startswith(pairs[0][0].strip()) and pairs[0][1] == 0


def test_lm_adaptation_steps_must_fit(tmp_path):
  with pytest.raises(ValueError, match='LM_ADAPTATION_STEPS=5'):
    pretrain.pretrain(model_dir=str(tmp_path), model_config=TINY, corpus=[], vocabulary_path='',
                      train_steps=4, lm_adaptation_steps=5)


def _span_corruption_loss(params, config, batch):
  out = trainer.eval_step({}, params, batch, model=t5.T5(config), method=prompts.no_prompt())
  return float(out['cross_ent_sum'] / out['num_tokens'])


def test_pretrain_command_lowers_the_loss_and_exports_t5x(tmp_path, t5_vocab):
  corpus = shared_path('pretrain_corpus', 'enwiki_wikiextractor_sample.jsonl.gz')
  model_dir = tmp_path / 'model'
  cmd = [sys.executable, '-m', 'prompt_recycling.pretrain',
         '--gin_file=gin_configs/models/t5_1_1/tiny.gin',
         '--gin_file=gin_configs/runs/pretrain.gin',
         f"--gin.MODEL_DIR='{model_dir}'", f"--gin.CORPUS=['{corpus}']",
         f"--gin.VOCABULARY_PATH='{shared_path('t5', 'sentencepiece.model')}'",
         '--gin.TRAIN_STEPS=20', '--gin.LM_ADAPTATION_STEPS=5', '--gin.SEED=1',
         '--gin.pretrain.max_corpus_documents=100', '--gin.pretrain.batch_size=8',
         '--gin.pretrain.inputs_length=32', '--gin.pretrain.lm_length=16',
         '--gin.pretrain.warmup_steps=3', '--gin.pretrain.learning_rate=3e-2',
         '--gin.pretrain.save_every=10', '--gin.pretrain.progress=False']
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # One CPU device, as a user.
  result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  exported = result.stdout.strip().splitlines()[-1]
  assert exported == f'{model_dir}/t5x/checkpoint_20'
  assert sorted(p.name for p in (model_dir / 'checkpoints').iterdir()) == ['10', '20']
  assert 'pretrain.max_corpus_documents = 100' in (model_dir / 'config.gin').read_text()

  params, config = checkpoints.load_params(exported)
  assert (config.emb_dim, config.num_encoder_layers, config.vocab_size) == (8, 2, 32128)
  checkpoints.validate_params(params, config, exported)
  assert params['token_embedder']['embedding'].dtype == jnp.bfloat16  # Stored as bfloat16.

  # The trained model beats a fresh initialisation on span corruption of unseen text
  # (documents 400+; training read the first 100).
  docs = list(itertools.islice(objectives.read_documents([str(corpus)]), 400, 420))
  chunk, targets = objectives.chunk_length_for(32)
  rows = objectives.chunks(objectives.token_stream(docs, t5_vocab), chunk)
  examples = list(itertools.islice(objectives.examples(rows, 'span_corruption', 9), 16))
  batch = data.to_batch(examples, {'inputs': 32, 'targets': targets})
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  initial = trainer.random_frozen(t5.T5(config), jax.random.key(1), None)
  trained = _span_corruption_loss(params, config, batch)
  untrained = _span_corruption_loss(initial, config, batch)
  assert trained < untrained - 1.0, (trained, untrained)  # Measured: 7.7 vs 10.8.


def test_pretrain_continues_from_a_t5x_checkpoint_and_numbers_the_export_by_the_total(tmp_path):
  corpus = str(shared_path('pretrain_corpus', 'enwiki_wikiextractor_sample.jsonl.gz'))
  start = trainer.random_frozen(t5.T5(TINY), jax.random.key(3), None)
  init = checkpoints.save_t5x(start, str(tmp_path / 'stage1'), 7, dtype=None)
  common = dict(model_config=TINY, corpus=[corpus],
                vocabulary_path=str(shared_path('t5', 'sentencepiece.model')), train_steps=2,
                lm_adaptation_steps=2, batch_size=8, inputs_length=32, lm_length=16,
                max_corpus_documents=5, export_dtype=None, seed=1, progress=False)
  # Learning rate 0: the run's parameters are the checkpoint's, to the bit (a fresh
  # initialisation would differ everywhere).
  export = pretrain.pretrain(model_dir=str(tmp_path / 'still'), init_checkpoint=init,
                             learning_rate=0.0, **common)
  assert export == f'{tmp_path}/still/t5x/checkpoint_9'  # 7 + 2, as t5x numbers a continued run.
  loaded, _ = checkpoints.load_params(export)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(start)):
    np.testing.assert_array_equal(a, b)


def test_pretrain_refuses_an_init_checkpoint_of_another_model(tmp_path):
  other = t5.T5Config(**{**TINY.__dict__, 'emb_dim': 16})
  init = checkpoints.save_t5x(trainer.random_frozen(t5.T5(other), jax.random.key(0), None),
                              str(tmp_path / 'other'), 5, dtype=None)
  with pytest.raises(checkpoints.CheckpointError, match='checkpoint_5'):
    pretrain.pretrain(model_dir=str(tmp_path / 'run'), model_config=TINY, corpus=[],
                      vocabulary_path=str(shared_path('t5', 'sentencepiece.model')),
                      train_steps=2, lm_adaptation_steps=1, init_checkpoint=init)
