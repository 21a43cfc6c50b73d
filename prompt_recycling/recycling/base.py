"""The recycler interface, its registry, input checks, save/load and vocab sharding.

A recycler maps a soft prompt trained against one frozen model (the *source*)
into the embedding space of another (the *target*), using only the two models'
token embedding tables. As in optax, a recycler is a pair of pure functions:

  params = recycler.fit(source, target, rng)   # source: [vocab, source_embed]
  out = recycler.apply(params, prompt)         # [prompt_length, source_embed]
                                               #   -> [prompt_length, target_embed]

Row `i` of `source` and row `i` of `target` must be the same token: select and
align the vocabulary first (`vocab.py`). Hyperparameters are bound when the
recycler is built, e.g. `get_recycler('v2v-nn', hidden_scale=4)`; `params` is a
dict of arrays that `save`/`load` write to and read from one `.npz` file.

Every computation over the vocabulary (Gram matrices, cosine similarities,
nearest neighbours) runs jitted on tables that may be split over a device mesh's
vocabulary dimension: `shard_rows` pads the rows to a multiple of the device
count with zero rows and returns a mask that keeps the padding out of every
max, argmax and mean, so the result is the same on 1 device as on 8.
"""
import difflib
import inspect
import os
import tempfile
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from prompt_recycling import prompts

# Embedding-table rows (the vocabulary) are split over every device of the
# mesh: the tables are the only large arrays here, and nothing else is sharded.
VOCAB_MESH_AXES = ('data', 'model')
# All matmuls over tables use full float32: on TPU/GPU the default bf16/tf32
# passes would change nearest-neighbour ids and least-squares solutions.
PRECISION = jax.lax.Precision.HIGHEST
# Rows with a smaller norm count as zero when normalising (padding rows).
_NORM_EPS = 1e-12

Params = Dict[str, Any]


class Recycler(NamedTuple):
  """A prompt recycler: two pure functions, hyperparameters already bound.

  Attributes:
    fit: `(source [vocab, source_embed], target [vocab, target_embed], rng)
      -> params`, a dict of arrays. Row i of both tables is the same token.
    apply: `(params, prompt [prompt_length, source_embed])
      -> [prompt_length, target_embed]` float32.
  """
  fit: Callable[[Any, Any, jax.Array], Params]
  apply: Callable[[Params, Any], jax.Array]


# ----------------------------------------------------------------------------
# Registry.

_REGISTRY: Dict[str, Callable[..., Recycler]] = {}


def register(name: str) -> Callable[[Callable[..., Recycler]], Callable[..., Recycler]]:
  """Decorator registering a recycler constructor under `name`."""
  def decorator(constructor):
    previous = _REGISTRY.get(name)
    # A module reload re-registers the same function; anything else is a clash.
    if previous is not None and (previous.__module__, previous.__qualname__) != (
        constructor.__module__, constructor.__qualname__):
      raise ValueError(f'Recycler {name!r} is already registered by {_REGISTRY[name].__module__}.')
    _REGISTRY[name] = constructor
    return constructor
  return decorator


def recycler_names() -> Tuple[str, ...]:
  """The registered recycler names, sorted."""
  _import_families()
  return tuple(sorted(_REGISTRY))


def get_recycler(name: str, **kwargs) -> Recycler:
  """Builds the recycler registered as `name` with hyperparameters `kwargs`.

  Args:
    name: one of `recycler_names()`: 'v2v-lin', 'lin-comb', 'v2v-nn',
      'neural-projector', 'relative', 'nearest-neighbor'.
    **kwargs: the constructor's hyperparameters, e.g. `mesh=`, `steps=`.

  Returns:
    The `Recycler`.

  Raises:
    ValueError: `name` is not registered; the message lists close matches and
      every known name.
  """
  _import_families()
  if name not in _REGISTRY:
    close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
    hint = f' Did you mean {", ".join(repr(c) for c in close)}?' if close else ''
    raise ValueError(f'Unknown recycler {name!r}.{hint} Known recyclers: {", ".join(sorted(_REGISTRY))}.')
  return _REGISTRY[name](**kwargs)


def _import_families():
  # The families register themselves on import; the package imports them all.
  import prompt_recycling.recycling  # pylint: disable=g-import-not-at-top,unused-import


def fit_tables(recycler: Recycler, source, target, ids, rng, target_ids=None) -> Params:
  """Fits `recycler` on rows `ids` of two full, row-aligned embedding tables.

  Models of different vocabularies pair source row `ids[j]` with target row
  `target_ids[j]` (the same anchor word: `vocab.select_pairs`).

  A recycler whose `fit` takes `target_table` (`relative`: the authors rescale
  to the whole target table's mean and std) also gets the full target table.

  Args:
    recycler: from `get_recycler`.
    source: [vocab, source_embed], the whole source table.
    target: [vocab, target_embed], the whole target table.
    ids: [num_tokens] the fit rows (`vocab.select`).
    rng: the fit key.
    target_ids: [num_tokens] the target's rows of the same tokens; default `ids`.

  Returns:
    The fitted params.
  """
  kwargs = {}
  if 'target_table' in inspect.signature(recycler.fit).parameters:
    kwargs['target_table'] = target
  ids = np.asarray(ids)
  target_ids = ids if target_ids is None else np.asarray(target_ids)
  return recycler.fit(np.asarray(source)[ids], np.asarray(target)[target_ids], rng, **kwargs)


