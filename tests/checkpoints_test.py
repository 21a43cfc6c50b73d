"""Checkpoint reading and writing on the real tiny T5X checkpoint and small HF models.

The T5X checkpoint is the real one in ../shared/data (emb 4, 2 heads of 2, mlp
8, 2+2 layers, 4 relative-position buckets, vocab 32128; small arrays inline in
the msgpack, the rest zarr). Damaged checkpoints are damaged copies of it.
"""
import copy
import dataclasses
import gzip
import itertools
import json
import os
import pathlib
import shutil

import flax.serialization
import flax.traverse_util
import jax
import ml_dtypes
import msgpack
import numpy as np
import pytest

from conftest import shared_path
from prompt_recycling import checkpoints
from prompt_recycling.models import t5

EMBEDDING = 'token_embedder/embedding'


def _flat(tree):
  return {'/'.join(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_trees_equal(a, b):
  fa, fb = _flat(a), _flat(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype, k
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def _writable_copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  """Copies a (read-only) checkpoint dir so the test may damage it."""
  shutil.copytree(src, dst, copy_function=shutil.copyfile)
  for root, dirs, _ in os.walk(dst):
    for d in dirs:
      os.chmod(os.path.join(root, d), 0o755)
  os.chmod(dst, 0o755)
  return dst


@pytest.fixture
def tiny(tiny_frozen):
  """(params, config) of the real tiny checkpoint (conftest reads it once)."""
  config, params = tiny_frozen
  return params, config


# --- The real T5X checkpoint -----------------------------------------------------------

def test_real_tiny_checkpoint_loads_with_inferred_config(tiny, tiny_config):
  params, config = tiny
  assert config == tiny_config
  assert config == checkpoints.config_from_params(params)
  checkpoints.validate_params(params, config, 'tiny')  # Exactly T5(config)'s tree and shapes.
  assert params['encoder']['layers_0']['attention']['query']['kernel'].shape == (4, 4)
  assert params['encoder']['relpos_bias']['rel_embedding'].shape == (2, 4)
  assert params['decoder']['logits_dense']['kernel'].shape == (4, 32128)
  assert all(v.dtype == np.float32 for v in _flat(params).values())
  # The embedding table is the one the prompt-tuning repo ships as a test array.
  np.testing.assert_array_equal(params['token_embedder']['embedding'],
                                np.load(shared_path('t5', 'tiny_embeddings_32128x4.npy')))


def _raw_t5x_arrays(ckpt: pathlib.Path):
  """{'encoder/layers_0/...': array} of a T5X checkpoint, read without `checkpoints.py`.

  Inline arrays come from the msgpack file; each zarr v2 array is assembled from
  its gzip chunk files with numpy alone.
  """
  state = flax.serialization.msgpack_restore((ckpt / 'checkpoint').read_bytes())
  flat = flax.traverse_util.flatten_dict(state['optimizer']['target'], sep='/')
  arrays = {k: v for k, v in flat.items() if isinstance(v, np.ndarray)}
  for directory in ckpt.glob('target.*'):
    meta = json.loads((directory / '.zarray').read_text())
    assert (meta['compressor']['id'], meta['order'], meta['filters']) == ('gzip', 'C', None)
    dtype, shape, chunks = np.dtype(meta['dtype']), meta['shape'], meta['chunks']
    full = np.empty(shape, dtype)
    for index in itertools.product(*[range(-(-s // c)) for s, c in zip(shape, chunks)]):
      chunk = np.frombuffer(gzip.decompress((directory / '.'.join(map(str, index))).read_bytes()),
                            dtype).reshape(chunks)
      where = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape))
      full[where] = chunk[tuple(slice(0, w.stop - w.start) for w in where)]
    arrays[directory.name[len('target.'):].replace('.', '/')] = full
  return arrays


def _hf_state_dict(w):
  """A T5X T5 1.1 tree (flat, '/'-joined) as Hugging Face's T5 state dict, written out by hand."""
  sd = {'shared.weight': w['token_embedder/embedding'],
        'lm_head.weight': w['decoder/logits_dense/kernel'].T}
  attention = (('query', 'q'), ('key', 'k'), ('value', 'v'), ('out', 'o'))
  blocks = {'encoder': [('attention', 'pre_attention_layer_norm', 'SelfAttention')],
            'decoder': [('self_attention', 'pre_self_attention_layer_norm', 'SelfAttention'),
                        ('encoder_decoder_attention', 'pre_cross_attention_layer_norm',
                         'EncDecAttention')]}
  for stack in ('encoder', 'decoder'):
    sd[f'{stack}.embed_tokens.weight'] = w['token_embedder/embedding']
    sd[f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'] = (
        w[f'{stack}/relpos_bias/rel_embedding'].T)
    sd[f'{stack}.final_layer_norm.weight'] = w[f'{stack}/{stack}_norm/scale']
    for i in range(2):
      ours, theirs = f'{stack}/layers_{i}', f'{stack}.block.{i}.layer'
      for j, (name, norm, hf_name) in enumerate(blocks[stack]):
        sd[f'{theirs}.{j}.layer_norm.weight'] = w[f'{ours}/{norm}/scale']
        for o, h in attention:
          sd[f'{theirs}.{j}.{hf_name}.{h}.weight'] = w[f'{ours}/{name}/{o}/kernel'].T
      j = len(blocks[stack])
      sd[f'{theirs}.{j}.layer_norm.weight'] = w[f'{ours}/pre_mlp_layer_norm/scale']
      for m in ('wi_0', 'wi_1', 'wo'):
        sd[f'{theirs}.{j}.DenseReluDense.{m}.weight'] = w[f'{ours}/mlp/{m}/kernel'].T
  return sd


def test_real_tiny_checkpoint_matches_an_independent_read_and_hugging_face(tiny):
  """Every array equals a raw read of the files, and the forward pass equals HF T5's on them.

  The HF model gets its weights from the raw read, not from our loader, so a
  transposed square kernel (the attention kernels here are 4 x 4) or a
  mis-named array fails either check.
  """
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  params, config = tiny
  raw = _raw_t5x_arrays(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3'))
  flat = _flat(params)
  assert sorted(flat) == sorted(raw) and len(raw) == 52
  for name, value in raw.items():
    np.testing.assert_array_equal(flat[name], value, err_msg=name)

  torch.set_num_threads(1)
  hf = transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=32128, d_model=4, d_kv=2, num_heads=2, d_ff=8, num_layers=2, num_decoder_layers=2,
      feed_forward_proj='gated-gelu', tie_word_embeddings=False, relative_attention_num_buckets=4,
      relative_attention_max_distance=128, dropout_rate=0.0, decoder_start_token_id=0,
      pad_token_id=0, eos_token_id=1)).eval()
  hf.lm_head.weight = torch.nn.Parameter(torch.zeros(32128, 4))  # Untied (transformers 5 ties).
  missing, unexpected = hf.load_state_dict(
      {k: torch.from_numpy(np.array(v)) for k, v in _hf_state_dict(raw).items()}, strict=False)
  assert not missing and not unexpected, (missing, unexpected)
  assert hf.lm_head.weight.data_ptr() != hf.shared.weight.data_ptr()

  enc = np.asarray([[37, 1712, 3, 9, 1, 0, 0], [8774, 296, 55, 1, 0, 0, 0]], np.int32)
  dec = np.asarray([[0, 37, 1712], [0, 8774, 296]], np.int32)
  with torch.no_grad():
    expected = hf(input_ids=torch.from_numpy(enc).long(),
                  attention_mask=torch.from_numpy(enc > 0).long(),
                  decoder_input_ids=torch.from_numpy(dec).long()).logits.numpy()
  logits = np.asarray(jax.jit(t5.T5(config).apply)({'params': params}, enc, dec))
  assert logits.shape == expected.shape == (2, 3, 32128)
  assert expected.std(-1).min() > 0.5  # The reference separates the tokens at every position.
  # Measured 2e-6; scaling one MLP kernel by 1% moves these logits by 1e-2.
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


def test_latest_of_several_checkpoints_is_read(tiny, tmp_path):
  params, _ = tiny
  checkpoints.save_t5x(params, str(tmp_path), 3)
  later = jax.tree.map(lambda x: x + 1, params)
  checkpoints.save_t5x(later, str(tmp_path), 12)  # 12 > 3 although '12' < '3' as text.
  (tmp_path / 'checkpoint_20.tmp').mkdir()  # An unfinished save is not a checkpoint.
  (tmp_path / 'checkpoint_50').mkdir()  # Nor is a directory without its msgpack file.
  _assert_trees_equal(checkpoints.load_params(str(tmp_path))[0], later)


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
  _assert_trees_equal(params, tiny[0])


def test_gs_paths_become_gcs_kvstores():
  # No bucket is reachable here; the spec handed to tensorstore is what gs:// needs.
  assert checkpoints._kvstore('gs://t5-data/pretrained_models/t5x/checkpoint_1/') == {
      'driver': 'gcs', 'bucket': 't5-data', 'path': 'pretrained_models/t5x/checkpoint_1/'}


def test_raw_msgpack_of_the_real_checkpoint_mixes_inline_and_zarr():
  """Guards the assumption the reader is built on (T5X's two kinds of leaves)."""
  raw = (shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3') / 'checkpoint').read_bytes()
  state = msgpack.unpackb(raw, raw=False, ext_hook=lambda code, data: ('ext', code))
  target = state['optimizer']['target']
  assert target['encoder']['encoder_norm']['scale'] == ('ext', 1)  # Inline ndarray.
  assert target['token_embedder']['embedding']['kvstore'] == {
      'driver': 'gfile', 'path': 'target.token_embedder.embedding'}


# --- Writing -------------------------------------------------------------------------

def test_save_then_load_is_identical(tiny, tmp_path):
  params, config = tiny
  path = checkpoints.save_t5x(params, str(tmp_path / 'model'), 7,
                              optimizer_state={'m': np.arange(3.0)})
  assert path == str(tmp_path / 'model' / 'checkpoint_7')
  loaded, loaded_config = checkpoints.load_params(path)
  _assert_trees_equal(loaded, params)
  assert loaded_config == config
  # T5X's layout: big arrays are zarr specs with a relative path, small ones inline.
  state = flax.serialization.msgpack_restore((pathlib.Path(path) / 'checkpoint').read_bytes())
  assert state['version'] == 3 and int(state['optimizer']['state']['step']) == 7
  np.testing.assert_array_equal(state['optimizer']['state']['param_states']['m'], np.arange(3.0))
  target = state['optimizer']['target']
  spec = target['token_embedder']['embedding']
  assert spec['driver'] == 'zarr' and spec['kvstore'] == {
      'driver': 'file', 'path': 'target.token_embedder.embedding'}
  assert spec['metadata']['shape'] == [32128, 4]
  assert (pathlib.Path(path) / 'target.token_embedder.embedding' / '.zarray').is_file()
  assert isinstance(target['encoder']['encoder_norm']['scale'], np.ndarray)
  assert not list(tmp_path.glob('model/*.tmp'))


def test_save_in_bfloat16_reads_back_bfloat16(tiny, tmp_path):
  params, _ = tiny
  path = checkpoints.save_t5x(params, str(tmp_path), 1, dtype='bfloat16')
  loaded, _ = checkpoints.load_params(path)
  expected = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), params)
  _assert_trees_equal(loaded, expected)  # Zarr and inline arrays alike.
  np.testing.assert_allclose(checkpoints.load_token_embedding(path),
                             params['token_embedder']['embedding'], rtol=1e-2)


@pytest.mark.parametrize('root', ['optimizer', 'top_level'])
def test_old_layout_with_every_array_inline(tiny, tmp_path, root):
  params, _ = tiny
  (tmp_path / 'checkpoint_1').mkdir()
  state = ({'version': 2, 'optimizer': {'target': params, 'state': {'step': np.int32(1)}}}
           if root == 'optimizer' else {'target': params})
  (tmp_path / 'checkpoint_1' / 'checkpoint').write_bytes(flax.serialization.msgpack_serialize(state))
  loaded, config = checkpoints.load_params(str(tmp_path))
  _assert_trees_equal(loaded, params)
  assert config == tiny[1]


def test_t5x_specs_written_on_gcs_read_from_a_local_copy(tiny, tmp_path):
  """T5X on gs:// writes {'kvstore': {'driver': 'gcs', 'bucket': <placeholder>}, 'path': ...}."""
  ckpt = _writable_copy(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3'), tmp_path / 'ckpt')
  state = flax.serialization.msgpack_restore((ckpt / 'checkpoint').read_bytes())

  def to_gcs(x):
    if checkpoints._is_ts_spec(x):
      return {'driver': 'zarr', 'kvstore': {'driver': 'gcs', 'bucket': 't5x-dummy-bucket'},
              'path': x['kvstore']['path'], 'metadata': x['metadata']}
    return {k: to_gcs(v) for k, v in x.items()} if isinstance(x, dict) else x

  (ckpt / 'checkpoint').write_bytes(flax.serialization.msgpack_serialize(to_gcs(state)))
  _assert_trees_equal(checkpoints.load_params(str(ckpt))[0], tiny[0])


# --- Partial loading -----------------------------------------------------------------

def test_only_reads_the_named_arrays(tiny, tmp_path):
  ckpt = _writable_copy(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3'), tmp_path / 'ckpt')
  shutil.rmtree(ckpt / 'target.encoder.layers_0.mlp.wi_0.kernel')  # An array we do not ask for.
  params, config = checkpoints.load_params(str(ckpt), only=[EMBEDDING])
  assert config is None  # A partial T5X tree cannot tell the model's sizes.
  assert list(_flat(params)) == [EMBEDDING]
  np.testing.assert_array_equal(params['token_embedder']['embedding'],
                                tiny[0]['token_embedder']['embedding'])
  np.testing.assert_array_equal(checkpoints.load_token_embedding(str(ckpt)),
                                tiny[0]['token_embedder']['embedding'])
  # A prefix selects a subtree (layers_1, not layers_10 style neighbours).
  sub, _ = checkpoints.load_params(str(ckpt), only=['encoder/layers_1/'])
  assert set(_flat(sub)) == {p for p in _flat(tiny[0]) if p.startswith('encoder/layers_1/')}
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"'encoder/layers_0/mlp/wi_0/kernel'.*target\.encoder\.layers_0\.mlp"
                           r"\.wi_0\.kernel.*missing or corrupt"):
    checkpoints.load_params(str(ckpt))
  with pytest.raises(checkpoints.CheckpointError, match=r"has no parameter 'encoder/layers_9'"):
    checkpoints.load_params(str(ckpt), only=['encoder/layers_9'])


# --- Damaged or mismatched checkpoints ------------------------------------------------

def test_truncated_chunk_names_the_parameter_and_file(tmp_path):
  ckpt = _writable_copy(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3'), tmp_path / 'ckpt')
  chunk = ckpt / 'target.token_embedder.embedding' / '3.0'
  chunk.write_bytes(chunk.read_bytes()[:1000])
  for load in (checkpoints.load_params, checkpoints.load_token_embedding):
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"'token_embedder/embedding'.*target\.token_embedder\.embedding"):
      load(str(ckpt))


def test_missing_chunk_file_is_not_read_as_zeros(tmp_path):
  ckpt = _writable_copy(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3'), tmp_path / 'ckpt')
  (ckpt / 'target.token_embedder.embedding' / '2.0').unlink()  # As an interrupted copy leaves it.
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"'token_embedder/embedding' from .*target\.token_embedder\.embedding: 7 "
                           r'of its 8 chunk files \(grid \[8, 1\]\) are present'):
    checkpoints.load_token_embedding(str(ckpt))


def test_zarray_shape_disagreeing_with_the_index(tmp_path):
  ckpt = _writable_copy(shared_path('t5', 'test_t5_1_1_tiny', 'checkpoint_3'), tmp_path / 'ckpt')
  zarray = ckpt / 'target.decoder.layers_1.mlp.wo.kernel' / '.zarray'
  meta = json.loads(zarray.read_text())
  meta['shape'] = meta['chunks'] = [8, 5]
  zarray.write_text(json.dumps(meta))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"'decoder/layers_1/mlp/wo/kernel'.*\.zarray says shape \(8, 5\).*"
                           r"checkpoint says \(8, 4\)"):
    checkpoints.load_params(str(ckpt))


def test_inconsistent_tree_is_refused_whole(tiny, tmp_path):
  params = jax.tree.map(lambda x: x, tiny[0])
  params['decoder']['layers_1']['mlp']['wi_0']['kernel'] = np.zeros((4, 6), np.float32)
  (tmp_path / 'checkpoint').write_bytes(flax.serialization.msgpack_serialize({'target': params}))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"'decoder/layers_1/mlp/wi_0/kernel' has shape \(4, 6\), but the "
                           r"configured model expects \(4, 8\)"):
    checkpoints.load_params(str(tmp_path))


def test_validate_against_a_different_config(tiny):
  params, config = tiny
  wider = dataclasses.replace(config, emb_dim=8)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"from/here: parameter 'decoder/decoder_norm/scale' has shape \(4,\), "
                           r'but the configured model expects \(8,\)'):
    checkpoints.validate_params(params, wider, 'from/here')
  relu = dataclasses.replace(config, mlp_activations=('relu',))
  with pytest.raises(checkpoints.CheckpointError, match=r'missing .*mlp/wi/kernel.*unexpected'):
    checkpoints.validate_params(params, relu, 'from/here')


def test_config_from_a_partial_tree_is_refused(tiny):
  with pytest.raises(checkpoints.CheckpointError, match='Cannot infer a T5 config.*lacks'):
    checkpoints.config_from_params({'token_embedder': tiny[0]['token_embedder']})


def test_unknown_layout(tmp_path):
  (tmp_path / 'weights.npz').write_bytes(b'')
  with pytest.raises(checkpoints.CheckpointError,
                     match=rf'Unknown checkpoint layout at {tmp_path}: expected a T5X .* or a '
                           'Hugging Face'):
    checkpoints.load_params(str(tmp_path))
  with pytest.raises(checkpoints.CheckpointError, match='the path does not exist'):
    checkpoints.load_params(str(tmp_path / 'nowhere'))


def test_unreadable_msgpack(tmp_path):
  (tmp_path / 'checkpoint').write_bytes(b'\xc1 not msgpack')
  with pytest.raises(checkpoints.CheckpointError, match='checkpoint is not a readable T5X msgpack'):
    checkpoints.load_params(str(tmp_path))


# --- Hugging Face directories --------------------------------------------------------

@pytest.fixture(scope='module')
def hf_model():
  """A small untied T5 1.1-shaped HF model (separate lm_head) and its state dict."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  config = transformers.T5Config(vocab_size=64, d_model=8, d_kv=4, num_heads=2, d_ff=16,
                                 num_layers=2, num_decoder_layers=3, feed_forward_proj='gated-gelu',
                                 tie_word_embeddings=False, relative_attention_num_buckets=8)
  model = transformers.T5ForConditionalGeneration(config).eval()
  model.lm_head.weight = torch.nn.Parameter(torch.randn(64, 8))  # Transformers 5 ties by default.
  return model


def _hf_expected(model):
  """Our tree, written out by hand from the torch names (independently of the loader)."""
  sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
  attn = lambda p: {n: {'kernel': sd[f'{p}.{h}.weight'].T} for n, h in
                    (('query', 'q'), ('key', 'k'), ('value', 'v'), ('out', 'o'))}
  mlp = lambda p: {n: {'kernel': sd[f'{p}.{n}.weight'].T} for n in ('wi_0', 'wi_1', 'wo')}
  norm = lambda k: {'scale': sd[k]}
  enc = {f'layers_{i}': {
      'pre_attention_layer_norm': norm(f'encoder.block.{i}.layer.0.layer_norm.weight'),
      'attention': attn(f'encoder.block.{i}.layer.0.SelfAttention'),
      'pre_mlp_layer_norm': norm(f'encoder.block.{i}.layer.1.layer_norm.weight'),
      'mlp': mlp(f'encoder.block.{i}.layer.1.DenseReluDense')} for i in range(2)}
  dec = {f'layers_{i}': {
      'pre_self_attention_layer_norm': norm(f'decoder.block.{i}.layer.0.layer_norm.weight'),
      'self_attention': attn(f'decoder.block.{i}.layer.0.SelfAttention'),
      'pre_cross_attention_layer_norm': norm(f'decoder.block.{i}.layer.1.layer_norm.weight'),
      'encoder_decoder_attention': attn(f'decoder.block.{i}.layer.1.EncDecAttention'),
      'pre_mlp_layer_norm': norm(f'decoder.block.{i}.layer.2.layer_norm.weight'),
      'mlp': mlp(f'decoder.block.{i}.layer.2.DenseReluDense')} for i in range(3)}
  rel = lambda s: {
      'rel_embedding': sd[f'{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'].T}
  enc.update(relpos_bias=rel('encoder'), encoder_norm=norm('encoder.final_layer_norm.weight'))
  dec.update(relpos_bias=rel('decoder'), decoder_norm=norm('decoder.final_layer_norm.weight'),
             logits_dense={'kernel': sd['lm_head.weight'].T})
  return {'token_embedder': {'embedding': sd['shared.weight']}, 'encoder': enc, 'decoder': dec}


@pytest.mark.parametrize('files', ['safetensors', 'sharded', 'torch_bin'])
def test_hf_directory_loads(hf_model, tmp_path, files):
  import torch  # pylint: disable=g-import-not-at-top
  if files == 'torch_bin':
    hf_model.config.save_pretrained(tmp_path)
    torch.save(hf_model.state_dict(), tmp_path / 'pytorch_model.bin')
  else:
    hf_model.save_pretrained(tmp_path, max_shard_size='4KB' if files == 'sharded' else '1GB')
  assert (tmp_path / 'model.safetensors.index.json').is_file() == (files == 'sharded')
  params, config = checkpoints.load_params(str(tmp_path))
  assert config == t5.T5Config(vocab_size=64, emb_dim=8, num_heads=2, num_encoder_layers=2,
                               num_decoder_layers=3, head_dim=4, mlp_dim=16,
                               mlp_activations=('gelu', 'linear'), logits_via_embedding=False,
                               relative_attention_num_buckets=8)
  _assert_trees_equal(params, _hf_expected(hf_model))
  partial, _ = checkpoints.load_params(str(tmp_path), only=['decoder/relpos_bias'])
  assert list(_flat(partial)) == ['decoder/relpos_bias/rel_embedding']
  np.testing.assert_array_equal(checkpoints.load_token_embedding(str(tmp_path)),
                                hf_model.shared.weight.detach().numpy())


def test_hf_bfloat16_safetensors(hf_model, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  copy.deepcopy(hf_model).to(torch.bfloat16).save_pretrained(tmp_path)
  params, _ = checkpoints.load_params(str(tmp_path))
  expected = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), _hf_expected(hf_model))
  _assert_trees_equal(params, expected)


def test_hf_tied_original_t5_with_a_stored_copy_of_the_embedding(tmp_path):
  """Original T5 torch files often repeat the embedding as lm_head: still the tied model."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  config = transformers.T5Config(vocab_size=64, d_model=8, d_kv=4, num_heads=2, d_ff=16,
                                 num_layers=1, feed_forward_proj='relu')
  model = transformers.T5ForConditionalGeneration(config)
  config.save_pretrained(tmp_path)
  state = {k: v.clone() for k, v in model.state_dict().items()}
  assert torch.equal(state['lm_head.weight'], state['shared.weight'])
  torch.save(state, tmp_path / 'pytorch_model.bin')
  params, loaded = checkpoints.load_params(str(tmp_path))
  assert loaded.logits_via_embedding and loaded.mlp_activations == ('relu',)
  assert 'logits_dense' not in params['decoder'] and 'wi' in params['encoder']['layers_0']['mlp']
  assert checkpoints.config_from_params(params) == loaded


