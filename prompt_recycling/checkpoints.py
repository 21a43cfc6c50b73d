"""Model checkpoints on disk -> parameter trees (numpy), and our T5X writer.

Two layouts are read, chosen by what the directory holds:

* **T5X** (`checkpoint` msgpack file): flax's msgpack of the train state,
  `{'version', 'optimizer': {'target': params, 'state': ...}}` (or `target` at
  the top level). Each leaf is either an array stored inline (T5X's older
  layout, and small arrays in the newer one) or a tensorstore spec of a zarr
  array beside the msgpack file (`target.encoder.layers_0.mlp.wi_0.kernel/`).
  Paths may be local or anything tensorstore opens (gs://).
* **Hugging Face** (`config.json` + `model.safetensors`, a sharded
  `model.safetensors.index.json`, or `pytorch_model.bin`): names and layouts
  are mapped into the T5X tree (torch Linear `[out, in]` -> kernel `[in, out]`;
  relative attention bias `[buckets, heads]` -> `[heads, buckets]`) and the
  `T5Config` is read from `config.json`.

`only` reads a subset (recycling needs just `token_embedder/embedding` of a
30 GB checkpoint). Loading is all or nothing: every requested array is read
and checked before anything is returned, and errors name the parameter, the
file, and the shapes found and expected. No model code lives here.
"""
import json
import os
import pathlib
import re
import shutil
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import flax.serialization
import jax
import numpy as np
import tensorstore as ts

from prompt_recycling.models import t5

Params = Dict[str, Any]
_INLINE_MAX_SIZE = 1024  # Our writer keeps arrays up to this many entries in the msgpack file.


class CheckpointError(ValueError):
  """A checkpoint that cannot be read as asked (missing, corrupt, or mismatched)."""


# --- Trees ------------------------------------------------------------------

