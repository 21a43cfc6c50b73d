"""Shared test fixtures.

8 host devices are forced before JAX is imported anywhere, so sharded code is
exercised on CPU exactly as on an 8-chip slice (see optax's sharding tests).

One JAX persistent compilation cache serves a whole test run (every xdist
worker and every command a test starts inherit it through the environment):
many tests train the same tiny model, and on CPU compiling its step costs
several times more than running it. The cache starts empty for each run and is
removed after it; a JAX_COMPILATION_CACHE_DIR set by the user is used as is.

The tests' programs are tiny, so XLA's LLVM optimisation costs more than it saves:
JAX_DISABLE_MOST_OPTIMIZATIONS=1 (JAX's own switch for that case: LLVM at -O0 and
no expensive passes; the HLO passes, and so the sharding and the collectives, are
unchanged) is set for the run and inherited by every command a test starts. On
the tiny checkpoint's train step it cuts compilation from 15 s to 4 s with
dropout (threefry's masks) and from 4.5 s to 2.9 s without, for steps ~30% slower.
Results can differ from -O3's in the last bits (as on another CPU), and long
training amplifies that: demo_models_test, whose margins were measured fully
optimised, turns it off for itself.
Set it to 0 to test fully optimised code.

Orbax saves jax.Arrays without replica-parallel writing in the test run
(`_single_writer_saves`): on the 8 forced devices every replicated array is
otherwise cut into 8 slices, each slice op compiled for its shape and offset
(~3.4 s for the first save of a whole tiny T5 with its Adam moments; the
pretraining resume test went from 41 to 30 CPU-s). The checkpoint's values,
and what a restore returns, are the same either way; a real multi-device run
keeps orbax's default, as do the commands the tests start (most on one device,
where there is nothing to split).
"""
import contextlib
import os
import pathlib
import shutil
import sys
import tempfile

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

import pytest  # pylint: disable=g-import-not-at-top

_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
_created_cache_dir = None

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
TESTDATA = pathlib.Path(__file__).resolve().parent / 'testdata'


def pytest_configure(config):
  """Points JAX (here and in every subprocess) at this run's compilation cache."""
  del config
  global _created_cache_dir
  if _CACHE_ENV not in os.environ:  # Set: an xdist worker of this run, or the user's own cache.
    _created_cache_dir = tempfile.mkdtemp(prefix='prompt_recycling_tests_xla_cache_')
    os.environ[_CACHE_ENV] = _created_cache_dir
  # Programs that compile faster than this cost about as much to write and read back.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')
  if 'jax' in sys.modules:  # Imported early by a plugin: its flags already read the environment.
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', os.environ[_CACHE_ENV])
    jax.config.update('jax_persistent_cache_min_compile_time_secs',
                      float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
    jax.config.update('jax_disable_most_optimizations',
                      os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] not in ('0', 'false', 'False'))


