"""run_dir.claim: one MODEL_DIR per run, model configs compared field by field."""
import json

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
