"""The recycling grids and prompt-init gin files parse and bind the authors' settings."""
import pathlib
import subprocess
import sys

import pytest
from gin_configs_test import _parse

REPO = pathlib.Path(__file__).resolve().parents[2]
pytest.importorskip('gin')

_EXTRA_SEEDS = ("SEED_0_CHECKPOINT = '/ckpt/seed0'", "SEED_2000_CHECKPOINT = '/ckpt/seed2000'",
                "PROMPTS_DEFAULT = ['d.npy']", "PROMPTS_SEED_0 = ['s0.npy']",
                "PROMPTS_SEED_2000 = ['s2000.npy']", "PROMPTS_LARGE = ['l.npy']",
                "OUTPUT_DIR = '/tmp/x'")


@pytest.mark.parametrize('task,gin_file,split', [
    # The authors' pr:glue_sst2_v200_test_rc: taskless inputs, GLUE validation ('test' here).
    ('glue_sst2_v2_taskless', 'gin_configs/recycling/lester2022_sst2.gin', 'test'),
    ('imdb_reviews', 'gin_configs/recycling/lester2022_imdb.gin', 'test'),
])
def test_lester2022_grids_bind_four_models_and_the_authors_fit_rows(task, gin_file, split):
  bound = _parse('experiment', gin_file, *_EXTRA_SEEDS)
  names = [m['name'] for m in bound['sources']]
  assert names == ['Default', 'Seed 0', 'Seed 2000', 'Large'] and bound['targets'] == bound['sources']
  assert bound['task'] == task and bound['split'] == split
  assert bound['mode'] == 'rank'  # Summed log-likelihood, as their `*_rc` tasks.
  assert set(bound['recyclers']) == {'v2v-lin', 'v2v-nn', 'lin-comb'}
  from prompt_recycling.recycling import vocab  # pylint: disable=g-import-not-at-top
  ids = vocab.select(bound['vocabulary'], 32128)  # Resolves from the repository root.
  import numpy as np  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(ids, vocab.select(vocab.LESTER_2022, 32128))


def test_grid_requires_the_unreleased_seeds():
  result = subprocess.run(
      [sys.executable, '-c', 'import sys; from gin_configs_test import _parse; '
       "_parse('experiment', 'gin_configs/recycling/lester2022_sst2.gin', \"OUTPUT_DIR='/x'\")"],
      capture_output=True, text=True, cwd=REPO / 'tests', timeout=300)
  assert result.returncode != 0 and "in scope 'SEED_0_CHECKPOINT'" in result.stderr


def test_wayward_gin_builds_the_authors_wayward_method():
  code = ('import gin; from prompt_recycling import gin_setup; '
          "gin_setup.parse(['gin_configs/recycling/wayward.gin'], []); "
          "m = gin.query_parameter('%PROMPT_METHOD').scoped_configurable_fn(); "
          "print(m.penalty is not None)")
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == 'True'


def test_wu2024_lama_grid_binds_base_large_and_a_multi_source_transfer():
  bound = _parse('lama_transfer', 'gin_configs/recycling/wu2024_lama_t5.gin',
                 "OUTPUT_DIR = '/tmp/x'", "PROMPT_DIRS = {'Base': '/p/base'}")
  assert {'sources': ['Base'], 'target': 'Large'} in bound['transfers']
  assert {'sources': ['Large'], 'target': 'Base'} in bound['transfers']
  assert any(len(t['sources']) > 1 for t in bound['transfers'])
  from prompt_recycling import recycling  # pylint: disable=g-import-not-at-top
  assert {r['name'] for r in bound['recyclers'].values()} == set(recycling.recycler_names())
  assert bound['models']['Large'].endswith('t5_1_1_lm100k_large/checkpoint_1100000')
