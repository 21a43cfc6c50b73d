"""Gin for the entry points: what is configurable, and t5x's command-line habits.

Imported only by the entry points (`train`, `eval`, `infer`, `pretrain`,
`experiment`, `protocol`); the library itself never imports gin. Flags as in t5x:

  --gin_file=PATH (repeatable)  --gin.NAME=VALUE (repeatable)  --gin_search_paths=DIR,...

`--gin.MODEL_DIR="'/tmp/run'"` is rewritten to the binding `MODEL_DIR='/tmp/run'`.
Multi-host (Cloud TPU pods, multi-process GPU or CPU): every process runs the
same command with `--multihost`, which calls `jax.distributed.initialize()`
first (found automatically on TPU pods, Slurm and Open MPI; elsewhere give
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`).
Relative gin paths resolve against the current directory, then the search
paths, then this repository's root (so `gin_configs/...` works from anywhere).
"""
import pathlib
import sys
from typing import Any, Callable, Optional, Sequence

from absl import flags
import gin
import optax

from prompt_recycling import cli
from prompt_recycling import lpt
from prompt_recycling import optiprompt_run
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling import wayward
from prompt_recycling.models import encoder
from prompt_recycling.models import gpt2
from prompt_recycling.models import t5

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_GIN_FILES = flags.DEFINE_multi_string('gin_file', [], 'Gin config files, applied in order.')
_GIN_BINDINGS = flags.DEFINE_multi_string('gin_bindings', [], 'Gin bindings (also --gin.NAME=VALUE).')
_GIN_SEARCH_PATHS = flags.DEFINE_list('gin_search_paths', [], 'Directories searched for gin files.')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first '
                               '(Cloud TPU pods and multi-process GPU/CPU runs).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'With --multihost where it is not '
                                   'detected: HOST:PORT of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --coordinator_address.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --coordinator_address.')

# What a run varies (sizes, prompt, optimizer, mesh); not layers or factories.
gin.external_configurable(t5.T5Config, module='t5')
gin.external_configurable(encoder.EncoderConfig, module='encoder')
gin.external_configurable(gpt2.GPT2Config, module='gpt2')
gin.external_configurable(prompts.prompt_tuning, module='prompts')
gin.external_configurable(prompts.random_uniform, module='prompts')
gin.external_configurable(prompts.random_normal, module='prompts')
gin.external_configurable(prompts.sampled_vocab, module='prompts')
gin.external_configurable(prompts.from_file, module='prompts')
gin.external_configurable(trainer.adafactor, module='optim')
gin.external_configurable(optax.adam, module='optim')
gin.external_configurable(optax.adamw, module='optim')
gin.external_configurable(partitioning.make_mesh, module='partitioning')
gin.external_configurable(lpt.late_prompt_tuning, module='lpt')
gin.external_configurable(lpt.adamw, module='lpt')
gin.external_configurable(wayward.wayward_from_text, module='wayward')
gin.external_configurable(optiprompt_run.adamw, module='optiprompt_run')


@gin.configurable(module='prompts')
def from_class_labels(words: Sequence[str] = gin.REQUIRED, vocabulary_path: str = gin.REQUIRED,
                      population: int = 5000):
  """Class-label initialisation from label *words* (the gin-facing form).

  Each word is tokenised with the SentencePiece model at `vocabulary_path`
  (no EOS) and the rest of the prompt is sampled vocabulary.
  """
  from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
  vocab = vocabulary.get_vocabulary(vocabulary_path)
  ids = [list(vocab.encode(w)) for w in words]
  return prompts.class_labels(ids, prompts.sampled_vocab(population))


