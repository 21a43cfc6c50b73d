"""Training a mixture with the default run file evaluates each task with its own metrics."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, shared_path

pytest.importorskip('seqio')

# The real train entry point, with LAMA's candidates fixed to a short list so that
# ranking every relation's candidates stays fast (`tasks.set_lama_candidates`).
_TRAIN = """
import sys
import gin
import tasks
from prompt_recycling import gin_setup
from prompt_recycling import train as train_lib
tasks.set_lama_candidates(sys.argv[1].split(','))
train = gin.configurable(train_lib.train)
gin_setup.parse(['gin_configs/test/tiny_checkpoint_prompt.gin',
                 'gin_configs/runs/prompt_finetune.gin'], sys.argv[2:])
train()
"""
CANDIDATES = 'English,French,London,Paris,Italy,Canada,Japan,football'


def test_lama_mixture_reports_p_at_1_per_relation_and_their_average(tmp_path):
  from tasks import lama  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / 'run'
  bindings = [f"MODEL_DIR='{model_dir}'", "MIXTURE_OR_TASK_NAME='lama_trex'",
              f"INITIAL_CHECKPOINT_PATH='{shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')}'",
              'TRAIN_STEPS=2', 'BATCH_SIZE=8', "TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
              'train.eval_examples=2', 'train.progress=False', "EVAL_MODE='rank'",
              "train.best_metric='p@1'",  # Selection is opt-in; a mixture selects on 'average'.
              "train.report_split='test'",  # Selection never on the reported split.
              f"train.vocabulary_path='{shared_path('t5', 'sentencepiece.model')}'",
              f"train.data_dir='{shared_path('lama').parent}'"]
  result = subprocess.run([sys.executable, '-c', _TRAIN, CANDIDATES, *bindings], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(REPO)})
  assert result.returncode == 0, result.stderr[-3000:]
  best = json.loads((model_dir / 'best.json').read_text())
  assert best['metric'] == 'average' and best['step'] == 2
  per_relation = [best['metrics'][f'lama_trex_{r}/p@1'] for r in lama.RELATIONS]
  assert len(per_relation) == 41
  assert best['value'] == pytest.approx(np.mean(per_relation))
  assert best['metrics']['p@1'] == pytest.approx(np.mean(per_relation))
  # Two examples a relation: each relation's P@1 is 0, 50 or 100.
  assert set(per_relation) <= {0.0, 50.0, 100.0}
