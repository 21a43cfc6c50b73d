"""Every gin combination README.md and the gin headers name parses against the real entry points.

The combinations are read from the docs at test time (each `python -m
prompt_recycling.<entry point>` command with its `--gin_file`s, in README.md
and in the comment headers of gin_configs/**/*.gin), plus every model file with
the run files it is documented to go with. Each parses without
`skip_unknown` against a stand-in with the entry point's real signature (a
misspelt parameter fails), and calling it builds every configurable the files
reference (prompt method, optimizer, mesh), as the command would before
reading any checkpoint or data. eval/infer also run the command's PROMPT_FILE
check.
"""
import pathlib
import re

import pytest

gin = pytest.importorskip('gin')

from conftest import ENTRY_POINTS, REPO, entry_point_stand_in  # pylint: disable=g-import-not-at-top
VOCAB = REPO / 'prompt_recycling' / 'assets' / 't5' / 'sentencepiece.model'
# What the docs leave to the command line (`%gin.REQUIRED` or named as required).
BINDINGS = ["MODEL_DIR = '/tmp/unused'", "MIXTURE_OR_TASK_NAME = 'glue_sst2_v2'",
            "PROMPT_FILE = '/tmp/unused.npy'", "INFER_OUTPUT = '/tmp/unused.jsonl'",
            "CLASS_LABELS = ['negative', 'positive']", f"VOCABULARY_PATH = '{VOCAB}'",
            "CORPUS = ['/tmp/unused.jsonl.gz']", "OUTPUT_DIR = '/tmp/unused'", 'PROMPT_DIRS = {}',
            # Local Hugging Face directories (gin_configs/models/hf/, the families' LAMA grid).
            *[f"{m}_DIR = '/tmp/unused_{m.lower()}'" for m in (
                'BERT_BASE_CASED', 'ROBERTA_BASE', 'ALBERT_BASE_V2', 'GPT2', 'BERT_LARGE_CASED',
                'ROBERTA_LARGE', 'ALBERT_LARGE_V2', 'GPT2_MEDIUM')]]
# Given before the files: the *_lm100k_* model files set it, the others leave it to the user.
DEFAULTS = ["INITIAL_CHECKPOINT_PATH = '/tmp/unused_checkpoint'", "INIT_CHECKPOINT = '/tmp/unused_checkpoint'"]


def _commands(text):
  """(entry point, [gin files]) of each documented command in `text`."""
  out = []
  # Paragraphs (of comments, in gin files) and README's bullets.
  for block in re.split(r'\n\s*#?\s*\n|\n(?=- )', text):
    block = block.replace('`', ' ')
    modules = re.findall(r'prompt_recycling\.(\w+)', block)
    files = re.findall(r'--gin_file=(\S+?\.gin)', block)
    if not files:
      continue
    parts = re.split(r'(?:python -m )?prompt_recycling\.(\w+)', block)
    # One paragraph may hold several commands: split at each entry-point name.
    if len(modules) > 1 and len(parts) > 3:
      for module, rest in zip(parts[1::2], parts[2::2]):
        cmd_files = re.findall(r'--gin_file=(\S+?\.gin)', rest)
        if cmd_files:
          out.append((module, tuple(cmd_files)))
    elif modules:
      out.append((modules[0], tuple(files)))
  return [(m, f) for m, f in out if m in ENTRY_POINTS]


def _documented():
  combos = set(_commands((REPO / 'README.md').read_text()))
  for path in sorted((REPO / 'gin_configs').rglob('*.gin')):
    header = '\n'.join(line for line in path.read_text().splitlines() if line.startswith('#'))
    combos.update(_commands(header))
  models = REPO / 'gin_configs' / 'models'
  for model in sorted(models.glob('*_prompt.gin')):  # Incl. every *_lm100k_* file.
    for module, run in [('train', 'prompt_finetune'), ('eval', 'prompt_eval'),
                        ('infer', 'prompt_infer')]:
      combos.add((module, (f'gin_configs/models/{model.name}', f'gin_configs/runs/{run}.gin')))
  for model in sorted(models.glob('*_lpt.gin')):
    for module, run in [('train', 'lpt_finetune'), ('eval', 'prompt_eval'),
                        ('infer', 'prompt_infer')]:
      combos.add((module, (f'gin_configs/models/{model.name}', f'gin_configs/runs/{run}.gin')))
  for init in sorted((REPO / 'gin_configs' / 'prompts').glob('*.gin')):
    if init.name != 'from_file.gin':  # The eval/infer run files include it.
      combos.add(('train', ('gin_configs/models/t5_1_1_lm100k_base_prompt.gin',
                            f'gin_configs/prompts/{init.name}',
                            'gin_configs/runs/prompt_finetune.gin')))
  return sorted(combos)


COMBOS = _documented()


def test_the_docs_name_the_commands_this_test_expects():
  """The extraction itself: it finds README's commands and the gin headers' ones."""
  assert ('train', ('gin_configs/models/t5_1_1_lm100k_base_prompt.gin',
                    'gin_configs/runs/prompt_finetune.gin')) in COMBOS
  assert ('train', ('gin_configs/models/t5_1_1_base_lpt.gin',
                    'gin_configs/runs/lpt_finetune.gin')) in COMBOS
  assert ('pretrain', ('gin_configs/models/t5_1_1/mini.gin', 'gin_configs/runs/pretrain.gin')) in COMBOS
  assert ('train', ('gin_configs/models/hf/roberta_base.gin',
                    'gin_configs/runs/optiprompt_lama.gin')) in COMBOS
  assert ('lama_transfer', ('gin_configs/recycling/wu2024_lama_families.gin',)) in COMBOS
  assert len(COMBOS) > 40


@pytest.mark.parametrize('module,files', COMBOS, ids=lambda x: x if isinstance(x, str) else
                         '+'.join(pathlib.Path(f).stem for f in x))
def test_documented_combination_parses_against_the_real_signature(module, files):
  from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top
  for f in files:
    assert (REPO / f).is_file(), f'{f} is named in the docs but does not exist.'
  fn = entry_point_stand_in(module)  # Shared with the tests that run a command in-process.
  gin.clear_config()
  try:
    gin.parse_config(DEFAULTS)
    gin_setup.parse(list(files), BINDINGS)
    if module in ('eval', 'infer'):
      gin_setup.check_prompt_file_is_used()
    kwargs = fn()
    assert kwargs, files
    if 'prompt_method' in kwargs:
      assert callable(kwargs['prompt_method'].init)
    if '_lm100k_' in ' '.join(files):  # The public checkpoint, not the placeholder.
      assert kwargs['initial_checkpoint_path'].startswith('gs://t5-data/pretrained_models/t5x/')
  finally:
    gin.clear_config()
