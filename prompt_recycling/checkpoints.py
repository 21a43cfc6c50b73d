"""Model checkpoints on disk -> parameter trees (numpy), and our T5X writer.

Two layouts are read, chosen by what the directory holds:

* **T5X** (a `checkpoint` msgpack file): flax's msgpack of the train state,
  `{'version', 'optimizer': {'target': params, 'state': {'step',
  'param_states'}}}` (or `target` at the top level). Each leaf is either an
  array stored inline (T5X's older layout, and unpartitioned arrays in the newer
  one) or a tensorstore spec of a zarr array in the checkpoint directory, its
  path relative to it (`target.encoder.layers_0.mlp.wi_0.kernel/`). The spec's
  kvstore driver ('gfile', 'file', or 'gcs' with T5X's placeholder bucket) is
  ignored: arrays are always opened beside the msgpack file, so a checkpoint
  reads the same after being copied. Directories may be local, gs://bucket/...,
  or any other tensorstore kvstore URL (file:///...).
* **Hugging Face** (`config.json` + `model.safetensors`, a sharded
  `model.safetensors.index.json`, or `pytorch_model.bin`, local only): names and
  layouts are mapped into the T5X tree (torch Linear `[out, in]` -> kernel
  `[in, out]`; relative attention bias `[buckets, heads]` -> `[heads,
  buckets]`) and the `T5Config` is read from `config.json`.

`only` reads a subset: recycling needs just `token_embedder/embedding` of a
30 GB checkpoint, and only that array's files are opened. Loading is all or
nothing: every requested array is read and checked (against the zarr metadata,
and against the config when one is known) before anything is returned, and
errors name the parameter, the file, and the shapes found and expected.
Arrays come back in the dtype they were stored in. No model code lives here
beyond `T5Config` and the abstract shapes of `T5(config).init`.
"""
import collections.abc
import functools
import json
import os
import re
import shutil
import struct
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import flax.linen as nn
import flax.serialization
import jax
import ml_dtypes
import numpy as np
import tensorstore as ts

from prompt_recycling.models import t5

Params = Dict[str, Any]
# Our writer keeps arrays up to this many entries inline in the msgpack file
# (layer norm scales, relative position tables); larger ones go to zarr.
_INLINE_MAX_SIZE = 1024
# Target bytes per zarr chunk written by `save_t5x`.
_CHUNK_BYTES = 1 << 22
_HF_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                    'pytorch_model.bin.index.json')
# Where HF T5 variants keep the token embedding, first found wins.
_HF_EMBEDDING_NAMES = ('shared.weight', 'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')


class CheckpointError(ValueError):
  """A checkpoint that cannot be read as asked (missing, corrupt, or mismatched)."""


# --- Files: local paths, or URLs through tensorstore's key-value stores ------

def _is_url(path: str) -> bool:
  return '://' in path


def _join(base: str, *parts: str) -> str:
  return '/'.join([base.rstrip('/'), *parts]) if _is_url(base) else os.path.join(base, *parts)


def _kvstore(path: str) -> Union[str, Dict[str, str]]:
  """A tensorstore kvstore spec for a local path, gs://bucket/key, or another URL.

  A trailing '/' is kept: it makes the kvstore a directory prefix.
  """
  if path.startswith('gs://'):
    bucket, _, key = path[len('gs://'):].partition('/')
    return {'driver': 'gcs', 'bucket': bucket, 'path': key}
  if _is_url(path):
    return path
  return {'driver': 'file', 'path': os.path.abspath(path) + ('/' if path.endswith('/') else '')}


def _open_dir(directory: str) -> ts.KvStore:
  return ts.KvStore.open(_kvstore(directory.rstrip('/') + '/')).result()


def _exists(path: str) -> bool:
  """Whether the file `path` exists (without reading it, also for URLs)."""
  if not _is_url(path):
    return os.path.isfile(path)
  directory, name = path.rstrip('/').rsplit('/', 1)
  only_name = ts.KvStore.KeyRange(inclusive_min=name, exclusive_max=name + '\0')
  keys = _open_dir(directory).list(only_name)
  return bool(keys.result())


def _read_bytes(path: str) -> bytes:
  if not _is_url(path):
    with open(path, 'rb') as f:
      return f.read()
  directory, name = path.rstrip('/').rsplit('/', 1)
  result = _open_dir(directory).read(name).result()
  if result.state != 'value':
    raise CheckpointError(f'{path} does not exist.')
  return bytes(result.value)


