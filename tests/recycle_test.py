"""`python -m prompt_recycling.recycle`: the real tiny T5X checkpoint to a HF directory, and each error.

The errors are driven through the command's own flags and `main` in-process
(absl parses the same argv the command line would give); one run goes
through the real `python -m` command with `--report` and `--save_recycler`.
"""
import contextlib
import io
import json
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from conftest import REPO, shared_path
from prompt_recycling import checkpoints
from prompt_recycling import recycle
from prompt_recycling.recycling import base

safetensors_numpy = pytest.importorskip('safetensors.numpy')

TARGET_EMBED = 6


def _hf_dir(path, rows=32128, embed=TARGET_EMBED, seed=0):
  """A HF T5 1.1 directory of which only the token embedding is real (all recycling reads)."""
  path.mkdir()
  config = {'model_type': 't5', 'vocab_size': rows, 'd_model': embed, 'num_heads': 2,
            'num_layers': 1, 'd_kv': 3, 'd_ff': 8, 'feed_forward_proj': 'gated-gelu',
            'tie_word_embeddings': False}
  (path / 'config.json').write_text(json.dumps(config))
  table = np.random.default_rng(seed).normal(size=(rows, embed)).astype(np.float32)
  safetensors_numpy.save_file({'shared.weight': table}, str(path / 'model.safetensors'))
  return path


@pytest.fixture
def models(tmp_path, tiny_t5x_checkpoint):
  """(source T5X checkpoint, target HF directory, a [5, 4] source prompt)."""
  prompt = tmp_path / 'prompt.npy'
  np.save(prompt, np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32))
  return str(tiny_t5x_checkpoint), str(_hf_dir(tmp_path / 'hf')), str(prompt)


def _main(*argv):
  """Parses argv as the command does and runs its `main`; returns what it printed."""
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['recycle', *argv])
  out = io.StringIO()
  try:
    with contextlib.redirect_stdout(out):
      recycle.main([])
  finally:
    flags.FLAGS.unparse_flags()
  return out.getvalue()


def _args(source, target, prompt, output, **extra):
  args = {'source_model': source, 'target_model': target, 'prompt_path': prompt,
          'output_path': output, 'vocabulary': 'first:2000@1000', **extra}
  return [f'--{k}={v}' for k, v in args.items()]


def test_command_recycles_t5x_to_hf_with_report_and_saved_recycler(tmp_path, models):
  source, target, prompt = models
  out, saved = tmp_path / 'out.npy', tmp_path / 'recycler.npz'
  result = subprocess.run(
      [sys.executable, '-m', 'prompt_recycling.recycle',
       *_args(source, target, prompt, out, recycler='v2v-lin'), '--report',
       f'--save_recycler={saved}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  assert printed['shape'] == [5, TARGET_EMBED] and printed['recycler'] == 'v2v-lin'
  recycled = np.load(out)
  # v2v-lin is least squares from source rows to target rows (ids 1000..2999), recomputed here.
  src = checkpoints.load_token_embedding(source)[1000:3000]
  tgt = checkpoints.load_token_embedding(target)[1000:3000]
  w, *_ = np.linalg.lstsq(src.astype(np.float64), tgt.astype(np.float64), rcond=None)
  np.testing.assert_allclose(recycled, np.load(prompt) @ w, rtol=1e-3, atol=1e-4)
  report = json.loads(out.with_suffix('.report.json').read_text())
  assert set(report) == {'held_out_fit', 'nearest_target_tokens'}
  assert np.asarray(report['nearest_target_tokens']['cosine']).shape == (5, 5)  # 5 per row.
  assert saved.is_file() and base.load(str(saved))


@pytest.mark.parametrize('case,expected', [
    ('missing_flag', 'Flag --prompt_path must have a value other than None'),
    ('missing_prompt', 'does not exist'),
    ('nan_prompt', 'NaN or Inf'),
    ('wide_prompt', 'expected [prompt_length, 4]'),
    ('other_vocabulary', 'share a vocabulary'),
    ('unknown_recycler', "'v2v-linear'"),
    ('vocabulary_out_of_range', '40000'),
    ('bad_recycler_args', 'stepz'),
    ('not_a_checkpoint', 'nowhere'),
])
def test_each_error_is_named_and_nothing_is_written(tmp_path, models, case, expected):
  source, target, prompt = models
  out = tmp_path / 'out.npy'
  args = dict(recycler='v2v-lin')
  if case == 'missing_prompt':
    prompt = str(tmp_path / 'absent.npy')
  elif case == 'nan_prompt':
    np.save(prompt, np.full((5, 4), np.nan, np.float32))
  elif case == 'wide_prompt':
    np.save(prompt, np.zeros((5, 7), np.float32))
  elif case == 'other_vocabulary':
    target = str(_hf_dir(tmp_path / 'hf_small', rows=32000))
  elif case == 'unknown_recycler':
    args['recycler'] = 'v2v-linear'
  elif case == 'vocabulary_out_of_range':
    args['vocabulary'] = 'first:40000'
  elif case == 'bad_recycler_args':
    args['recycler_args'] = json.dumps({'stepz': 3})
  elif case == 'not_a_checkpoint':
    source = str(tmp_path / 'nowhere')
  argv = _args(source, target, prompt, out, **args)
  if case == 'missing_flag':
    argv = [a for a in argv if not a.startswith('--prompt_path')]
  with pytest.raises(Exception) as error:
    _main(*argv)
  assert expected in str(error.value), str(error.value)
  assert not out.exists()


def test_hf_directory_as_source_and_t5x_as_target(tmp_path, models):
  """The other direction, recycled with lin-comb; the output is the target's width."""
  source, target, _ = models
  prompt = tmp_path / 'wide.npy'
  np.save(prompt, np.random.default_rng(2).normal(size=(3, TARGET_EMBED)).astype(np.float32))
  out = tmp_path / 'out.npy'
  printed = json.loads(_main(*_args(target, source, str(prompt), out, recycler='lin-comb')))
  assert printed['shape'] == [3, 4] and np.load(out).shape == (3, 4)
