"""The show_tasks CLI: listing, examples from the real files, and its errors."""
import io
import os
import subprocess
import sys

from conftest import REPO
from conftest import shared_path
import tasks
from tasks import show_tasks


def test_list_tasks():
  out = io.StringIO()
  show_tasks.list_tasks(out)
  lines = out.getvalue().splitlines()
  assert 'glue_sst2_v2  splits: train,validation,test  labels: negative | positive' in lines
  assert 'super_glue_record_v102  splits: train,validation,test  generative' in lines
  assert 'lama_trex  mixture of 41 tasks' in lines
  assert len(lines) == len(tasks.names())


def test_show_examples(sentencepiece_model):
  tasks.set_vocabulary(str(sentencepiece_model))
  tasks.set_data_source(local_dir=str(shared_path()))
  try:
    out = io.StringIO()
    show_tasks.show_examples('lama_trex_P19', n=2, split='test', out=out)
    target_ids = tasks.VOCABULARY.encode('Alexandra') + [1]
  finally:
    tasks.reset_data_source()
    tasks.set_vocabulary(None)
  text = out.getvalue()
  assert text.count('--- example') == 2
  assert 'inputs: Allan Peiper was born in <extra_id_0> .' in text
  assert 'targets: Alexandra\n' in text
  assert 'predicate_id: P19' in text
  assert f'  {target_ids}' in text


def test_command_line(sentencepiece_model):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  run = subprocess.run(
      [sys.executable, '-m', 'tasks.show_tasks', '--task=glue_sst2_v2', '--n=1',
       f'--data_dir={shared_path()}', f'--vocab={sentencepiece_model}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "inputs: sst2 sentence: it 's a charming and often affecting journey ." in run.stdout
  assert 'targets: positive' in run.stdout
  bad = subprocess.run([sys.executable, '-m', 'tasks.show_tasks', '--task=glue_sst', '--n=1'],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert bad.returncode == 1
  assert "error: Unknown task or mixture 'glue_sst'. Did you mean: glue_sst2_v2" in bad.stderr