def test_hf_d_model_disagreeing_with_the_weights(hf_model, tmp_path):
  hf_model.save_pretrained(tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'd_model': 16}))
  with pytest.raises(checkpoints.CheckpointError,
                     match=rf"{tmp_path} \(sizes from config.json\): parameter "
                           r"'decoder/decoder_norm/scale' has shape \(8,\), but the configured "
                           r'model expects \(16,\)'):
    checkpoints.load_params(str(tmp_path))
  # A partial read is checked too.
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"'token_embedder/embedding' has shape \(64, 8\).*expects \(64, 16\)"):
    checkpoints.load_token_embedding(str(tmp_path))


def test_hf_without_config_json(hf_model, tmp_path):
  hf_model.save_pretrained(tmp_path)
  (tmp_path / 'config.json').unlink()
  with pytest.raises(checkpoints.CheckpointError,
                     match=rf'{tmp_path} holds Hugging Face weights but no config.json'):
    checkpoints.load_params(str(tmp_path))


def test_hf_unsupported_variants(hf_model, tmp_path):
  hf_model.save_pretrained(tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  for change, message in (
      ({'feed_forward_proj': 'gelu'}, "feed_forward_proj 'gelu' is not supported"),  # Exact GELU.
      ({'model_type': 'umt5'}, "model_type 'umt5' is not supported")):
    (tmp_path / 'config.json').write_text(json.dumps({**config, **change}))
    with pytest.raises(checkpoints.CheckpointError, match=message):
      checkpoints.load_params(str(tmp_path))


def test_hf_encoder_only_weights_name_the_missing_tensors(hf_model, tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  hf_model.config.save_pretrained(tmp_path)
  save_file({k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()
             if not k.startswith('decoder.')}, str(tmp_path / 'model.safetensors'))
  with pytest.raises(checkpoints.CheckpointError, match=r"has no tensor\(s\) \['decoder\.block\.0"):
    checkpoints.load_params(str(tmp_path))
  # What it does hold still loads on its own.
  assert checkpoints.load_token_embedding(str(tmp_path)).shape == (64, 8)

