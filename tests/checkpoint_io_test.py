"""`checkpoints.py` on the real tiny T5X checkpoint, damaged copies of it, and HF directories.

The tiny checkpoint (`../shared/data/t5/test_t5_1_1_tiny/checkpoint_3`, T5X's
own test checkpoint: T5 1.1, emb 4, 2 heads of 2, mlp 8, 2+2 layers, 4
relative position buckets) is the ground truth for the T5X layout; tests that
damage it work on a copy in tmp_path. Hugging Face directories are written by
`transformers` itself.
"""
import dataclasses
import os
import pathlib
import shutil
import stat

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from conftest import shared_path
from prompt_recycling import checkpoints
from prompt_recycling.models import t5

TINY_CONFIG = t5.T5Config(
    vocab_size=32128, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8, num_encoder_layers=2,
    num_decoder_layers=2, mlp_activations=('gelu', 'linear'), logits_via_embedding=False,
    relative_attention_num_buckets=4)
EMBEDDING = 'token_embedder/embedding'


def _flat(tree):
  """{'a': {'b': x}} -> {'a/b': x}."""
  return flax.traverse_util.flatten_dict(tree, sep='/')


def _assert_trees_identical(actual, expected):
  """Same paths, dtypes, shapes and bits."""
  actual, expected = _flat(actual), _flat(expected)
  assert sorted(actual) == sorted(expected)
  for path, value in expected.items():
    assert actual[path].dtype == value.dtype, path
    np.testing.assert_array_equal(actual[path], value, err_msg=path)


def _writable_copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  """Copies a (read-only) checkpoint directory so the test may damage it."""
  shutil.copytree(src, dst)
  for root, dirs, files in os.walk(dst):
    for name in dirs + files:
      path = os.path.join(root, name)
      os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
  os.chmod(dst, os.stat(dst).st_mode | stat.S_IWUSR)
  return dst


@pytest.fixture(scope='module')
def tiny():
  """(params, config) of the real tiny checkpoint, read once for the module."""
  return checkpoints.load_params(str(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3')))


# --- The real T5X checkpoint --------------------------------------------------

def test_tiny_checkpoint_loads_with_its_sizes(tiny_t5x_checkpoint, tiny):
  params, config = tiny
  assert config == TINY_CONFIG
  checkpoints.validate_params(params, config, str(tiny_t5x_checkpoint))
  flat = _flat(params)
  assert flat[EMBEDDING].shape == (32128, 4)
  assert flat['decoder/logits_dense/kernel'].shape == (4, 32128)
  assert flat['encoder/relpos_bias/rel_embedding'].shape == (2, 4)
  assert all(v.dtype == np.float32 for v in flat.values())
  # A trained checkpoint, not zeros: every array carries values.
  assert all(np.abs(v).max() > 0 for v in flat.values())

  tokens = jnp.asarray([[37, 1728, 19, 1], [100, 5, 1, 0]], jnp.int32)
  logits = jax.jit(t5.T5(config).apply)({'params': params}, tokens, jnp.zeros((2, 3), jnp.int32))
  assert logits.shape == (2, 3, 32128)
  assert np.isfinite(np.asarray(logits)).all()


def test_config_from_params_reads_the_sizes(tiny):
  params, _ = tiny
  assert checkpoints.config_from_params(params) == TINY_CONFIG
  with pytest.raises(checkpoints.CheckpointError, match='Cannot infer a T5 config'):
    checkpoints.config_from_params({'encoder': params['encoder']})


def test_model_dir_reads_its_latest_checkpoint(tiny_t5x_checkpoint, tiny, tmp_path):
  params, config = tiny
  from_parent, parent_config = checkpoints.load_params(str(tiny_t5x_checkpoint.parent))
  _assert_trees_identical(from_parent, params)
  assert parent_config == config

  # Steps compare as numbers (20 > 3); unfinished saves are not checkpoints.
  model_dir = tmp_path / 'model'
  _writable_copy(tiny_t5x_checkpoint, model_dir / 'checkpoint_3')
  doubled = jax.tree.map(lambda x: x * 2, params)
  checkpoints.save_t5x(doubled, str(model_dir), step=20)
  (model_dir / 'checkpoint_100.tmp').mkdir()  # A save that was interrupted.
  (model_dir / 'checkpoint_50').mkdir()  # No msgpack file in it.
  latest, _ = checkpoints.load_params(str(model_dir))
  _assert_trees_identical(latest, doubled)


@pytest.mark.parametrize('name', ['directory', 'trailing_slash', 'msgpack_file', 'file_url',
                                  'model_dir', 'model_dir_url'])
def test_every_way_of_naming_the_checkpoint_reads_it(tiny_t5x_checkpoint, tiny, name):
  model_dir = tiny_t5x_checkpoint.parent
  path = {'directory': str(tiny_t5x_checkpoint),
          'trailing_slash': f'{tiny_t5x_checkpoint}/',
          'msgpack_file': str(tiny_t5x_checkpoint / 'checkpoint'),
          # A URL goes through tensorstore's kvstores, the code path of gs://.
          'file_url': f'file://{tiny_t5x_checkpoint}',
          'model_dir': str(model_dir),  # Its latest checkpoint_N.
          'model_dir_url': f'file://{model_dir}/'}[name]
  params, config = checkpoints.load_params(path)
  assert config == tiny[1]
  _assert_trees_identical(params, tiny[0])


# --- Our writer ---------------------------------------------------------------

def test_save_t5x_round_trip_is_bit_identical(tiny, tmp_path):
  params, config = tiny
  path = checkpoints.save_t5x(params, str(tmp_path), step=7)
  assert path == str(tmp_path / 'checkpoint_7')
  assert sorted(os.listdir(tmp_path)) == ['checkpoint_7']  # No temporary left behind.
  # Big arrays as zarr directories beside the msgpack, small ones inline.
  assert (tmp_path / 'checkpoint_7' / 'target.token_embedder.embedding' / '.zarray').is_file()
  assert not (tmp_path / 'checkpoint_7' / 'target.encoder.encoder_norm.scale').exists()

  loaded, loaded_config = checkpoints.load_params(path)
  assert loaded_config == config
  _assert_trees_identical(loaded, params)


def test_save_t5x_in_bfloat16_reads_back_bfloat16(tiny, tmp_path):
  params, config = tiny
  path = checkpoints.save_t5x(params, str(tmp_path), step=1, dtype='bfloat16')
  loaded, loaded_config = checkpoints.load_params(path)
  assert loaded_config == config
  _assert_trees_identical(loaded, jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), params))
  embedding_dir = pathlib.Path(path) / 'target.token_embedder.embedding'
  assert sum(f.stat().st_size for f in embedding_dir.iterdir()) < 32128 * 4 * 2 + 4096