def _flatten(tree: Any, prefix: str = '') -> Dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}; a tensorstore spec dict is a leaf."""
  if isinstance(tree, dict) and not _is_ts_spec(tree):
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


def _is_ts_spec(x: Any) -> bool:
  return isinstance(x, dict) and 'driver' in x and 'kvstore' in x


def _wanted(path: str, only: Optional[Sequence[str]]) -> bool:
  return only is None or any(path == o or path.startswith(o.rstrip('/') + '/') for o in only)


def _check_only_found(flat: Dict[str, Any], only: Optional[Sequence[str]], source: str) -> None:
  for o in only or ():
    if not any(_wanted(p, [o]) for p in flat):
      raise CheckpointError(f'{source} has no parameter {o!r}; it has e.g. {sorted(flat)[:5]}.')


# --- Dispatch -----------------------------------------------------------------

def load_params(path: str, only: Optional[Sequence[str]] = None) -> Tuple[Params, Optional[t5.T5Config]]:
  """Reads a T5X checkpoint or a Hugging Face T5 directory.

  Args:
    path: a T5X `checkpoint_N` directory, a T5X model dir (its latest
      `checkpoint_N` is used), or a HF model directory; local or gs://.
    only: `/`-joined parameter paths or prefixes to read (default: all).

  Returns:
    (nested dict of numpy arrays named as T5X's `target`, the config found in
    the files or inferred from the full tree; None for a partial T5X read).

  Raises:
    CheckpointError: unknown layout, missing or corrupt arrays, shapes that
      disagree with the metadata.
  """
  path = str(path)
  if _exists(_join(path, 'config.json')) or _exists(_join(path, 'model.safetensors')):
    return _load_hf(path, only)
  directory = _t5x_dir(path)
  params = _load_t5x(directory, only)
  config = config_from_params(params) if only is None else None
  return params, config


def load_token_embedding(path: str) -> np.ndarray:
  """The `[vocab, embed]` token embedding of a checkpoint, reading nothing else."""
  params, _ = load_params(path, only=['token_embedder/embedding'])
  return np.asarray(params['token_embedder']['embedding'], np.float32)


def _join(base: str, *parts: str) -> str:
  return '/'.join([base.rstrip('/'), *parts]) if base.startswith('gs://') else os.path.join(base, *parts)


def _exists(path: str) -> bool:
  if path.startswith('gs://'):
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError:
      return _ts_kv_exists(path)
    return tf.io.gfile.exists(path)
  return os.path.exists(path)


def _ts_kv_exists(path: str) -> bool:
  bucket, _, key = path[len('gs://'):].partition('/')
  try:
    kv = ts.KvStore.open({'driver': 'gcs', 'bucket': bucket}).result()
    return kv.read(key).result().state == 'value'
  except Exception:  # pylint: disable=broad-except
    return False


def _read_bytes(path: str) -> bytes:
  if path.startswith('gs://'):
    bucket, _, key = path[len('gs://'):].partition('/')
    kv = ts.KvStore.open({'driver': 'gcs', 'bucket': bucket}).result()
    return bytes(kv.read(key).result().value)
  with open(path, 'rb') as f:
    return f.read()


# --- T5X ---------------------------------------------------------------------

def _t5x_dir(path: str) -> str:
  if _exists(_join(path, 'checkpoint')):
    return path
  if not path.startswith('gs://') and os.path.isdir(path):
    steps = [(int(m.group(1)), d) for d in os.listdir(path)
             if (m := re.fullmatch(r'checkpoint_(\d+)', d)) and _exists(_join(path, d, 'checkpoint'))]
    if steps:
      return _join(path, max(steps)[1])
  raise CheckpointError(
      f'Unknown checkpoint layout at {path}: expected a T5X checkpoint directory (a `checkpoint` '
      'msgpack file, or checkpoint_N/ subdirectories holding one) or a Hugging Face T5 directory '
      '(config.json + model.safetensors or pytorch_model.bin).')


def _load_t5x(directory: str, only: Optional[Sequence[str]]) -> Params:
  index = _join(directory, 'checkpoint')
  try:
    state = flax.serialization.msgpack_restore(_read_bytes(index))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'{index} is not a readable T5X msgpack checkpoint: {e}') from e
  target = state.get('optimizer', {}).get('target') if 'optimizer' in state else state.get('target')
  if target is None:
    raise CheckpointError(f'{index} holds no `optimizer/target` or `target` parameters '
                          f'(top-level keys: {sorted(state)}).')
  flat = {p: v for p, v in _flatten(target).items() if _wanted(p, only)}
  _check_only_found(flat, only, index)
  return _unflatten({p: _t5x_array(directory, p, v) for p, v in flat.items()})


def _t5x_array(directory: str, name: str, leaf: Any) -> np.ndarray:
  if not _is_ts_spec(leaf):
    return np.asarray(leaf)
  relative = leaf['kvstore']['path']
  file = _join(directory, relative) if not relative.startswith(('/', 'gs://')) else relative
  spec = {'driver': leaf.get('driver', 'zarr'), 'kvstore': _kvstore(file)}
  try:
    array = ts.open(spec, open=True, read=True).result().read().result()
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'Cannot read parameter {name!r} from {file} '
                          f'(missing or corrupt array): {e}') from e
  expected = tuple(leaf.get('metadata', {}).get('shape', array.shape))
  if tuple(array.shape) != expected:
    raise CheckpointError(f'Parameter {name!r} in {file} has shape {tuple(array.shape)}, but the '
                          f'checkpoint index says {expected}.')
  return np.asarray(array)


def _kvstore(path: str) -> Dict[str, str]:
  if path.startswith('gs://'):
    bucket, _, key = path[len('gs://'):].partition('/')
    return {'driver': 'gcs', 'bucket': bucket, 'path': key}
  return {'driver': 'file', 'path': path}


def save_t5x(params: Params, directory: str, step: int, *, optimizer_state: Any = None,
             dtype: Optional[str] = None) -> str:
  """Writes `params` as a T5X checkpoint `directory/checkpoint_<step>`; returns that path.

  Arrays larger than 1,024 entries go to gzip zarr arrays through tensorstore
  (one directory per parameter, named as T5X names them); smaller ones stay
  inline in the msgpack index. The directory appears only once complete.

  Args:
    params: nested dict named as T5X's `target`.
    directory: the model directory.
    step: the checkpoint's step.
    optimizer_state: optional tree stored under `optimizer/state/param_states`.
    dtype: store arrays in this dtype (e.g. 'bfloat16' halves the size);
      default: as given. Readers get back what was stored.
  """
  final = os.path.join(directory, f'checkpoint_{step}')
  tmp = final + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  target = {}
  for name, value in _flatten(jax.device_get(params)).items():
    value = np.asarray(value)
    if dtype is not None:
      value = value.astype(dtype)
    if value.size <= _INLINE_MAX_SIZE:
      target[name] = value
      continue
    relative = 'target.' + name.replace('/', '.')
    metadata = {'shape': list(value.shape), 'chunks': list(_chunks(value.shape)),
                'dtype': _zarr_dtype(value.dtype), 'compressor': {'id': 'gzip', 'level': 1}}
    spec = {'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': os.path.join(tmp, relative)},
            'metadata': metadata}
    ts.open(spec, create=True, open=True).result().write(value).result()
    target[name] = {'driver': 'zarr', 'kvstore': {'driver': 'file', 'path': relative},
                    'metadata': metadata}
  state = {'step': np.asarray(step, np.int64)}
  if optimizer_state is not None:
    state['param_states'] = jax.device_get(optimizer_state)
  tree = {'version': 3, 'optimizer': {'target': _unflatten(target), 'state': state}}
  with open(os.path.join(tmp, 'checkpoint'), 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(tree))
  shutil.rmtree(final, ignore_errors=True)
  os.replace(tmp, final)
  return final


def _chunks(shape: Sequence[int]) -> Tuple[int, ...]:
  """Chunks of about 4 MB along the first axis, as T5X writes large tables."""
  rows = max(1, min(shape[0], (1 << 20) // max(1, int(np.prod(shape[1:])))))
  return (rows, *shape[1:])


def _zarr_dtype(dtype: np.dtype) -> str:
  return 'bfloat16' if dtype.name == 'bfloat16' else dtype.str


# --- Hugging Face -----------------------------------------------------------

def config_from_hf(config: Dict[str, Any]) -> t5.T5Config:
  """T5Config from a HF T5 `config.json`."""
  proj = config.get('feed_forward_proj', 'relu')
  activations = {'relu': ('relu',), 'gated-gelu': ('gelu', 'linear'),
                 'gated-relu': ('relu', 'linear'), 'gelu': ('gelu',)}.get(proj)
  if activations is None:
    raise CheckpointError(f'Unsupported feed_forward_proj {proj!r} in config.json.')
  return t5.T5Config(
      vocab_size=config['vocab_size'], emb_dim=config['d_model'], num_heads=config['num_heads'],
      num_encoder_layers=config['num_layers'],
      num_decoder_layers=config.get('num_decoder_layers') or config['num_layers'],
      head_dim=config['d_kv'], mlp_dim=config['d_ff'], mlp_activations=activations,
      logits_via_embedding=config.get('tie_word_embeddings', True),
      relative_attention_num_buckets=config.get('relative_attention_num_buckets', 32),
      relative_attention_max_distance=config.get('relative_attention_max_distance', 128),
      layer_norm_epsilon=config.get('layer_norm_epsilon', 1e-6))


def _hf_names(config: t5.T5Config) -> Dict[str, Tuple[str, bool]]:
  """Our param path -> (HF tensor name, whether to transpose)."""
  names = {'token_embedder/embedding': ('shared.weight', False)}
  mlp = ['wi'] if len(config.mlp_activations) == 1 else [f'wi_{i}' for i in range(len(config.mlp_activations))]

  def attention(ours, theirs):
    for a, b in (('query', 'q'), ('key', 'k'), ('value', 'v'), ('out', 'o')):
      names[f'{ours}/{a}/kernel'] = (f'{theirs}.{b}.weight', True)

  def mlp_block(ours, theirs):
    for m in mlp + ['wo']:
      names[f'{ours}/{m}/kernel'] = (f'{theirs}.{m}.weight', True)

  for i in range(config.num_encoder_layers):
    b = f'encoder.block.{i}.layer'
    names[f'encoder/layers_{i}/pre_attention_layer_norm/scale'] = (f'{b}.0.layer_norm.weight', False)
    attention(f'encoder/layers_{i}/attention', f'{b}.0.SelfAttention')
    names[f'encoder/layers_{i}/pre_mlp_layer_norm/scale'] = (f'{b}.1.layer_norm.weight', False)
    mlp_block(f'encoder/layers_{i}/mlp', f'{b}.1.DenseReluDense')
  for i in range(config.num_decoder_layers):
    b = f'decoder.block.{i}.layer'
    layer = f'decoder/layers_{i}'
    names[f'{layer}/pre_self_attention_layer_norm/scale'] = (f'{b}.0.layer_norm.weight', False)
    attention(f'{layer}/self_attention', f'{b}.0.SelfAttention')
    names[f'{layer}/pre_cross_attention_layer_norm/scale'] = (f'{b}.1.layer_norm.weight', False)
    attention(f'{layer}/encoder_decoder_attention', f'{b}.1.EncDecAttention')
    names[f'{layer}/pre_mlp_layer_norm/scale'] = (f'{b}.2.layer_norm.weight', False)
    mlp_block(f'{layer}/mlp', f'{b}.2.DenseReluDense')
  for side in ('encoder', 'decoder'):
    names[f'{side}/relpos_bias/rel_embedding'] = (
        f'{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight', True)
    names[f'{side}/{side}_norm/scale'] = (f'{side}.final_layer_norm.weight', False)
  if not config.logits_via_embedding:
    names['decoder/logits_dense/kernel'] = ('lm_head.weight', True)
  return names


def _load_hf(path: str, only: Optional[Sequence[str]]) -> Tuple[Params, t5.T5Config]:
  config_file = _join(path, 'config.json')
  if not _exists(config_file):
    raise CheckpointError(f'{path} looks like a Hugging Face checkpoint but has no config.json; '
                          'it is needed for the model sizes (save it with save_pretrained).')
  config = config_from_hf(json.loads(_read_bytes(config_file)))
  names = {p: n for p, n in _hf_names(config).items() if _wanted(p, only)}
  _check_only_found(names, only, path)
  tensors = _hf_tensors(path, [n for n, _ in names.values()])
  flat = {}
  for ours, (theirs, transpose) in names.items():
    if theirs not in tensors:
      raise CheckpointError(f'{path} has no tensor {theirs!r} (for {ours}).')
    value = tensors[theirs]
    flat[ours] = np.ascontiguousarray(value.T) if transpose else value
  return _unflatten(flat), config


def _hf_tensors(path: str, wanted: Iterable[str]) -> Dict[str, np.ndarray]:
  """Reads only `wanted` tensors from safetensors (lazily) or a torch .bin."""
  wanted = set(wanted)
  index = _join(path, 'model.safetensors.index.json')
  single = _join(path, 'model.safetensors')
  if _exists(index) or _exists(single):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    if _exists(index):
      weight_map = json.loads(_read_bytes(index))['weight_map']
      files = {}
      for name in wanted:
        if name in weight_map:
          files.setdefault(weight_map[name], []).append(name)
    else:
      files = {'model.safetensors': list(wanted)}
    out = {}
    for file, names in files.items():
      with safe_open(_join(path, file), framework='np') as f:
        keys = set(f.keys())
        for name in names:
          if name in keys:
            out[name] = f.get_tensor(name)
    return out
  bin_file = _join(path, 'pytorch_model.bin')
  if _exists(bin_file):
    import torch  # pylint: disable=g-import-not-at-top
    state = torch.load(bin_file, map_location='cpu', weights_only=True)
    return {k: v.float().numpy() for k, v in state.items() if k in wanted}
  raise CheckpointError(f'{path} has config.json but no model.safetensors, '
                        'model.safetensors.index.json or pytorch_model.bin.')


# --- Configs and validation -------------------------------------------------

def config_from_params(params: Params) -> t5.T5Config:
  """Infers a T5Config from a full T5X parameter tree's shapes."""
  try:
    emb = params['token_embedder']['embedding']
    enc, dec = params['encoder'], params['decoder']
    rel = enc['relpos_bias']['rel_embedding']
    query = enc['layers_0']['attention']['query']['kernel']
    mlp = enc['layers_0']['mlp']
  except KeyError as e:
    raise CheckpointError(f'Cannot infer a T5 config: the parameter tree lacks {e}.') from None
  num_heads = rel.shape[0]
  activations = ('relu',) if 'wi' in mlp else ('gelu', 'linear')
  count = lambda side: sum(1 for k in side if re.fullmatch(r'layers_\d+', k))
  return t5.T5Config(
      vocab_size=emb.shape[0], emb_dim=emb.shape[1], num_heads=num_heads,
      num_encoder_layers=count(enc), num_decoder_layers=count(dec),
      head_dim=query.shape[1] // num_heads, mlp_dim=mlp['wo']['kernel'].shape[0],
      mlp_activations=activations, logits_via_embedding='logits_dense' not in dec,
      relative_attention_num_buckets=rel.shape[1])


