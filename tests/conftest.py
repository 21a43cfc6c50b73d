"""Shared test fixtures.

8 host devices are forced before JAX is imported anywhere, so sharded code is
exercised on CPU exactly as on an 8-chip slice (see optax's sharding tests).
"""
import os
import pathlib

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
TESTDATA = pathlib.Path(__file__).resolve().parent / 'testdata'


def shared_path(*parts: str) -> pathlib.Path:
  """Path under ../shared/data, or skip the test with a reason if absent."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    pytest.skip(f'{path} is absent: these tests read the real data in ../shared/data '
                '(see its SOURCES.md); they skip in a checkout without it.')
  return path


@pytest.fixture
def tiny_t5x_checkpoint() -> pathlib.Path:
  """The real T5X-format tiny T5 1.1 checkpoint (emb 4, 2 heads of 2, mlp 8, 2+2 layers)."""
  return shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')


@pytest.fixture
def sentencepiece_model() -> pathlib.Path:
  return shared_path('t5', 'sentencepiece.model')