def _rewrite_gin_args(argv: Sequence[str]) -> list:
  """`--gin.NAME=VALUE` -> `--gin_bindings=NAME=VALUE` (t5x's convention)."""
  out = []
  for arg in argv:
    if arg.startswith('--gin.'):
      name, _, value = arg[len('--gin.'):].partition('=')
      out.append(f'--gin_bindings={name} = {value}')
    else:
      out.append(arg)
  return out


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          search_paths: Sequence[str] = ()) -> None:
  """Parses gin files then bindings, resolving relative paths as the module doc says."""
  for path in [*search_paths, str(REPO_ROOT)]:
    gin.add_config_file_search_path(path)
  missing = [f for f in gin_files
             if not any((pathlib.Path(d) / f).exists() for d in ['.', *search_paths, str(REPO_ROOT)])]
  if missing:
    raise FileNotFoundError(f'Gin file(s) not found: {missing}; searched ., {list(search_paths)} '
                            f'and {REPO_ROOT}.')
  gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=False)


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`cli.run(main)` after `--multihost`'s initialisation, t5x-style flags and parsing gin.

  A required gin macro left unbound (gin's RuntimeError) is a user mistake
  like any other: one line, exit status 2 (`cli`).
  """
  def wrapped(argv):
    if _MULTIHOST.value:
      import jax  # pylint: disable=g-import-not-at-top
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    parse(_GIN_FILES.value, _GIN_BINDINGS.value, _GIN_SEARCH_PATHS.value)
    try:
      main(argv)
    except RuntimeError as error:
      if 'Required bindings' not in str(error):
        raise
      raise ValueError(f'{error}: bind them in a gin file or with --gin.NAME=VALUE.') from error
  cli.run(wrapped, argv=_rewrite_gin_args(sys.argv))


def run_configurable(fn: Callable[..., Any]) -> None:
  """Runs `fn` as a program whose keyword arguments all come from gin (`run`).

  `fn` is registered under its own name before the gin files are parsed, so
  they bind it as `fn.__name__.arg = ...` (e.g. `run.output_dir`).
  """
  configurable = gin.configurable(fn)

  def main(argv):
    del argv
    unbound = required_left_unbound(configurable)
    if unbound:
      raise ValueError(f'Required gin bindings are missing: {", ".join(unbound)}; bind them in a '
                       'gin file or with --gin.NAME=VALUE.')
    configurable()
  run(main)


def required_left_unbound(configurable: Callable[..., Any]) -> list:
  """Where `configurable`'s gin arguments still hold %gin.REQUIRED, nested values included.

  gin itself refuses a REQUIRED argument only at the top level; a macro such as
  `MODEL_C = %gin.REQUIRED` used inside a dict (`run.models = {'C': {'path':
  %MODEL_C}}`) would reach the program as gin's sentinel object. Returns
  descriptions such as "MODEL_C (in run.models['C']['path'])".
  """
  name = getattr(configurable, '__name__', 'fn')
  resolved = gin.get_bindings(configurable)
  raw = gin.get_bindings(configurable, resolve_references=False)
  found = []

  def walk(value, source, path):
    if value is gin.REQUIRED:
      macro = str(source).lstrip('%') if isinstance(source, gin.config.ConfigurableReference) else None
      found.append(f'{macro} (in {path})' if macro else path)
    elif isinstance(value, dict):
      for k, v in value.items():
        walk(v, source.get(k) if isinstance(source, dict) else None, f'{path}[{k!r}]')
    elif isinstance(value, (list, tuple)):
      for i, v in enumerate(value):
        inner = source[i] if isinstance(source, (list, tuple)) and i < len(source) else None
        walk(v, inner, f'{path}[{i}]')

  for arg, value in resolved.items():
    walk(value, raw.get(arg), f'{name}.{arg}')
  return found


def check_prompt_file_is_used() -> None:
  """Refuses a PROMPT_FILE that another binding overrides, before anything is scored.

  gin keeps the last binding: a `models/*_prompt.gin` file given after
  `runs/prompt_eval.gin` (or `prompt_infer.gin`) rebinds the prompt's
  initialiser to sampled vocabulary, and eval/infer would silently score a
  random prompt instead of the file.
  """
  try:
    path = gin.query_parameter('%PROMPT_FILE')
    init = gin.query_parameter('prompts.prompt_tuning.init')
  except ValueError:  # No prompt file, or not a prompt-tuning method (e.g. LPT).
    return
  name = getattr(getattr(init, 'configurable', None), 'name', None)
  if name != 'from_file':
    raise ValueError(
        f'PROMPT_FILE={path!r} is set, but prompts.prompt_tuning.init is bound to {name!r} by a '
        'gin file given after the one that reads the file: pass the model gin file '
        '(models/*_prompt.gin) before runs/prompt_eval.gin / runs/prompt_infer.gin.')


def write_operative_config(model_dir: Optional[str]) -> None:
  """Saves the configuration actually used to MODEL_DIR/config.gin (as t5x does)."""
  import jax  # pylint: disable=g-import-not-at-top
  if model_dir and jax.process_index() == 0:
    path = pathlib.Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / 'config.gin').write_text(gin.operative_config_str())
