"""Prompt tuning through the real loop, on the real tiny T5X checkpoint and real SST-2."""
import json
import pathlib

import jax
import numpy as np
import pytest

from prompt_recycling import data
from prompt_recycling import evaluation
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import run_dir
from prompt_recycling import trainer
from prompt_recycling.models import t5

LENGTHS = {'inputs': 32, 'targets': 4}
BATCH = 8


class MemoryWriter:
  """Collects what the loop writes (clu's MetricWriter interface)."""

  def __init__(self):
    self.scalars = {}

  def write_scalars(self, step, scalars):
    self.scalars.setdefault(step, {}).update({k: float(v) for k, v in scalars.items()})

  def flush(self):
    pass


def _train(config, frozen, examples, model_dir, *, steps, mesh=None, save_every=4, lr=0.3,
           method=None, **kwargs):
  """Runs `trainer.train`; returns (state, the losses of the steps this call ran)."""
  method = method or prompts.prompt_tuning(5, prompts.sampled_vocab(1000))
  writer = MemoryWriter()

  def make_batches(start):
    return data.batches(data.shuffled_epochs(examples, seed=0, start=start * BATCH), BATCH, LENGTHS)

  state = trainer.train(
      model=t5.T5(config), frozen=frozen, method=method, tx=trainer.adafactor(learning_rate=lr),
      mesh=mesh or partitioning.make_mesh(1, jax.devices()[:1]), make_batches=make_batches,
      total_steps=steps, model_dir=str(model_dir), run_info={'config': config.__dict__},
      batch_size=BATCH, save_every=save_every, log_every=1, progress=False, writer=writer, **kwargs)
  losses = [writer.scalars[s]['loss'] for s in sorted(writer.scalars) if 'loss' in writer.scalars[s]]
  return state, losses


def test_loss_halves_and_frozen_params_are_bit_identical(sst2_examples, tmp_path):
  # The real tiny checkpoint (embed 4) cannot separate one token's logit from
  # 32k others, whatever the prompt; a random T5 of embed 128 can.
  config = t5.T5Config(emb_dim=128, num_heads=4, head_dim=32, mlp_dim=256,
                       num_encoder_layers=2, num_decoder_layers=2)
  frozen = jax.device_get(trainer.random_frozen(t5.T5(config), jax.random.key(0), None))
  before = jax.tree.map(np.copy, frozen)
  method = prompts.prompt_tuning(20, prompts.sampled_vocab(1000))
  state, losses = _train(config, frozen, sst2_examples, tmp_path, steps=40, save_every=40,
                         method=method)
  first, last = np.mean(losses[:4]), np.mean(losses[-4:])
  assert last < first / 2, (first, last)  # Measured: 9.67 -> 2.64 (0.31 at 30 steps, 0.23 at 150).
  jax.tree.map(np.testing.assert_array_equal, before, frozen)
  # Only the prompt is trained state: nothing of the model is in it.
  assert set(state.params) == {'prompt'} and state.params['prompt'].shape == (20, 128)


def test_eight_device_mesh_equals_one_device(tiny_frozen, sst2_examples, tmp_path):
  config, frozen = tiny_frozen
  assert len(jax.devices()) == 8, 'conftest forces 8 host devices'
  s1, l1 = _train(config, frozen, sst2_examples, tmp_path / 'one', steps=6)
  s8, l8 = _train(config, frozen, sst2_examples, tmp_path / 'eight', steps=6,
                     mesh=partitioning.make_mesh(2))  # 4 x 2: data x model
  np.testing.assert_allclose(l1, l8, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(s1.params['prompt']), np.asarray(s8.params['prompt']),
                             rtol=1e-4, atol=1e-4)


def test_resumed_run_equals_uninterrupted(tiny_frozen, sst2_examples, tmp_path):
  config, frozen = tiny_frozen
  full, _ = _train(config, frozen, sst2_examples, tmp_path / 'full', steps=8)
  _train(config, frozen, sst2_examples, tmp_path / 'split', steps=4)  # Stops at a checkpoint.
  resumed, losses = _train(config, frozen, sst2_examples, tmp_path / 'split', steps=8)
  assert len(losses) == 4  # Only steps 5..8 ran the second time.
  np.testing.assert_array_equal(np.asarray(full.params['prompt']), np.asarray(resumed.params['prompt']))