@pytest.mark.parametrize('layout', ['optimizer_target', 'top_level_target'])
def test_inline_only_checkpoint_loads(tiny, tmp_path, layout):
  """T5X's older layout: every array inside the msgpack file, no zarr directories."""
  params, config = tiny
  tree = {'optimizer': {'target': params}} if layout == 'optimizer_target' else {'target': params}
  (tmp_path / 'checkpoint').write_bytes(flax.serialization.msgpack_serialize(tree))
  loaded, loaded_config = checkpoints.load_params(str(tmp_path))
  assert loaded_config == config
  _assert_trees_identical(loaded, params)


# --- Partial reads and damaged copies -------------------------------------------

def test_partial_load_opens_only_the_requested_arrays(tiny_t5x_checkpoint, tiny, tmp_path):
  params, _ = tiny
  damaged = _writable_copy(tiny_t5x_checkpoint, tmp_path / 'checkpoint_3')
  shutil.rmtree(damaged / 'target.encoder.layers_0.mlp.wo.kernel')

  partial, config = checkpoints.load_params(str(damaged), only=[EMBEDDING])
  assert config is None
  assert _flat(partial).keys() == {EMBEDDING}
  np.testing.assert_array_equal(partial['token_embedder']['embedding'],
                                params['token_embedder']['embedding'])
  np.testing.assert_array_equal(checkpoints.load_token_embedding(str(damaged)),
                                params['token_embedder']['embedding'])

  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.load_params(str(damaged))
  assert "'encoder/layers_0/mlp/wo/kernel'" in str(error.value)
  assert str(damaged / 'target.encoder.layers_0.mlp.wo.kernel') in str(error.value)


def test_only_naming_no_parameter_is_refused(tiny_t5x_checkpoint):
  with pytest.raises(checkpoints.CheckpointError, match="has no parameter 'encoder/layers_9'"):
    checkpoints.load_params(str(tiny_t5x_checkpoint), only=['encoder/layers_9'])


