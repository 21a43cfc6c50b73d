"""run_dir: one MODEL_DIR per run (configs compared field by field); saves from threads."""
import json
import threading
import time

import numpy as np
import pytest

from prompt_recycling import run_dir
from prompt_recycling.models import gpt2
from prompt_recycling.models import t5


def _claim_then_edit(tmp_path, config, edit):
  run_dir.claim(str(tmp_path), {'model_config': config, 'task': 'sst2'})
  path = tmp_path / 'run_info.json'
  info = json.loads(path.read_text())
  edit(info['model_config'])
  path.write_text(json.dumps(info))


def test_recorded_as_the_fields_dict(tmp_path):
  config = t5.T5Config(emb_dim=8)
  run_dir.claim(str(tmp_path), {'model_config': config})
  recorded = json.loads((tmp_path / 'run_info.json').read_text())['model_config']
  # What train.py wrote before configs were compared field by field (`__dict__`).
  assert recorded == json.loads(json.dumps(config.__dict__))


def test_a_field_added_since_at_its_default_is_the_same_run(tmp_path):
  """A MODEL_DIR written before `remat_policy` existed resumes under today's T5Config."""
  _claim_then_edit(tmp_path, t5.T5Config(), lambda c: c.pop('remat_policy'))
  run_dir.claim(str(tmp_path), {'model_config': t5.T5Config(), 'task': 'sst2'})
  with pytest.raises(run_dir.RunMismatchError, match=r"model_config.remat_policy.*'<absent>', 'full'"):
    run_dir.claim(str(tmp_path), {'model_config': t5.T5Config(remat_policy='full'), 'task': 'sst2'})


def test_a_field_since_removed_is_not_compared(tmp_path):
  _claim_then_edit(tmp_path, gpt2.GPT2Config(), lambda c: c.update(old_option=3))
  run_dir.claim(str(tmp_path), {'model_config': gpt2.GPT2Config(), 'task': 'sst2'})


@pytest.mark.parametrize('requested, names', [
    ({'model_config': t5.T5Config(emb_dim=99), 'task': 'sst2'}, ['model_config.emb_dim']),
    ({'model_config': t5.T5Config(), 'task': 'rte'}, ['task']),
    ({'model_config': gpt2.GPT2Config(), 'task': 'sst2'}, ['model_config.']),
], ids=['size', 'task', 'family'])
def test_a_different_run_is_refused(tmp_path, requested, names):
  run_dir.claim(str(tmp_path), {'model_config': t5.T5Config(), 'task': 'sst2'})
  before = (tmp_path / 'run_info.json').read_text()
  with pytest.raises(run_dir.RunMismatchError) as error:
    run_dir.claim(str(tmp_path), requested)
  for name in names:
    assert name in str(error.value)
  assert (tmp_path / 'run_info.json').read_text() == before


def test_saves_from_threads_side_by_side_all_finish_and_restore(tmp_path):
  """Prompts tuned side by side in threads (the demo, the protocol) each save their run.

  Without run_dir's lock, orbax 0.12's process-wide operation id made three such
  savers wait on each other's signals until its 300 s timeout, every time here.
  """
  done, errors = [], []

  def work(i):
    try:
      manager = run_dir.checkpoint_manager(str(tmp_path / str(i)), keep=2)
      for step in range(1, 9):
        run_dir.save(manager, step, {'p': np.full((5, 4), 10 * i + step, np.float32)}, step)
      done.append(i)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(3)]
  for t in threads:
    t.start()
  deadline = time.time() + 60
  for t in threads:
    t.join(max(0.0, deadline - time.time()))
  assert not errors and sorted(done) == [0, 1, 2], (done, errors)
  for i in range(3):
    manager = run_dir.checkpoint_manager(str(tmp_path / str(i)), keep=2)
    state, meta = run_dir.restore(manager, {'p': np.zeros((5, 4), np.float32)})
    assert meta == {'step': 8, 'data_position': 8}
    np.testing.assert_array_equal(state['p'], np.full((5, 4), 10 * i + 8, np.float32))