def test_numpy_export_evaluates_like_the_in_memory_prompt(tiny_frozen, sst2_examples, tmp_path, t5_vocab):
  config, frozen = tiny_frozen
  state, _ = _train(config, frozen, sst2_examples, tmp_path, steps=8, save_every=8)
  steps = trainer.Steps(t5.T5(config), prompts.prompt_tuning(5, prompts.sampled_vocab(1000)), None,
                        partitioning.make_mesh(1, jax.devices()[:1]))
  export_dir = tmp_path / 'numpy_checkpoints' / 'checkpoint_8'
  exported = np.load(export_dir / 'prompt.npy')
  with (export_dir / run_dir.PROMPT_EXPORT_NAME).open('rb') as f:
    np.testing.assert_array_equal(np.load(f), exported)
  np.testing.assert_array_equal(exported, np.asarray(state.params['prompt']))

  recorded = []

  def accuracy(targets, predictions):
    recorded.append(list(predictions))
    return {'accuracy': 100 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}

  label_words = ['negative', 'positive']
  eval_kwargs = dict(mode='rank', batch_size=BATCH, feature_lengths=LENGTHS,
                     decode=lambda ids: t5_vocab.decode(list(ids)), metric_fns=[accuracy],
                     label_words=label_words, encode=lambda s: list(t5_vocab.encode(s)) + [1])
  frozen_on_mesh = steps.put_frozen(frozen)
  params = trainer.put_on_mesh(jax.device_get(state.params), steps.params_shardings)
  in_memory = evaluation.evaluate(steps, params, frozen_on_mesh, sst2_examples, **eval_kwargs)
  eval_steps = trainer.Steps(t5.T5(config), prompts.prompt_tuning(5, prompts.from_file(
      str(export_dir / 'prompt.npy'))), None, steps.mesh)
  from_file = eval_steps.init_params(jax.random.key(1), frozen_on_mesh)
  np.testing.assert_array_equal(np.asarray(from_file['prompt']), exported)  # The file, not the key.
  reloaded = evaluation.evaluate(eval_steps, from_file, frozen_on_mesh, sst2_examples, **eval_kwargs)
  assert in_memory == reloaded
  assert recorded[0] == recorded[1]  # The same prediction for every example.

  # Each label word's log-likelihood per example, recomputed without `evaluation.py` or
  # `trainer.py`: the frozen model's forward pass with the exported prompt prepended.
  inputs = np.zeros((len(sst2_examples), LENGTHS['inputs']), np.int32)
  for i, ex in enumerate(sst2_examples):
    ids = ex['inputs'][:LENGTHS['inputs']]
    inputs[i, :len(ids)] = ids
  apply = jax.jit(t5.T5(config).apply)

  def log_likelihoods(prompt):
    prefix = np.broadcast_to(prompt, (len(sst2_examples),) + prompt.shape)
    out = []
    for word in label_words:
      target = list(t5_vocab.encode(word)) + [1]
      decoder_inputs = np.asarray([[0] + target[:-1]] * len(sst2_examples), np.int32)
      logits = np.asarray(apply({'params': frozen}, inputs, decoder_inputs, prefix=prefix),
                          np.float64)
      top = logits.max(-1, keepdims=True)
      log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
      out.append(log_probs[:, np.arange(len(target)), target].sum(-1))
    return np.stack(out, axis=1)

  expected_scores = log_likelihoods(exported)
  # The same numbers through the reloaded method's score step, and bit for bit in memory.
  for word, column in zip(label_words, expected_scores.T):
    batch = partitioning.shard_batch(data.to_batch(
        [{**ex, 'targets': list(t5_vocab.encode(word)) + [1]} for ex in sst2_examples], LENGTHS),
        steps.mesh)
    reloaded_scores = np.asarray(eval_steps.score(from_file, frozen_on_mesh, batch))
    np.testing.assert_array_equal(reloaded_scores, np.asarray(steps.score(params, frozen_on_mesh, batch)))
    np.testing.assert_allclose(reloaded_scores, column, rtol=0, atol=1e-4)
  # The scores depend on the prompt well beyond that tolerance (its rows reversed: ~8e-3).
  assert np.abs(log_likelihoods(exported[::-1]) - expected_scores).max() > 1e-3
  assert np.abs(expected_scores[:, 0] - expected_scores[:, 1]).min() > 1e-4  # No near-ties.
  expected = [label_words[i] for i in expected_scores.argmax(1)]
  assert recorded[0] == expected
  gold = [ex['targets_pretokenized'] for ex in sst2_examples]
  assert in_memory['accuracy'] == pytest.approx(100 * np.mean([e == g for e, g in zip(expected, gold)]))