# ----------------------------------------------------------------------------
# Input checks shared by every recycler.


def _all_finite(x) -> bool:
  if isinstance(x, jax.Array):
    return bool(jnp.isfinite(x).all())
  return bool(np.isfinite(x).all())


def check_finite(x, name: str):
  """Raises ValueError if `x` holds a NaN or an infinity."""
  if not _all_finite(x):
    raise ValueError(f'{name} (shape {tuple(np.shape(x))}) contains NaN or Inf values; '
                     'expected finite embeddings.')


def check_table(table, name: str):
  """Checks that `table` is a finite, non-empty `[vocab, embed]` matrix."""
  if np.ndim(table) != 2 or 0 in np.shape(table):
    raise ValueError(f'{name} must be a non-empty [vocab, embed] matrix; found shape '
                     f'{tuple(np.shape(table))}.')
  check_finite(table, name)


def check_tables(source, target):
  """Checks a (source, target) pair of aligned embedding tables.

  Args:
    source: [vocab, source_embed].
    target: [vocab, target_embed], row i the same token as `source` row i.

  Raises:
    ValueError: a table is not 2-D, is empty or not finite, or the two have a
      different number of rows (the vocabulary was not aligned).
  """
  check_table(source, 'source embedding table')
  check_table(target, 'target embedding table')
  if np.shape(source)[0] != np.shape(target)[0]:
    raise ValueError(
        f'source table has {np.shape(source)[0]} rows (shape {tuple(np.shape(source))}) but target '
        f'table has {np.shape(target)[0]} (shape {tuple(np.shape(target))}); expected the same '
        'vocabulary rows in both: select and align the vocabulary first (recycling/vocab.py).')


def check_prompt(prompt, source_embed: int) -> jax.Array:
  """Checks a source prompt and returns it as float32.

  Args:
    prompt: [prompt_length, source_embed].
    source_embed: the width of the source table the recycler was fit on.

  Returns:
    `prompt` as a float32 array.

  Raises:
    ValueError: `prompt` is not 2-D, has the wrong width, or is not finite.
  """
  shape = tuple(np.shape(prompt))
  if len(shape) != 2 or shape[1] != source_embed or shape[0] == 0:
    raise ValueError(f'prompt has shape {shape}; expected [prompt_length, {source_embed}] '
                     f'(prompt_length > 0, width = the source embedding width {source_embed}).')
  check_finite(prompt, 'prompt')
  return jnp.asarray(prompt, jnp.float32)


# ----------------------------------------------------------------------------
# Save / load.


def save(params: Params, path: str) -> None:
  """Writes fitted recycler params to one `.npz` (keys joined by '/'), atomically; refuses NaN/Inf."""
  prompts.save_params(params, path)


def load(path: str) -> Params:
  """Reads params written by `save` back into a nested dict of numpy arrays."""
  try:
    return prompts.load_params(path)
  except ValueError as e:
    raise ValueError(f'{path} is not a recycler params file (.npz written by recycling.save): '
                     f'{e}') from e


# ----------------------------------------------------------------------------
# Vocabulary sharding.


def vocab_sharding(mesh: Mesh) -> NamedSharding:
  """Rows over every device of `mesh`, columns whole: `P(('data','model'), None)`."""
  return NamedSharding(mesh, P(VOCAB_MESH_AXES, None))


def shard_rows(table, mesh: Optional[Mesh] = None,
               mask=None) -> Tuple[jax.Array, jax.Array]:
  """Pads `table`'s rows to a multiple of the mesh size and splits them over it.

  Args:
    table: [vocab, embed] (or a table already padded, with its `mask`).
    mesh: a mesh with axes ('data', 'model'); None keeps one device and pads
      nothing.
    mask: [vocab] bool, True for real rows; None means every row is real.

  Returns:
    (table [padded_vocab, embed] float32, mask [padded_vocab] bool), both split
    over the mesh's devices; padding rows are zero and masked out.
  """
  table = jnp.asarray(table, jnp.float32)
  vocab = table.shape[0]
  mask = jnp.ones((vocab,), bool) if mask is None else jnp.asarray(mask, bool)
  if mesh is None:
    return table, mask
  pad = -vocab % mesh.devices.size
  if pad:
    table = jnp.pad(table, ((0, pad), (0, 0)))
    mask = jnp.pad(mask, (0, pad))
  table = jax.device_put(table, vocab_sharding(mesh))
  mask = jax.device_put(mask, NamedSharding(mesh, P(VOCAB_MESH_AXES)))
  return table, mask