def step_of(path: Optional[str]) -> Optional[int]:
  """The step a T5X `.../checkpoint_N` directory names (N), or None for another path."""
  match = re.search(r'checkpoint_(\d+)/*$', str(path or ''))
  return int(match.group(1)) if match else None


def _checkpoint_steps(model_dir: str) -> List[int]:
  """Steps N of the `checkpoint_N/checkpoint` files directly under `model_dir`, ascending."""
  if _is_url(model_dir):
    keys = _open_dir(model_dir).list(
        ts.KvStore.KeyRange(inclusive_min='checkpoint_', exclusive_max='checkpoint`')).result()
    names = {k.decode() for k in keys}
  elif os.path.isdir(model_dir):
    names = {f'{d}/checkpoint' for d in os.listdir(model_dir)
             if os.path.isfile(os.path.join(model_dir, d, 'checkpoint'))}
  else:
    names = set()
  matches = (re.fullmatch(r'checkpoint_(\d+)/checkpoint', n) for n in names)
  return sorted(int(m.group(1)) for m in matches if m)


# --- Trees ------------------------------------------------------------------

def _is_ts_spec(x: Any) -> bool:
  return isinstance(x, collections.abc.Mapping) and 'driver' in x and 'kvstore' in x


def _flatten(tree: Any, prefix: str = '') -> Dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}; a tensorstore spec dict is a leaf."""
  if isinstance(tree, collections.abc.Mapping) and not _is_ts_spec(tree):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f'{prefix}{k}/'))
    return out
  return {prefix[:-1]: tree}


def _unflatten(flat: Dict[str, Any]) -> Params:
  tree: Params = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _wanted(path: str, only: Optional[Sequence[str]]) -> bool:
  """Whether `path` is one of `only` or lies under one of them (None: all)."""
  return only is None or any(path == o.rstrip('/') or path.startswith(o.rstrip('/') + '/')
                             for o in only)


def _check_only_found(paths: Iterable[str], only: Optional[Sequence[str]], source: str) -> None:
  paths = list(paths)
  for o in only or ():
    if not any(_wanted(p, [o]) for p in paths):
      raise CheckpointError(f'{source} has no parameter {o!r}; its parameters are e.g. '
                            f'{sorted(paths)[:4]}.')


# --- Dispatch ---------------------------------------------------------------

def load_params(path: str, only: Optional[Sequence[str]] = None
                ) -> Tuple[Params, Optional[t5.T5Config]]:
  """Reads a T5X checkpoint or a Hugging Face T5 directory.

  Args:
    path: a T5X `checkpoint_N` directory (or its `checkpoint` file), a T5X
      model directory (its latest `checkpoint_N` is read), or a HF model
      directory. T5X directories may be gs:// or other tensorstore URLs.
    only: `/`-joined parameter paths or prefixes to read, e.g.
      `['token_embedder/embedding']` or `['encoder']`; default: everything.

  Returns:
    (params, config): a nested dict of numpy arrays named as T5X's `target`,
    e.g. `params['token_embedder']['embedding']` [vocab, embed]; and the
    `T5Config` read from config.json (HF) or inferred from the full tree (T5X),
    None for a partial T5X read.

  Raises:
    CheckpointError: unknown layout, missing or corrupt array files, shapes that
      disagree with the zarr metadata or with the config, or an `only` entry
      that names no parameter.
  """
  if isinstance(only, str):
    only = [only]
  layout, directory = _layout(str(path))
  if layout == 'hf':
    return _load_hf(directory, only)
  params = _load_t5x(directory, only)
  if only is not None:
    return params, None
  index = _join(directory, 'checkpoint')
  config = config_from_params(params, source=index)
  validate_params(params, config, index)
  return params, config


def load_token_embedding(path: str) -> np.ndarray:
  """The token embedding `[vocab, embed]` float32 of a checkpoint, reading nothing else."""
  params, _ = load_params(path, only=['token_embedder/embedding'])
  return np.asarray(params['token_embedder']['embedding'], np.float32)


def _layout(path: str) -> Tuple[str, str]:
  """('t5x' | 'hf', directory) for what `path` holds."""
  path = path.rstrip('/') or '/'
  if os.path.basename(path) == 'checkpoint' and _exists(path):
    return 't5x', os.path.dirname(path) if not _is_url(path) else path.rsplit('/', 1)[0]
  if _exists(_join(path, 'checkpoint')):
    return 't5x', path
  if any(_exists(_join(path, f)) for f in ('config.json',) + _HF_WEIGHT_FILES):
    return 'hf', path
  steps = _checkpoint_steps(path)
  if steps:
    return 't5x', _join(path, f'checkpoint_{steps[-1]}')
  missing = '' if _is_url(path) or os.path.exists(path) else ' (the path does not exist)'
  raise CheckpointError(
      f'Unknown checkpoint layout at {path}{missing}: expected a T5X checkpoint directory (a '
      '`checkpoint` msgpack file, or checkpoint_N/ subdirectories holding one) or a Hugging Face '
      'T5 directory (config.json with model.safetensors, model.safetensors.index.json or '
      'pytorch_model.bin).')


# --- T5X --------------------------------------------------------------------

def _load_t5x(directory: str, only: Optional[Sequence[str]]) -> Params:
  index = _join(directory, 'checkpoint')
  try:
    state = flax.serialization.msgpack_restore(_read_bytes(index))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'{index} is not a readable T5X msgpack checkpoint: {e}') from e
  if not isinstance(state, dict):
    raise CheckpointError(f'{index} holds a {type(state).__name__}, not a T5X train state dict.')
  target = (state.get('optimizer') or {}).get('target', state.get('target'))
  if not isinstance(target, dict):
    raise CheckpointError(f'{index} holds no `optimizer/target` or `target` parameters '
                          f'(top-level keys: {sorted(state)}).')
  flat = _flatten(target)
  _check_only_found(flat, only, index)
  flat = {p: v for p, v in flat.items() if _wanted(p, only)}
  arrays = {p: np.asarray(v) for p, v in flat.items() if not _is_ts_spec(v)}
  arrays.update(_read_zarr(directory, {p: v for p, v in flat.items() if _is_ts_spec(v)}))
  return _unflatten({p: arrays[p] for p in flat})


def _zarr_location(directory: str, name: str, spec: Dict[str, Any]) -> str:
  """The array's directory: T5X's relative path resolved against the checkpoint dir."""
  kvstore = spec['kvstore']
  relative = (kvstore.get('path') if isinstance(kvstore, dict) else None) or spec.get('path')
  if not relative:
    raise CheckpointError(f'The tensorstore spec of parameter {name!r} in '
                          f'{_join(directory, "checkpoint")} names no path: {spec}.')
  if _is_url(relative) or os.path.isabs(relative):
    return relative
  return _join(directory, relative)


def _read_zarr(directory: str, specs: Dict[str, Dict[str, Any]]) -> Dict[str, np.ndarray]:
  """Reads the zarr arrays of `specs` (param path -> T5X spec), all reads in flight at once."""
  index = _join(directory, 'checkpoint')
  files = {name: _zarr_location(directory, name, spec) for name, spec in specs.items()}

  def fail(name, e):
    raise CheckpointError(f'Cannot read parameter {name!r} from {files[name]} (missing or corrupt '
                          f'zarr array; listed in {index}): {e}') from e

  opening = {name: ts.open({'driver': 'zarr', 'kvstore': _kvstore(file + '/')}, open=True, read=True)
             for name, file in files.items()}
  reading = {}
  for name, future in opening.items():
    try:
      store = future.result()
    except Exception as e:  # pylint: disable=broad-except
      fail(name, e)
    # The index records the shape T5X wrote; the array's own .zarray must agree.
    expected = specs[name].get('metadata', {}).get('shape')
    if expected is not None and tuple(store.shape) != tuple(expected):
      raise CheckpointError(f'Parameter {name!r}: {files[name]}/.zarray says shape '
                            f'{tuple(store.shape)}, but {index} says {tuple(expected)}.')
    reading[name] = (store, store.read(), store.kvstore.list())
  arrays = {}
  for name, (store, read, listing) in reading.items():
    try:
      arrays[name] = np.asarray(read.result())
      keys = listing.result()
    except Exception as e:  # pylint: disable=broad-except
      fail(name, e)
    _check_chunks_present(name, files[name], store, keys)
  return arrays


def _check_chunks_present(name: str, file: str, store: ts.TensorStore, keys: List[bytes]) -> None:
  """Refuses an array with chunk files missing (tensorstore would read them as zeros).

  With no fill value (`"fill_value": null`, as T5X and tensorstore write float
  arrays) every chunk is stored, even an all-zero one, so a missing chunk is a
  damaged or half-copied checkpoint, not a sparse array.
  """
  if store.fill_value is not None:
    return
  grid = [-(-size // chunk) for size, chunk in zip(store.shape, store.chunk_layout.read_chunk.shape)]
  expected = int(np.prod(grid))
  present = sum(1 for k in keys if not k.rsplit(b'/', 1)[-1].startswith(b'.'))
  if present < expected:
    raise CheckpointError(f'Cannot read parameter {name!r} from {file}: {present} of its {expected} '
                          f'chunk files (grid {grid}) are present; missing chunks would read as '
                          'zeros. Is the checkpoint completely copied?')


def save_t5x(params: Params, directory: str, step: int, *, optimizer_state: Any = None,
             dtype: Optional[str] = None) -> str:
  """Writes `params` as a T5X checkpoint `directory/checkpoint_<step>`; returns that path.

  The layout is T5X's: a msgpack `checkpoint` file holding `{'version': 3,
  'optimizer': {'target': params, 'state': {'step', 'param_states'}}}`, where
  arrays larger than 1,024 entries are replaced by tensorstore specs of gzip
  zarr arrays beside it (one directory per parameter, `target.<dotted path>`,
  the path relative as T5X writes it); smaller arrays stay inline. The
  directory is written under a temporary name and renamed when complete, so a
  reader never sees half a checkpoint. Local directories only.

  Args:
    params: nested dict (or FrozenDict, boxed or not) named as T5X's `target`.
    directory: the model directory.
    step: the checkpoint's step.
    optimizer_state: optional tree stored inline under
      `optimizer/state/param_states` (as T5X stores per-parameter states).
    dtype: store arrays in this dtype (e.g. 'bfloat16' halves the size);
      default: as given. Readers get back what was stored.

  Returns:
    The checkpoint directory, `directory/checkpoint_<step>`.
  """
  if _is_url(directory):
    raise CheckpointError(f'save_t5x writes local directories only, got {directory}.')
  final = os.path.join(directory, f'checkpoint_{step}')
  tmp = final + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  target, writes = {}, []
  for name, value in _flatten(nn.unbox(jax.device_get(params))).items():
    value = np.asarray(value)
    if dtype is not None:
      value = value.astype(dtype)
    if value.size <= _INLINE_MAX_SIZE:
      target[name] = value
      continue
    relative = 'target.' + name.replace('/', '.')
    metadata = {'shape': list(value.shape), 'chunks': list(_chunks(value.shape, value.itemsize)),
                'dtype': _zarr_dtype(value.dtype), 'compressor': {'id': 'gzip', 'level': 1}}
    store = ts.open({'driver': 'zarr', 'kvstore': _kvstore(os.path.join(tmp, relative) + '/'),
                     'metadata': metadata}, create=True, open=True).result()
    writes.append(store.write(value))
    target[name] = {'driver': 'zarr', 'dtype': value.dtype.name,
                    'kvstore': {'driver': 'file', 'path': relative}, 'metadata': metadata}
  for write in writes:
    write.result()
  state = {'step': np.asarray(step, np.int32)}
  if optimizer_state is not None:
    state['param_states'] = flax.serialization.to_state_dict(jax.device_get(optimizer_state))
  tree = {'version': 3, 'optimizer': {'target': _unflatten(target), 'state': state}}
  with open(os.path.join(tmp, 'checkpoint'), 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(tree))
  shutil.rmtree(final, ignore_errors=True)
  os.replace(tmp, final)
  return final


def _chunks(shape: Sequence[int], itemsize: int) -> Tuple[int, ...]:
  """Chunks of about 4 MiB split along the first axis (a vocab table reads in rows)."""
  row_bytes = max(1, int(np.prod(shape[1:])) * itemsize)
  rows = max(1, min(shape[0], _CHUNK_BYTES // row_bytes))
  return (rows, *shape[1:])


def _zarr_dtype(dtype: np.dtype) -> str:
  return 'bfloat16' if dtype == ml_dtypes.bfloat16 else dtype.str


# --- Hugging Face -------------------------------------------------------------

# HF `feed_forward_proj` -> our `mlp_activations`. Ungated 'gelu' is HF's exact
# GELU, which our tanh-approximated 'gelu' is not, so it is not mapped.
_HF_ACTIVATIONS = {'relu': ('relu',), 'gated-gelu': ('gelu', 'linear'),
                   'gated-relu': ('relu', 'linear'), 'gated-silu': ('silu', 'linear')}


def config_from_hf(config: Dict[str, Any], *, lm_head: bool = False,
                   source: str = 'config.json') -> t5.T5Config:
  """T5Config from a HF T5/mT5 `config.json`.

  Args:
    config: the parsed config.json.
    lm_head: whether the weights hold a separate `lm_head.weight`.
    source: the file, for error messages.

  Original T5 scales the decoder output by `d_model**-0.5` and ties the output
  layer to the embedding: our `logits_via_embedding`. Transformers < 5 writes
  this as `tie_word_embeddings` (True by default); transformers 5 always ties
  and writes `scale_decoder_outputs` instead. A T5 1.1 model (unscaled) gets a
  `logits_dense` kernel: its `lm_head`, or the embedding when none is stored.
  """
  model_type = config.get('model_type', 't5')
  if model_type not in ('t5', 'mt5'):
    raise CheckpointError(f'{source}: model_type {model_type!r} is not supported; expected '
                          "'t5' or 'mt5' (one relative position table per stack).")
  proj = config.get('feed_forward_proj', 'relu')
  if proj not in _HF_ACTIVATIONS:
    raise CheckpointError(f'{source}: feed_forward_proj {proj!r} is not supported; expected one '
                          f'of {sorted(_HF_ACTIVATIONS)}.')
  try:
    return t5.T5Config(
        vocab_size=config['vocab_size'], emb_dim=config['d_model'], num_heads=config['num_heads'],
        num_encoder_layers=config['num_layers'],
        num_decoder_layers=config.get('num_decoder_layers') or config['num_layers'],
        head_dim=config['d_kv'], mlp_dim=config['d_ff'], mlp_activations=_HF_ACTIVATIONS[proj],
        logits_via_embedding=_hf_scaled(config) and not lm_head,
        relative_attention_num_buckets=config.get('relative_attention_num_buckets', 32),
        relative_attention_max_distance=config.get('relative_attention_max_distance', 128),
        layer_norm_epsilon=config.get('layer_norm_epsilon', 1e-6))
  except KeyError as e:
    raise CheckpointError(f'{source} lacks {e}, needed for the model sizes.') from None


def _hf_scaled(config: Dict[str, Any]) -> bool:
  """Whether HF scales the decoder output by d_model**-0.5 before the output layer."""
  if 'scale_decoder_outputs' in config:
    return bool(config['scale_decoder_outputs'])
  return config.get('tie_word_embeddings', True) is not False


def _hf_names(config: t5.T5Config, embedding: str) -> Dict[str, Tuple[str, bool]]:
  """Our param path -> (HF tensor name, whether to transpose), output layer aside."""
  names = {'token_embedder/embedding': (embedding, False)}
  mlp = ['wi'] if len(config.mlp_activations) == 1 else [
      f'wi_{i}' for i in range(len(config.mlp_activations))]

  def attention(ours, theirs):
    for a, b in (('query', 'q'), ('key', 'k'), ('value', 'v'), ('out', 'o')):
      names[f'{ours}/{a}/kernel'] = (f'{theirs}.{b}.weight', True)

  def mlp_block(ours, theirs):
    for m in mlp + ['wo']:
      names[f'{ours}/{m}/kernel'] = (f'{theirs}.{m}.weight', True)

  for i in range(config.num_encoder_layers):
    b, layer = f'encoder.block.{i}.layer', f'encoder/layers_{i}'
    names[f'{layer}/pre_attention_layer_norm/scale'] = (f'{b}.0.layer_norm.weight', False)
    attention(f'{layer}/attention', f'{b}.0.SelfAttention')
    names[f'{layer}/pre_mlp_layer_norm/scale'] = (f'{b}.1.layer_norm.weight', False)
    mlp_block(f'{layer}/mlp', f'{b}.1.DenseReluDense')
  for i in range(config.num_decoder_layers):
    b, layer = f'decoder.block.{i}.layer', f'decoder/layers_{i}'
    names[f'{layer}/pre_self_attention_layer_norm/scale'] = (f'{b}.0.layer_norm.weight', False)
    attention(f'{layer}/self_attention', f'{b}.0.SelfAttention')
    names[f'{layer}/pre_cross_attention_layer_norm/scale'] = (f'{b}.1.layer_norm.weight', False)
    attention(f'{layer}/encoder_decoder_attention', f'{b}.1.EncDecAttention')
    names[f'{layer}/pre_mlp_layer_norm/scale'] = (f'{b}.2.layer_norm.weight', False)
    mlp_block(f'{layer}/mlp', f'{b}.2.DenseReluDense')
  for side in ('encoder', 'decoder'):
    # Only block 0 holds the table; HF shares it with the other blocks, as T5X.
    names[f'{side}/relpos_bias/rel_embedding'] = (
        f'{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight', True)
    names[f'{side}/{side}_norm/scale'] = (f'{side}.final_layer_norm.weight', False)
  return names


def _load_hf(path: str, only: Optional[Sequence[str]]) -> Tuple[Params, t5.T5Config]:
  if _is_url(path):
    raise CheckpointError(f'Hugging Face checkpoints are read from local directories; copy {path} '
                          'to local disk first (e.g. huggingface_hub.snapshot_download).')
  config_file = os.path.join(path, 'config.json')
  if not os.path.isfile(config_file):
    raise CheckpointError(f'{path} holds Hugging Face weights but no config.json; it is needed for '
                          "the model sizes (write it with the model's save_pretrained).")
  try:
    hf_config = json.loads(_read_bytes(config_file))
  except json.JSONDecodeError as e:
    raise CheckpointError(f'{config_file} is not valid JSON: {e}') from e
  reader = _HFReader(path)
  embedding = next((n for n in _HF_EMBEDDING_NAMES if n in reader.names), _HF_EMBEDDING_NAMES[0])
  scaled = _hf_scaled(hf_config)
  lm_head = 'lm_head.weight' in reader.names
  if scaled and lm_head:
    # Original T5 converted from a torch state dict often stores lm_head as a
    # copy of the embedding: then it is the tied model, not a separate layer.
    pair = reader.read([embedding, 'lm_head.weight'])
    lm_head = not np.array_equal(pair[embedding], pair['lm_head.weight'])
  config = config_from_hf(hf_config, lm_head=lm_head, source=config_file)
  names = _hf_names(config, embedding)
  if not config.logits_via_embedding:
    names['decoder/logits_dense/kernel'] = ('lm_head.weight' if lm_head else embedding, True)
  _check_only_found(names, only, path)
  names = {p: n for p, n in names.items() if _wanted(p, only)}
  tensors = reader.read({n for n, _ in names.values()})
  flat = {}
  for ours, (theirs, transpose) in names.items():
    value = tensors[theirs]
    flat[ours] = np.ascontiguousarray(value.T) if transpose else value
  if scaled and 'decoder/logits_dense/kernel' in flat:
    # A separate output layer after a scaled decoder: fold the scale into it.
    kernel = flat['decoder/logits_dense/kernel']
    flat['decoder/logits_dense/kernel'] = (
        kernel.astype(np.float32) * np.float32(config.emb_dim ** -0.5)).astype(kernel.dtype)
  source = f'{path} (sizes from config.json)'
  if only is None:
    validate_params(_unflatten(flat), config, source)
  else:
    _check_shapes(flat, config, source)
  return _unflatten(flat), config


class _HFReader:
  """Reads named tensors from a HF directory: safetensors lazily, torch .bin with mmap."""

  def __init__(self, path: str):
    self.path = path
    join = lambda f: os.path.join(path, f)
    if os.path.isfile(join('model.safetensors.index.json')):
      self.kind, self.files = 'safetensors', self._index(join('model.safetensors.index.json'))
    elif os.path.isfile(join('model.safetensors')):
      self.kind, self.files = 'safetensors', self._single(join('model.safetensors'))
    elif os.path.isfile(join('pytorch_model.bin.index.json')):
      self.kind, self.files = 'bin', self._index(join('pytorch_model.bin.index.json'))
    elif os.path.isfile(join('pytorch_model.bin')):
      self.kind, self.files = 'bin', {join('pytorch_model.bin'): None}
    else:
      raise CheckpointError(f'{path} has config.json but no weights: expected one of '
                            f'{", ".join(_HF_WEIGHT_FILES)}.')
    self._bin = {}  # file -> loaded (memory-mapped) torch state dict.
    if self.kind == 'bin' and any(v is None for v in self.files.values()):
      self.files = {f: list(self._torch_state(f)) for f in self.files}
    self.names = {n: f for f, names in self.files.items() for n in names}

  def _index(self, index_file: str) -> Dict[str, List[str]]:
    weight_map = json.loads(_read_bytes(index_file))['weight_map']
    files: Dict[str, List[str]] = {}
    for name, file in weight_map.items():
      files.setdefault(os.path.join(self.path, file), []).append(name)
    return files

  def _single(self, file: str) -> Dict[str, List[str]]:
    return {file: list(_safetensors_header(file))}

  def _torch_state(self, file: str) -> Dict[str, Any]:
    if file not in self._bin:
      import torch  # pylint: disable=g-import-not-at-top  (only for .bin checkpoints)
      try:
        # Memory-mapped: only the tensors asked for are paged in.
        self._bin[file] = torch.load(file, map_location='cpu', weights_only=True, mmap=True)
      except RuntimeError:
        try:  # Files in torch's legacy (pre-zip) format cannot be memory-mapped.
          self._bin[file] = torch.load(file, map_location='cpu', weights_only=True)
        except Exception as e:  # pylint: disable=broad-except
          raise CheckpointError(f'Cannot read {file} as a torch state dict: {e}') from e
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointError(f'Cannot read {file} as a torch state dict: {e}') from e
    return self._bin[file]

  def read(self, wanted: Iterable[str]) -> Dict[str, np.ndarray]:
    """{name: array} for every name in `wanted`; all present or CheckpointError."""
    missing = sorted(n for n in wanted if n not in self.names)
    if missing:
      raise CheckpointError(f'{self.path} has no tensor(s) {missing[:4]} needed for a T5 '
                            'encoder-decoder (is it a T5EncoderModel or another architecture?).')
    by_file: Dict[str, List[str]] = {}
    for name in wanted:
      by_file.setdefault(self.names[name], []).append(name)
    out = {}
    for file, names in by_file.items():
      try:
        if self.kind == 'safetensors':
          out.update(_safetensors_read(file, names))
        else:
          state = self._torch_state(file)
          out.update({n: _torch_to_numpy(state[n]) for n in names})
      except CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointError(f'Cannot read tensors {sorted(names)[:4]} from {file}: {e}') from e
    return out


def _safetensors_header(file: str) -> Dict[str, Any]:
  """The tensor table of a .safetensors file: {name: {dtype, shape, data_offsets}}."""
  try:
    with open(file, 'rb') as f:
      (length,) = struct.unpack('<Q', f.read(8))
      header = json.loads(f.read(length))
  except (OSError, struct.error, ValueError) as e:
    raise CheckpointError(f'{file} is not a readable safetensors file: {e}') from e
  header.pop('__metadata__', None)
  return header


def _safetensors_read(file: str, names: Sequence[str]) -> Dict[str, np.ndarray]:
  """Reads only `names` from one file; bfloat16 (numpy has none) through ml_dtypes."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  out, bf16 = {}, []
  with safe_open(file, framework='np') as f:
    for name in names:
      if f.get_slice(name).get_dtype() == 'BF16':
        bf16.append(name)
      else:
        out[name] = f.get_tensor(name)
  if bf16:
    header = _safetensors_header(file)
    with open(file, 'rb') as f:
      (length,) = struct.unpack('<Q', f.read(8))
      for name in bf16:
        begin, end = header[name]['data_offsets']
        f.seek(8 + length + begin)
        out[name] = np.frombuffer(f.read(end - begin), ml_dtypes.bfloat16).reshape(
            header[name]['shape'])
  return out


def _torch_to_numpy(tensor: Any) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top
  if tensor.dtype == torch.bfloat16:
    return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return tensor.contiguous().numpy()


# --- Configs and validation ---------------------------------------------------

def config_from_params(params: Params, source: str = 'the parameter tree') -> t5.T5Config:
  """Infers a T5Config from a full T5X parameter tree's shapes.

  Sizes come from `token_embedder/embedding` [vocab, embed], the encoder's
  `relpos_bias/rel_embedding` [heads, buckets], layer 0's query kernel [embed,
  heads * head_dim] and MLP (`wi` means ReLU, `wi_0`/`wi_1` gated GELU), and
  the number of `layers_N` on each side; `logits_via_embedding` when the
  decoder has no `logits_dense`. `relative_attention_max_distance` and
  `layer_norm_epsilon` leave no trace in shapes and keep their defaults.

  Raises:
    CheckpointError: when the tree lacks one of those parameters.
  """
  try:
    emb = params['token_embedder']['embedding']
    enc, dec = params['encoder'], params['decoder']
    rel = enc['relpos_bias']['rel_embedding']
    query = enc['layers_0']['attention']['query']['kernel']
    mlp = enc['layers_0']['mlp']
    wo = mlp['wo']['kernel']
  except (KeyError, TypeError) as e:
    raise CheckpointError(f'Cannot infer a T5 config from {source}: it lacks {e} (a full T5 '
                          'tree has token_embedder/embedding, encoder/relpos_bias/rel_embedding, '
                          'encoder/layers_0/{attention,mlp}, decoder/...).') from None
  num_heads = np.shape(rel)[0]
  count = lambda side: sum(1 for k in side if re.fullmatch(r'layers_\d+', k))
  return t5.T5Config(
      vocab_size=np.shape(emb)[0], emb_dim=np.shape(emb)[1], num_heads=num_heads,
      num_encoder_layers=count(enc), num_decoder_layers=count(dec),
      head_dim=np.shape(query)[1] // num_heads, mlp_dim=np.shape(wo)[0],
      mlp_activations=('relu',) if 'wi' in mlp else ('gelu', 'linear'),
      logits_via_embedding='logits_dense' not in dec,
      relative_attention_num_buckets=np.shape(rel)[1])


@functools.lru_cache(maxsize=16)
def _expected_shapes(config: t5.T5Config) -> Dict[str, Tuple[int, ...]]:
  """{param path: shape} of `T5(config)`, traced abstractly (nothing allocated)."""
  tokens = jax.ShapeDtypeStruct((1, 1), np.int32)
  abstract = jax.eval_shape(t5.T5(config).init, jax.random.key(0), tokens, tokens)
  return {p: tuple(v.shape) for p, v in _flatten(nn.unbox(abstract)['params']).items()}


def _sizes(config: t5.T5Config) -> str:
  return (f'vocab_size={config.vocab_size}, emb_dim={config.emb_dim}, num_heads='
          f'{config.num_heads}, head_dim={config.head_dim}, mlp_dim={config.mlp_dim}, '
          f'relative_attention_num_buckets={config.relative_attention_num_buckets}')


def _check_shapes(flat: Dict[str, Any], config: t5.T5Config, source: str) -> None:
  """Each array of `flat` has the shape `T5(config)` gives that path (extra paths: error)."""
  expected = _expected_shapes(config)
  for path in sorted(flat):
    if path not in expected:
      raise CheckpointError(f'{source}: parameter {path!r} is not part of the configured model '
                            f'(config: {config}).')
    found = tuple(np.shape(flat[path]))
    if found != expected[path]:
      raise CheckpointError(f'{source}: parameter {path!r} has shape {found}, but the configured '
                            f'model expects {expected[path]} ({_sizes(config)}).')


def validate_params(params: Params, config: t5.T5Config, source: str) -> None:
  """Checks `params` has exactly the tree and shapes `T5(config)` expects.

  Args:
    params: nested dict of arrays (or ShapeDtypeStructs) named as T5X's `target`.
    config: the model that will use them.
    source: where `params` came from (a path), for the message.

  Raises:
    CheckpointError: naming the missing or unexpected parameters, or the first
      parameter whose shape disagrees (both shapes), and the source.
  """
  expected = _expected_shapes(config)
  found = _flatten(nn.unbox(params))
  missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
  if missing or extra:
    more = lambda xs: '...' if len(xs) > 5 else ''
    raise CheckpointError(f'{source} does not match the configured model: missing {missing[:5]}'
                          f'{more(missing)}, unexpected {extra[:5]}{more(extra)}. Check the model '
                          f'gin file (config: {config}).')
  _check_shapes(found, config, source)