@pytest.mark.parametrize('save_every', [1, 2])  # 2: found by the lagged check, not at a save.
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_frozen, sst2_examples, tmp_path,
                                                       save_every):
  config, frozen = tiny_frozen
  _train(config, frozen, sst2_examples, tmp_path, steps=4, save_every=4)
  good = np.load(tmp_path / 'numpy_checkpoints' / 'checkpoint_4' / 'prompt.npy')
  with pytest.raises(trainer.NonFiniteLossError, match=r'step 5.*last good checkpoint is step 4'):
    _train(config, frozen, sst2_examples, tmp_path, steps=8, save_every=save_every,
           lr=float('nan'))
  manager = run_dir.checkpoint_manager(str(tmp_path))
  assert manager.latest_step() == 4
  assert sorted(p.name for p in (tmp_path / 'numpy_checkpoints').iterdir()) == ['checkpoint_4']
  np.testing.assert_array_equal(good, np.load(tmp_path / 'numpy_checkpoints' / 'checkpoint_4' / 'prompt.npy'))


def test_model_dir_of_another_model_is_refused(tiny_frozen, sst2_examples, tmp_path):
  config, frozen = tiny_frozen
  _train(config, frozen, sst2_examples, tmp_path, steps=2, save_every=2)
  info_before = (tmp_path / 'run_info.json').read_text()
  other = prompts.prompt_tuning(7, prompts.sampled_vocab(1000))
  with pytest.raises(run_dir.RunMismatchError, match='already holds a different run'):
    trainer.train(model=t5.T5(config), frozen=frozen, method=other, tx=trainer.adafactor(),
                  mesh=partitioning.make_mesh(1, jax.devices()[:1]),
                  make_batches=lambda s: iter(()), total_steps=4, model_dir=str(tmp_path),
                  run_info={'config': {**config.__dict__, 'emb_dim': 99}}, batch_size=BATCH,
                  progress=False)
  assert (tmp_path / 'run_info.json').read_text() == info_before


def test_prompt_file_of_wrong_shape_is_an_error(tmp_path):
  path = tmp_path / 'prompt.npy'
  np.save(path, np.zeros((5, 3), np.float32))
  init = prompts.from_file(str(path))
  with pytest.raises(ValueError, match=r'shape \(5, 3\).*\(5, 4\)'):
    init(jax.random.key(0), np.zeros((10, 4), np.float32), (5, 4))
  np.save(path, np.full((5, 4), np.nan, np.float32))
  with pytest.raises(ValueError, match='NaN'):
    init(jax.random.key(0), np.zeros((10, 4), np.float32), (5, 4))


def test_gradient_accumulation_matches_one_big_batch(tiny_frozen, sst2_examples):
  config, frozen = tiny_frozen
  method = prompts.prompt_tuning(5, prompts.sampled_vocab(1000))
  mesh = partitioning.make_mesh(1, jax.devices()[:1])
  batch = partitioning.shard_batch(data.to_batch(sst2_examples[:8], LENGTHS), mesh)
  results = []
  for accum in (1, 4):
    steps = trainer.Steps(t5.T5(config), method, trainer.adafactor(), mesh, accum_steps=accum,
                          enable_dropout=False)
    f = steps.put_frozen(frozen)
    state, metrics = steps.train(steps.init(jax.random.key(0), f), f, batch, jax.random.key(1))
    results.append((float(metrics['loss']), np.asarray(state.params['prompt'])))
  assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)