@pytest.mark.parametrize('damage', ['truncated', 'missing'])
def test_damaged_chunk_is_refused_naming_the_parameter(tiny_t5x_checkpoint, tmp_path, damage):
  damaged = _writable_copy(tiny_t5x_checkpoint, tmp_path / 'checkpoint_3')
  chunk = damaged / 'target.token_embedder.embedding' / '3.0'
  if damage == 'truncated':
    chunk.write_bytes(chunk.read_bytes()[:1000])
  else:
    chunk.unlink()  # tensorstore alone would read the rows as zeros.
  for only in (None, [EMBEDDING]):
    with pytest.raises(checkpoints.CheckpointError, match=f"parameter '{EMBEDDING}'"):
      checkpoints.load_params(str(damaged), only=only)
  # The other arrays are intact and still read.
  encoder, _ = checkpoints.load_params(str(damaged), only=['encoder'])
  assert 'layers_1' in encoder['encoder']


def test_validate_params_names_the_parameter_and_both_shapes(tiny):
  params, _ = tiny
  wider = dataclasses.replace(TINY_CONFIG, emb_dim=8)
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.validate_params(params, wider, 'tiny_checkpoint')
  message = str(error.value)
  assert message.startswith('tiny_checkpoint')
  # "parameter 'P' has shape F, but the configured model expects E".
  name = message.split("parameter '", 1)[1].split("'", 1)[0]
  found = tuple(_flat(params)[name].shape)
  expected = checkpoints._expected_shapes(wider)[name]  # pylint: disable=protected-access
  assert 8 in expected and 4 in found
  assert f'has shape {found}, but the configured model expects {expected}' in message


def test_validate_params_names_missing_parameters(tiny):
  params, config = tiny
  without_head = {**params, 'decoder': {k: v for k, v in params['decoder'].items()
                                        if k != 'logits_dense'}}
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"^x does not match .* missing \['decoder/logits_dense/kernel'\]"):
    checkpoints.validate_params(without_head, config, 'x')


def test_unknown_layout_is_refused(tmp_path):
  (tmp_path / 'notes.txt').write_text('not a checkpoint')
  with pytest.raises(checkpoints.CheckpointError, match='Unknown checkpoint layout'):
    checkpoints.load_params(str(tmp_path))
  with pytest.raises(checkpoints.CheckpointError, match='the path does not exist'):
    checkpoints.load_params(str(tmp_path / 'absent'))


# --- Hugging Face directories -------------------------------------------------

@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
  """(model, directory) of a tiny random HF T5 1.1 (untied output layer), safetensors."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=40, d_model=8, d_kv=4, d_ff=12, num_layers=2, num_heads=2,
      feed_forward_proj='gated-gelu', tie_word_embeddings=False, dropout_rate=0.0)
  model = transformers.T5ForConditionalGeneration(config).eval()
  model.lm_head.weight = torch.nn.Parameter(torch.randn(40, 8))  # Untied (transformers 5 ties).
  directory = tmp_path_factory.mktemp('hf')
  model.save_pretrained(directory)
  return model, directory


def test_hf_partial_load_and_token_embedding(hf_dir):
  model, directory = hf_dir
  full, config = checkpoints.load_params(str(directory))
  assert config.emb_dim == 8 and config.vocab_size == 40 and not config.logits_via_embedding
  encoder, partial_config = checkpoints.load_params(str(directory), only=['encoder'])
  assert partial_config == config  # HF configs come from config.json, partial or not.
  assert encoder.keys() == {'encoder'}
  _assert_trees_identical(encoder['encoder'], full['encoder'])

  shared = model.shared.weight.detach().numpy()
  embedding = checkpoints.load_token_embedding(str(directory))
  assert embedding.dtype == np.float32
  np.testing.assert_array_equal(embedding, shared)
  # The untied output layer is lm_head, not the embedding.
  np.testing.assert_array_equal(full['decoder']['logits_dense']['kernel'],
                                model.lm_head.weight.detach().numpy().T)


def test_hf_dir_without_config_json_is_refused(hf_dir, tmp_path):
  _, directory = hf_dir
  shutil.copy(directory / 'model.safetensors', tmp_path)
  with pytest.raises(checkpoints.CheckpointError, match='config.json'):
    checkpoints.load_params(str(tmp_path))