@pytest.fixture(scope='session', autouse=True)
def _single_writer_saves():
  """jax.Arrays saved whole by one replica, not sliced over the replicas (module docstring)."""
  try:
    import jax  # pylint: disable=g-import-not-at-top
    from orbax.checkpoint import type_handlers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  type_handlers.register_type_handler(
      jax.Array, type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  # Left registered: the process ends with the test run.


def pytest_unconfigure(config):
  del config
  if _created_cache_dir:  # After the xdist workers, which the creating process outlives.
    shutil.rmtree(_created_cache_dir, ignore_errors=True)


def shared_path(*parts: str) -> pathlib.Path:
  """Path under ../shared/data, or skip the test with a reason if absent."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    pytest.skip(f'{path} is absent: these tests read the real data in ../shared/data '
                '(see its SOURCES.md); they skip in a checkout without it.')
  return path


@pytest.fixture(scope='session')
def tiny_config():
  """The T5Config of the real tiny T5X checkpoint (T5X's own test checkpoint; T5 1.1)."""
  from prompt_recycling.models import t5  # pylint: disable=g-import-not-at-top
  return t5.T5Config(vocab_size=32128, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8,
                     num_encoder_layers=2, num_decoder_layers=2,
                     mlp_activations=('gelu', 'linear'), logits_via_embedding=False,
                     relative_attention_num_buckets=4)


@pytest.fixture
def tiny_t5x_checkpoint() -> pathlib.Path:
  """The real T5X-format tiny T5 1.1 checkpoint (emb 4, 2 heads of 2, mlp 8, 2+2 layers)."""
  return shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')


@pytest.fixture(scope='session')
def tiny_prompted():
  """(steps, params, frozen): the real tiny checkpoint with a fixed 3-token prompt (scale 5)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from prompt_recycling import checkpoints, partitioning, prompts, trainer  # pylint: disable=g-import-not-at-top
  from prompt_recycling.models import t5  # pylint: disable=g-import-not-at-top
  params, config = checkpoints.load_params(str(shared_path('t5', 'test_t5_1_1_tiny',
                                                           'checkpoint_3')))
  steps = trainer.Steps(t5.T5(config), prompts.prompt_tuning(3), None, partitioning.make_mesh(1))
  frozen = steps.put_frozen(params)
  prompt = np.random.default_rng(0).normal(size=(3, config.emb_dim)).astype(np.float32) * 5
  return steps, trainer.put_on_mesh({'prompt': prompt}, steps.params_shardings), frozen


@pytest.fixture
def sentencepiece_model() -> pathlib.Path:
  return shared_path('t5', 'sentencepiece.model')


def read_sst2(n: int, split: str = 'train'):
  """The first `n` (sentence, label word) pairs of the real SST-2 release."""
  import csv  # pylint: disable=g-import-not-at-top
  rows = []
  with shared_path('sst2', f'{split}.tsv').open() as f:
    for row in csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE):
      rows.append((row['sentence'], ['negative', 'positive'][int(row['label'])]))
      if len(rows) == n:
        break
  return rows


@pytest.fixture(scope='session')
def t5_vocab():
  from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
  return vocabulary.get_vocabulary(str(shared_path('t5', 'sentencepiece.model')))


@pytest.fixture(scope='session')
def sst2_examples(t5_vocab):
  """32 real SST-2 training sentences in T5's text-to-text format, tokenized (EOS=1 appended)."""
  return [{'inputs': list(t5_vocab.encode(f'sst2 sentence: {s}')) + [1],
           'targets': list(t5_vocab.encode(label)) + [1],
           'targets_pretokenized': label}
          for s, label in read_sst2(32)]


@pytest.fixture(scope='session')
def tiny_frozen():
  """(T5Config, params) of the real tiny T5X checkpoint."""
  from prompt_recycling import checkpoints  # pylint: disable=g-import-not-at-top
  params, config = checkpoints.load_params(str(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')))
  return config, params


# Entry point module -> (its module path, the function its gin files configure).
ENTRY_POINTS = {'train': ('prompt_recycling.train', 'train'),
                'eval': ('prompt_recycling.eval', 'evaluate'),
                'infer': ('prompt_recycling.infer', 'infer'),
                'pretrain': ('prompt_recycling.pretrain', 'pretrain'),
                'lama_transfer': ('prompt_recycling.lama_transfer', 'run'),
                'weak_labels': ('prompt_recycling.weak_labels', 'weak_labels')}
_STAND_INS = {}


def entry_point_stand_in(module: str):
  """A gin configurable named like `module`'s function, with its real signature, that returns the
  keyword arguments gin gives it.

  One per process and entry point, shared by every test that parses an entry point's gin files:
  two configurables of one name would make the files' selectors (`evaluate.batch_size`)
  ambiguous. The real function is registered only by its command (`if __name__ == '__main__'`).
  """
  if module not in _STAND_INS:
    import importlib  # pylint: disable=g-import-not-at-top
    import inspect  # pylint: disable=g-import-not-at-top
    import gin  # pylint: disable=g-import-not-at-top
    path, name = ENTRY_POINTS[module]
    real = getattr(importlib.import_module(path), name)

    def record(**kwargs):
      return kwargs

    record.__signature__ = inspect.signature(real)
    record.__name__ = name
    _STAND_INS[module] = gin.configurable(name, module=f'stand_in_{module}')(record)
  return _STAND_INS[module]


@contextlib.contextmanager
def gin_parsed(module: str, flags):
  """Gin configured by `python -m prompt_recycling.<module>`'s `--gin_file=` / `--gin.NAME=VALUE`
  flags, as the command parses them (`gin_setup.parse`: the files, then the bindings), its
  function stood in for (`entry_point_stand_in`); cleared before and after."""
  entry_point_stand_in(module)
  import gin  # pylint: disable=g-import-not-at-top
  from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top
  files = [f[len('--gin_file='):] for f in flags if f.startswith('--gin_file=')]
  bindings = [f[len('--gin.'):] for f in flags if f.startswith('--gin.')]
  unknown = [f for f in flags if not f.startswith(('--gin_file=', '--gin.'))]
  if unknown:
    raise ValueError(f'gin_parsed takes --gin_file= and --gin. flags only, not {unknown}.')
  gin.clear_config()
  try:
    gin_setup.parse(files, bindings)
    yield
  finally:
    gin.clear_config()


def entry_point_arguments(module: str, flags) -> dict:
  """What `python -m prompt_recycling.<module> *flags` calls its function with, parsed in-process.

  For tests that need the command's behaviour (numbers, files) rather than its command line;
  each entry point keeps a test that runs it as a command. eval/infer first make their
  command's PROMPT_FILE check (`gin_setup.check_prompt_file_is_used`), as their `main` does.
  """
  fn = entry_point_stand_in(module)
  with gin_parsed(module, flags):
    if module in ('eval', 'infer'):
      from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top
      gin_setup.check_prompt_file_is_used()
    return fn()


@pytest.fixture
def restore_task_settings():
  """Undoes the `tasks` vocabulary / data source an in-process entry point points them at."""
  yield
  import tasks  # pylint: disable=g-import-not-at-top
  tasks.reset_data_source()
  tasks.set_vocabulary(None)
