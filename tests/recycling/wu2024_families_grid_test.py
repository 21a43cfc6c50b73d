"""Wu et al.'s families grid (gin_configs/recycling/wu2024_lama_families.gin) through its command.

Two small random-init models saved with transformers (a RoBERTa and a GPT-2,
each with the real tokenizer files) stand in for the grid's eight public
models; the first 40 facts of one real LAMA relation, 3,000 words of the real
common vocabulary (plus those facts' objects) as candidates and anchors, a few
search steps, the relative search and the discretization baseline (the neural
projector's own tests are in neural_test.py). What is checked is the
wiring: every single- and multi-source transfer with every recycler, the
manual-template and tuned-on-target references, and the recycling grid's
outputs (results.csv, summary.md, summary.json, summary.png).
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, shared_path

RELATION = 'P1376'


def _save(model, tokenizer_dir, out):
  model.save_pretrained(out)
  for name in ('vocab.json', 'merges.txt'):
    shutil.copy(tokenizer_dir / name, out / name)
  return out


@pytest.fixture(scope='module')
def tiny_dirs(tmp_path_factory):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  root = tmp_path_factory.mktemp('families')
  torch.manual_seed(0)
  roberta = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
      vocab_size=50265, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=16, max_position_embeddings=64, type_vocab_size=1, pad_token_id=1,
      bos_token_id=0, eos_token_id=2))
  gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=50257, n_embd=12, n_layer=1, n_head=2, n_positions=64))
  return {'roberta': _save(roberta, shared_path('tokenizers', 'roberta-base'), root / 'roberta'),
          'gpt2': _save(gpt2, shared_path('tokenizers', 'gpt2'), root / 'gpt2')}


def _small_lama(root):
  """LAMA_DIR with the real relations.jsonl, RELATION's first 40 test facts, 3,000+ words."""
  real = shared_path('lama')
  (root / 'common_vocabs').mkdir(parents=True)
  (root / 'trex_original' / RELATION).mkdir(parents=True)
  shutil.copy(real / 'relations.jsonl', root / 'relations.jsonl')
  lines = (real / 'trex_original' / RELATION / 'test.jsonl').read_text().splitlines()[:40]
  (root / 'trex_original' / RELATION / 'test.jsonl').write_text('\n'.join(lines) + '\n')
  words = (real / 'common_vocabs' / 'common_vocab_cased_be_ro_al.txt').read_text().split()
  objects = {json.loads(line)['obj'] for line in lines}
  kept = words[:3000] + sorted(objects - set(words[:3000]))
  (root / 'common_vocabs' / 'common_vocab_cased_be_ro_al.txt').write_text('\n'.join(kept) + '\n')
  return root, len(objects & set(words))


def test_grid_command_runs_every_transfer_and_writes_the_grid_outputs(tiny_dirs, tmp_path):
  lama, _ = _small_lama(tmp_path / 'lama')
  rng = np.random.default_rng(0)
  prompt_dirs = {}
  for name, width in (('roberta-base', 8), ('bert-base-cased', 8), ('gpt2', 12)):
    prompt_dirs[name] = str(tmp_path / name)
    os.makedirs(prompt_dirs[name])
    np.save(tmp_path / name / f'{RELATION}.npy', rng.normal(size=(5, width)).astype(np.float32))
  # bert-base-cased is a second copy of the RoBERTa: the grid's names are labels.
  dirs = {'BERT_BASE_CASED': 'roberta', 'ROBERTA_BASE': 'roberta', 'ALBERT_BASE_V2': 'roberta',
          'BERT_LARGE_CASED': 'roberta', 'ROBERTA_LARGE': 'roberta', 'ALBERT_LARGE_V2': 'roberta',
          'GPT2': 'gpt2', 'GPT2_MEDIUM': 'gpt2'}
  transfers = [{'sources': ['roberta-base'], 'target': 'gpt2'},
               {'sources': ['gpt2'], 'target': 'roberta-base'},
               {'sources': ['roberta-base', 'bert-base-cased'], 'target': 'gpt2'}]
  recyclers = {'relative': {'name': 'relative', 'top_k': 500, 'steps': 5},
               'discretization': {'name': 'nearest-neighbor'}}
  out = tmp_path / 'out'
  flags = ['--gin_file=gin_configs/recycling/wu2024_lama_families.gin',
           f"--gin.OUTPUT_DIR='{out}'", f'--gin.PROMPT_DIRS={prompt_dirs!r}',
           f"--gin.RELATIONS=['{RELATION}']", f'--gin.TRANSFERS={transfers!r}',
           f'--gin.RECYCLERS={recyclers!r}', f"--gin.LAMA_DIR='{lama}'",
           f"--gin.ANCHORS='words:{lama / 'common_vocabs' / 'common_vocab_cased_be_ro_al.txt'}'",
           *[f"--gin.{macro}_DIR='{tiny_dirs[kind]}'" for macro, kind in dirs.items()]]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  env.pop('XLA_FLAGS', None)
  result = subprocess.run([sys.executable, '-m', 'prompt_recycling.lama_transfer', *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]

  with (out / 'results.csv').open() as f:
    rows = list(csv.DictReader(f))
  kinds = {(r['source'], r['target'], r['recycler']) for r in rows}
  expected = {('-', 'gpt2', 'baseline'), ('-', 'roberta-base', 'baseline'),
              ('gpt2', 'gpt2', 'manual template'), ('roberta-base', 'roberta-base', 'manual template'),
              ('gpt2', 'gpt2', 'tuned on the target'),
              ('roberta-base', 'roberta-base', 'tuned on the target'),
              ('roberta-base + bert-base-cased', 'gpt2', 'relative')}
  for transfer in transfers[:2]:
    expected |= {(transfer['sources'][0], transfer['target'], r) for r in recyclers}
  assert kinds == expected  # Multi-source transfers run the relative search only.
  facts = {r['num_examples'] for r in rows if r['recycler'] != 'baseline'}
  assert len(facts) == 1 and 30 < int(facts.pop()) <= 40  # Distinct facts of the 40 rows.
  assert all(0 <= float(r['p@1']) <= 100 for r in rows)
  manual = {r['target']: float(r['p@1']) for r in rows if r['recycler'] == 'manual template'}
  baselines = {r['target']: float(r['p@1']) for r in rows if r['recycler'] == 'baseline'}
  assert baselines == pytest.approx(manual)  # One relation: its macro average is itself.
  summary = (out / 'summary.md').read_text()
  assert '| roberta-base + bert-base-cased -> gpt2 | relative | 1 |' in summary
  assert '| gpt2 -> roberta-base | discretization | 1 |' in summary
  assert len(json.loads((out / 'summary.json').read_text())) == len(expected) - 2
  assert (out / 'summary.png').stat().st_size > 0
