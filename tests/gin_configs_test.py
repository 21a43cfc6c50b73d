"""The recycling gin configs parse against the functions they configure and name real files."""
import json
import re
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
pytest.importorskip('gin')

_QUERY = """
import inspect, json, sys
import gin
from prompt_recycling import gin_setup
from prompt_recycling import {module} as lib

def run(**kwargs):  # Records what gin passes, instead of running the experiment.
  print(json.dumps(kwargs, default=str))

run.__signature__ = inspect.signature(lib.run)  # gin checks bindings against the real signature.
run = gin.configurable(run)
gin_setup.parse([sys.argv[1]], sys.argv[2:])
run()
"""


def _parse(module, gin_file, *bindings):
  result = subprocess.run(
      [sys.executable, '-c', _QUERY.format(module=module), str(REPO / gin_file), *bindings],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_protocol_mini_binds_the_shipped_models_and_every_recycler():
  bound = _parse('protocol', 'gin_configs/recycling/protocol_mini.gin',
                 "OUTPUT_DIR = '/tmp/x'", "TASK = 'imdb_reviews'", 'INPUTS_LENGTH = 256')
  assert bound['source'] == 'A' and bound['targets'] == ['B', 'C']
  assert bound['task'] == 'imdb_reviews'  # Macros reach the call.
  assert bound['task_feature_lengths'] == {'inputs': 256, 'targets': 4}
  for name in ('A', 'B', 'C'):  # The shipped models.
    assert (REPO / bound['models'][name]['path'] / 'checkpoint').is_file(), bound['models'][name]
  from prompt_recycling import recycling  # pylint: disable=g-import-not-at-top
  assert {r['name'] for r in bound['recyclers'].values()} == set(recycling.recycler_names())


def test_lm100k_experiment_config_binds_the_public_checkpoints():
  bound = _parse('experiment', 'gin_configs/recycling/lm100k_base_to_large_sst2.gin',
                 "OUTPUT_DIR = '/tmp/x'", "BASE_PROMPTS = ['/tmp/p.npy']")
  assert bound['sources'][0]['path'].startswith('gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_base')
  assert bound['targets'][0]['path'].startswith('gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_large')
  assert (REPO / bound['vocabulary_path']).is_file()  # The tasks need no environment variable.
  # The released sst2.npy evaluates on its taskless format, ranked as the recycling paper.
  assert (bound['task'], bound['split'], bound['mode']) == ('glue_sst2_v2_taskless', 'test', 'rank')


_EVALUATED = sorted([*REPO.glob('gin_configs/recycling/*.gin'), *REPO.glob('gin_configs/runs/*.gin'),
                     *REPO.glob('gin_configs/models/*_prompt.gin'),
                     *REPO.glob('gin_configs/models/*_lpt.gin')])


@pytest.mark.parametrize('path', _EVALUATED, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_config_header_says_how_the_paper_evaluated(path):
  """Each run, recycling and model+method file says which evaluation mode its paper used."""
  header = []
  for line in path.read_text().splitlines():
    if not line.startswith('#'):
      break
    header.append(line)
  evaluation = [l for l in header if re.match(r'#\s+Evaluation:', l)]
  assert len(evaluation) == 1, f'{path}: no "# Evaluation:" line in the header comment'
  text = ' '.join(header)
  if 'none' not in evaluation[0]:
    assert re.search(r"rank|decod|P@1", text), path


def test_a_required_macro_nested_in_a_dict_is_named_not_passed_on(tmp_path):
  # MODEL_C = %gin.REQUIRED sits inside run.models = {'C': {'path': %MODEL_C}}: gin
  # would hand the program its sentinel object; the entry point names the macro.
  result = subprocess.run(
      [sys.executable, '-m', 'prompt_recycling.protocol',
       '--gin_file=gin_configs/recycling/protocol_mini.gin', f"--gin.OUTPUT_DIR='{tmp_path}'",
       '--gin.MODEL_C=%gin.REQUIRED'],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  error = result.stderr.strip().splitlines()[-1]
  assert error.startswith('error: Required gin bindings are missing: '
                          "MODEL_C (in run.models['C']['path'])"), error
  assert 'Traceback' not in result.stderr
  assert not any(tmp_path.iterdir())  # Nothing was tuned.
