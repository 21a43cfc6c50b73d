"""A pretraining run stopped before the span-corruption -> LM-adaptation boundary and rerun
equals an uninterrupted one (through `pretrain.pretrain`, the tiny config, 8 steps)."""
import jax
import numpy as np
import pytest

from conftest import shared_path
from prompt_recycling import checkpoints
from prompt_recycling import pretrain
from prompt_recycling import run_dir
from prompt_recycling.models import t5

TINY = t5.T5Config(vocab_size=32128, emb_dim=8, num_heads=4, num_encoder_layers=2,
                   num_decoder_layers=2, head_dim=3, mlp_dim=16)


# Checkpoints at steps 4 and 8 (each orbax save costs ~0.9 CPU-s): the run is killed after the
# first, the last before the boundary, and the rerun crosses it.
SAVE_EVERY = 4


class _Killed(Exception):
  """Stands in for a preemption right after a checkpoint is durable."""


def _pretrain(model_dir):
  # One token-stream cache for the three runs: the corpus is tokenized once.
  return pretrain.pretrain(
      model_dir=str(model_dir), model_config=TINY,
      corpus=[str(shared_path('pretrain_corpus', 'enwiki_wikiextractor_sample.jsonl.gz'))],
      vocabulary_path=str(shared_path('t5', 'sentencepiece.model')),
      train_steps=8, lm_adaptation_steps=3,  # Span corruption: steps 1-5; LM adaptation: 6-8.
      batch_size=8, inputs_length=32, lm_length=16, warmup_steps=2, learning_rate=3e-2,
      seed=1, max_corpus_documents=50, cache_dir=str(model_dir.parent / 'corpus'),
      save_every=SAVE_EVERY, export_dtype=None, progress=False)


def test_killed_and_rerun_across_the_phase_boundary_equals_uninterrupted(tmp_path, monkeypatch):
  # The three runs compile once: conftest gives the test run one persistent compilation cache.
  killed_at = 4  # The last checkpoint before the boundary; the rerun crosses it.
  full, _ = checkpoints.load_params(_pretrain(tmp_path / 'full'))

  save = run_dir.save

  def save_then_die(manager, step, state, data_position):
    save(manager, step, state, data_position)
    if step == killed_at:
      raise _Killed

  monkeypatch.setattr(run_dir, 'save', save_then_die)
  with pytest.raises(_Killed):
    _pretrain(tmp_path / 'killed')

  saved = []

  def record(manager, step, state, data_position):
    saved.append(step)
    save(manager, step, state, data_position)

  monkeypatch.setattr(run_dir, 'save', record)
  resumed, _ = checkpoints.load_params(_pretrain(tmp_path / 'killed'))
  # It resumed, not restarted (a restart would save step 4 again).
  assert saved == list(range(killed_at + SAVE_EVERY, 9, SAVE_EVERY)) == [8]
  jax.tree.map(np.testing.assert_array_equal, full, resumed)