def replicate(x, mesh: Optional[Mesh] = None) -> jax.Array:
  """`x` as float32, on every device of `mesh` (or the default device)."""
  x = jnp.asarray(x, jnp.float32)
  return x if mesh is None else jax.device_put(x, NamedSharding(mesh, P()))


def normalize_rows(x: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm; zero rows (padding) stay zero."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, _NORM_EPS * _NORM_EPS))


@jax.jit
def cross_products(source: jax.Array, target: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Gram and cross matrices of two row-aligned tables, reduced over the vocab.

  Zero padding rows add nothing, so no mask is needed.

  Args:
    source: [vocab, source_embed], possibly split over devices by rows.
    target: [vocab, target_embed], split the same way.

  Returns:
    (source^T source [source_embed, source_embed],
     source^T target [source_embed, target_embed]), float32.
  """
  gram = jnp.matmul(source.T, source, precision=PRECISION)
  cross = jnp.matmul(source.T, target, precision=PRECISION)
  return gram, cross


@jax.jit
def gram(table: jax.Array) -> jax.Array:
  """table^T table [embed, embed] float32, reduced over the (sharded) vocab."""
  return jnp.matmul(table.T, table, precision=PRECISION)


@jax.jit
def masked_moments(table: jax.Array, mask: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Mean row, overall std and mean row norm of the real rows of `table`.

  Args:
    table: [vocab, embed].
    mask: [vocab] bool, False for padding.

  Returns:
    (mean [embed], std [] over all entries about `mean`, mean L2 norm []).
  """
  w = mask.astype(table.dtype)[:, None]
  count = jnp.sum(w)
  mean = jnp.sum(table * w, axis=0) / count
  var = jnp.sum(jnp.square(table - mean) * w) / (count * table.shape[1])
  norm = jnp.sum(jnp.linalg.norm(table, axis=-1) * w[:, 0]) / count
  return mean, jnp.sqrt(var), norm


def _similarities(queries, table, mask, metric):
  """[n, vocab] scores (higher = nearer); padding rows score -inf."""
  if metric == 'cosine':
    scores = jnp.matmul(normalize_rows(queries), normalize_rows(table).T, precision=PRECISION)
  elif metric == 'euclidean':
    # -|q - t|^2 up to the per-query constant |q|^2, which does not move argmax.
    scores = (2 * jnp.matmul(queries, table.T, precision=PRECISION)
              - jnp.sum(jnp.square(table), axis=-1)[None, :])
  else:
    raise ValueError(f"metric must be 'cosine' or 'euclidean'; found {metric!r}.")
  return jnp.where(mask[None, :], scores, -jnp.inf)


def _top_k_chunk(queries, table, mask, k, metric):
  scores, ids = jax.lax.top_k(_similarities(queries, table, mask, metric), k)
  return ids, scores


_top_k_chunk_jit = jax.jit(_top_k_chunk, static_argnames=('k', 'metric'))


def nearest_rows(queries, table: jax.Array, mask: jax.Array, k: int = 1,
                 metric: str = 'cosine', chunk_size: int = 512) -> Tuple[np.ndarray, np.ndarray]:
  """The `k` rows of `table` nearest to each query, without a [vocab, vocab] matrix.

  Queries are scored `chunk_size` at a time, so memory is at most
  [chunk_size, vocab] scores (split over devices with the table).

  Args:
    queries: [n, embed].
    table: [vocab, embed], possibly padded and split over devices by rows.
    mask: [vocab] bool; False rows (padding) are never returned.
    k: neighbours per query.
    metric: 'cosine' (scores are cosine similarities) or 'euclidean' (scores
      are 2 q.t - |t|^2: the order of -|q - t|^2).
    chunk_size: queries per jitted call; the last chunk is zero-padded so one
      compilation serves all.

  Returns:
    (ids [n, k] int32 row indices, scores [n, k] float32), best first, as numpy.
  """
  queries = jnp.asarray(queries, jnp.float32)
  n = queries.shape[0]
  num_real = int(np.asarray(mask).sum())
  if not 0 < k <= num_real:
    raise ValueError(f'k={k} must be in [1, {num_real}] (the number of real table rows).')
  chunk = min(chunk_size, n)
  ids, scores = [], []
  for start in range(0, n, chunk):
    block = queries[start:start + chunk]
    real = block.shape[0]
    if real < chunk:
      block = jnp.pad(block, ((0, chunk - real), (0, 0)))
    block_ids, block_scores = _top_k_chunk_jit(block, table, mask, k=k, metric=metric)
    ids.append(np.asarray(block_ids)[:real])
    scores.append(np.asarray(block_scores)[:real])
  return np.concatenate(ids), np.concatenate(scores)