def validate_params(params: Params, config: t5.T5Config, source: str) -> None:
  """Checks `params` has exactly the tree and shapes `T5(config)` expects.

  Raises:
    CheckpointError: naming each missing or unexpected parameter, or the first
      shape that disagrees (both shapes), and the source.
  """
  tokens = np.ones((1, 1), np.int32)
  abstract = jax.eval_shape(t5.T5(config).init, jax.random.key(0), tokens, tokens)
  expected = {p: tuple(v.shape) for p, v in _flatten(
      flax.linen.unbox(abstract)['params']).items()}
  found = {p: tuple(np.shape(v)) for p, v in _flatten(params).items()}
  missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
  if missing or extra:
    raise CheckpointError(f'{source} does not match the configured model: missing {missing[:5]}'
                          f'{"..." if len(missing) > 5 else ""}, unexpected {extra[:5]}'
                          f'{"..." if len(extra) > 5 else ""}. Check the model gin file '
                          f'(config: {config}).')
  for path, shape in expected.items():
    if found[path] != shape:
      raise CheckpointError(f'{source}: parameter {path!r} has shape {found[path]}, but the '
                            f'configured model expects {shape} (emb_dim={config.emb_dim}, '
                            f'num_heads={config.num_heads}, head_dim={config.head_dim}, '
                            f'mlp_dim={config.mlp_dim}).')
