"""Encode-then-search recycling (Wu, Wu & Mou, 2024) and nearest-neighbour discretisation.

Relative encoding. With K anchor tokens whose embeddings are A_s [K, source_embed]
in the source model and A_t [K, target_embed] in the target model (the same
token ids), a vector is described by its cosine similarities to the anchors:

  rel_s(x) = cos(x, A_s) [K],   rel_t(z) = cos(z, A_t) [K].

Cosine similarity ignores rotations and scale, so rel_s(prompt) is a
description of the prompt that the target model's space can be asked to match.
The target prompt z [prompt_length, target_embed] is found by gradient search:

  z = argmin_z  L(rel_t(z), rel_s(prompt))

with L the mean squared error or 1 - cosine between the (optionally
standardised) relative vectors, minimised by Adam from an initial z (random
with the target anchors' mean and std, their mean, or the least-squares linear
map of `linear.py`). Several source models can describe one task together:
`recycle_multi_source` averages their relative encodings before the search.

Since rel_t is blind to the norm of z, the search fixes only directions; with
`match_norm` each recycled row gets the norm of its source row times
(mean target anchor norm / mean source anchor norm).

The anchors are the first `num_anchors` rows of the fit vocabulary (T5's
SentencePiece ids run roughly from frequent to rare, so these are the commonest
tokens, as in Wu et al.); the anchor tables are split over the mesh's devices
and padding anchors are masked out of every mean.

`nearest-neighbor` (Lester et al., 2022) replaces each prompt row by the nearest
source token (cosine or euclidean) and takes that token's target row.
"""
import dataclasses
import functools
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from prompt_recycling.recycling import base
from prompt_recycling.recycling import linear

LOSSES = ('mse', 'cosine')
INITS = ('random', 'mean', 'linear')


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """How the target prompt is searched for.

  Attributes:
    loss: 'mse' or 'cosine' (1 - cos) between relative encodings.
    normalize: standardise each relative vector over the anchors (zero mean,
      unit std) before the loss, so only its pattern matters.
    learning_rate: Adam's step size, in units of the target anchors' std (the
      search runs on z standardised by the target anchors' mean and std).
    steps: Adam steps.
    init: 'random' (target mean + std * N(0, 1), from the fit rng), 'mean' (the
      target anchors' mean row) or 'linear' (prompt @ W, W the least-squares
      map fit on the vocabulary).
    match_norm: rescale each recycled row to its source row's norm times the
      target / source mean anchor norm ratio.
  """
  loss: str = 'mse'
  normalize: bool = True
  learning_rate: float = 0.1
  steps: int = 1000
  init: str = 'random'
  match_norm: bool = True

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ValueError(f'loss {self.loss!r} is not one of {LOSSES}.')
    if self.init not in INITS:
      raise ValueError(f'init {self.init!r} is not one of {INITS}.')
    if self.steps < 0:
      raise ValueError(f'steps must be >= 0; found {self.steps}.')


def relative_encoding(x: jax.Array, anchors: jax.Array, mask: jax.Array,
                      normalize: bool = False) -> jax.Array:
  """Cosine similarities of each row of `x` to the anchors.

  Args:
    x: [n, embed].
    anchors: [num_anchors, embed], possibly padded and split over devices.
    mask: [num_anchors] bool, False for padding anchors.
    normalize: standardise each row over the real anchors.

  Returns:
    [n, num_anchors] float32; padding entries are 0.
  """
  sims = jnp.matmul(base.normalize_rows(x), base.normalize_rows(anchors).T,
                    precision=base.PRECISION)
  weight = mask.astype(sims.dtype)[None, :]
  sims = sims * weight
  if normalize:
    count = jnp.sum(weight)
    mean = jnp.sum(sims, axis=-1, keepdims=True) / count
    centered = (sims - mean) * weight
    std = jnp.sqrt(jnp.sum(jnp.square(centered), axis=-1, keepdims=True) / count)
    sims = centered / jnp.maximum(std, 1e-12)
  return sims


_relative_encoding_jit = jax.jit(relative_encoding, static_argnames='normalize')


def average_relative_encodings(pairs: Sequence[Tuple[jax.Array, jax.Array]], mask: jax.Array,
                               normalize: bool = False) -> jax.Array:
  """The mean relative encoding of several (prompt, anchors) pairs.

  Args:
    pairs: (prompt [prompt_length, source_embed_i], anchors
      [num_anchors, source_embed_i]) per source model; the anchors of every
      source are the same token ids, in the same order.
    mask: [num_anchors] bool, shared by every source.
    normalize: standardise each encoding before averaging.

  Returns:
    [prompt_length, num_anchors].
  """
  encodings = [_relative_encoding_jit(p, a, mask, normalize=normalize) for p, a in pairs]
  shapes = {e.shape for e in encodings}
  if len(shapes) != 1:
    raise ValueError(f'relative encodings differ in shape {sorted(shapes)}; expected one '
                     '[prompt_length, num_anchors] for every source (same prompt length and '
                     'anchor tokens).')
  return sum(encodings) / len(encodings)


def _search_loss(z, goal, target_anchors, mask, cfg: SearchConfig):
  rel = relative_encoding(z, target_anchors, mask, cfg.normalize)
  if cfg.loss == 'mse':
    count = jnp.sum(mask.astype(rel.dtype)) * rel.shape[0]
    return jnp.sum(jnp.square(rel - goal)) / count
  return jnp.mean(1.0 - jnp.sum(base.normalize_rows(rel) * base.normalize_rows(goal), axis=-1))


@functools.partial(jax.jit, static_argnames='cfg')
def search(goal: jax.Array, target_anchors: jax.Array, mask: jax.Array, init: jax.Array,
           target_mean: jax.Array, target_std: jax.Array,
           cfg: SearchConfig) -> Tuple[jax.Array, jax.Array]:
  """Adam search for z whose relative encoding matches `goal`.

  Args:
    goal: [prompt_length, num_anchors], the source prompt's relative encoding
      (standardised if `cfg.normalize`).
    target_anchors: [num_anchors, target_embed].
    mask: [num_anchors] bool.
    init: [prompt_length, target_embed], the starting z.
    target_mean: [target_embed]; z is searched as target_mean + target_std * u.
    target_std: [].
    cfg: search settings (`loss`, `normalize`, `learning_rate`, `steps`).

  Returns:
    (z [prompt_length, target_embed], losses [steps]: the loss before each step).
  """
  # Normalised once, not at every step.
  anchors = base.normalize_rows(target_anchors)
  tx = optax.adam(cfg.learning_rate)

  def loss_fn(u):
    return _search_loss(target_mean + target_std * u, goal, anchors, mask, cfg)

  def step(carry, _):
    u, opt_state = carry
    loss, grad = jax.value_and_grad(loss_fn)(u)
    updates, opt_state = tx.update(grad, opt_state, u)
    return (optax.apply_updates(u, updates), opt_state), loss

  u = (init - target_mean) / target_std
  (u, _), losses = jax.lax.scan(step, (u, tx.init(u)), None, length=cfg.steps)
  return target_mean + target_std * u, losses


def _rescale(z, norms):
  return base.normalize_rows(z) * norms[:, None]


def _anchor_tables(params, mesh):
  source, mask = base.shard_rows(params['source_anchors'], mesh, params['mask'])
  target, _ = base.shard_rows(params['target_anchors'], mesh, params['mask'])
  return source, target, mask


def _init(params, prompt, cfg: SearchConfig, mesh) -> jax.Array:
  """[prompt_length, target_embed] starting point of the search."""
  mean = jnp.asarray(params['target_mean'], jnp.float32)
  length = prompt.shape[0]
  if cfg.init == 'linear':
    return jnp.matmul(prompt, jnp.asarray(params['linear_map'], jnp.float32),
                      precision=base.PRECISION)
  if cfg.init == 'mean':
    # Every row starts at the same point; their different goals pull them apart.
    return jnp.broadcast_to(mean, (length, mean.shape[0]))
  key = jnp.asarray(params['init_rng'], jnp.uint32)
  noise = jax.random.normal(key, (length, mean.shape[0]), jnp.float32)
  return base.replicate(mean + params['target_std'] * noise, mesh)


@base.register('relative')
def relative(num_anchors: int = 8192, loss: str = 'mse', normalize: bool = True,
             learning_rate: float = 0.1, steps: int = 1000, init: str = 'random',
             match_norm: bool = True, mesh: Optional[Mesh] = None) -> base.Recycler:
  """`relative`: encode the prompt relative to anchor tokens, search the target.

  Args:
    num_anchors: anchors = the first `num_anchors` rows of the fit vocabulary
      (all rows if fewer). Use at least the embedding widths.
    loss, normalize, learning_rate, steps, init, match_norm: see `SearchConfig`.
    mesh: split the anchor tables over this ('data', 'model') mesh.

  Returns:
    A `Recycler` whose params are {'source_anchors': [num_anchors, source_embed],
    'target_anchors': [num_anchors, target_embed], 'mask': [num_anchors] bool,
    'target_mean': [target_embed], 'target_std': [], 'norm_ratio': [],
    'init_rng': [2] uint32, and 'linear_map' [source_embed, target_embed] if
    init='linear'} (anchor tables padded for the mesh).
  """
  cfg = SearchConfig(loss, normalize, learning_rate, steps, init, match_norm)
  if num_anchors < 1:
    raise ValueError(f'num_anchors must be positive; found {num_anchors}.')

  def fit(source, target, rng):
    base.check_tables(source, target)
    k = min(num_anchors, np.shape(source)[0])
    source_anchors, mask = base.shard_rows(source[:k], mesh)
    target_anchors, _ = base.shard_rows(target[:k], mesh)
    target_mean, target_std, target_norm = base.masked_moments(target_anchors, mask)
    _, _, source_norm = base.masked_moments(source_anchors, mask)
    if rng is None:
      if cfg.init == 'random':
        raise ValueError("relative(init='random') needs a PRNG key for fit; found rng=None.")
      key = np.zeros(2, np.uint32)
    elif jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
      key = jax.random.key_data(rng)
    else:
      key = rng
    params = {'source_anchors': source_anchors, 'target_anchors': target_anchors, 'mask': mask,
              'target_mean': target_mean, 'target_std': target_std,
              'norm_ratio': target_norm / source_norm,
              'init_rng': jnp.asarray(key, jnp.uint32)}
    if cfg.init == 'linear':
      params['linear_map'] = jnp.asarray(linear.solve_least_squares(source, target, mesh=mesh),
                                         jnp.float32)
    return params

  def apply(params, prompt):
    return recycle_multi_source([params], [prompt], cfg, mesh)

  return base.Recycler(fit, apply)


def recycle_multi_source(params_list: Sequence[base.Params], prompts: Sequence[jax.Array],
                         cfg: SearchConfig = SearchConfig(),
                         mesh: Optional[Mesh] = None) -> jax.Array:
  """One target prompt from prompts of several source models for the same task.

  The relative encodings of the source prompts are averaged (each against its
  own model's anchors) and one search matches the average. With
  init='linear', the start is the mean of the sources' linear maps (otherwise
  the first source's random draw or mean row); with match_norm, the row norms
  are the mean of the sources' predictions.

  Args:
    params_list: `relative(...).fit` params per source model, all fit with the
      same target table and anchor tokens.
    prompts: [prompt_length, source_embed_i] per source, same prompt_length.
    cfg: search settings.
    mesh: split the anchor tables over this mesh.

  Returns:
    [prompt_length, target_embed] float32.

  Raises:
    ValueError: mismatched counts, prompt shapes or target anchors.
  """
  if not params_list or len(params_list) != len(prompts):
    raise ValueError(f'Expected one params per prompt; found {len(params_list)} params and '
                     f'{len(prompts)} prompts.')
  reference = np.asarray(params_list[0]['target_anchors'])
  for i, params in enumerate(params_list[1:], 1):
    other = np.asarray(params['target_anchors'])
    if other.shape != reference.shape or not np.allclose(other, reference):
      raise ValueError(f'params_list[{i}] has target anchors of shape {other.shape} that differ '
                       f'from params_list[0]\'s {reference.shape}; every source must be fit '
                       'against the same target table and anchor tokens.')
  lengths = {np.shape(p)[0] if np.ndim(p) else 0 for p in prompts}
  if len(lengths) != 1:
    raise ValueError(f'Source prompts have lengths {sorted(lengths)}; expected one length.')
  pairs, norms = [], []
  for params, prompt in zip(params_list, prompts):
    source_anchors, target_anchors, mask = _anchor_tables(params, mesh)
    prompt = base.check_prompt(prompt, source_anchors.shape[1])
    pairs.append((prompt, source_anchors))
    norms.append(jnp.linalg.norm(prompt, axis=-1) * params['norm_ratio'])
  if cfg.init == 'linear':
    init = sum(_init(params, p, cfg, mesh) for params, (p, _) in zip(params_list, pairs))
    init = init / len(pairs)
  else:  # One random draw (or the mean row), from the first source's fit rng.
    init = _init(params_list[0], pairs[0][0], cfg, mesh)
  goal = average_relative_encodings(pairs, mask, cfg.normalize)
  params = params_list[0]
  z, _ = search(goal, target_anchors, mask, init,
                jnp.asarray(params['target_mean'], jnp.float32),
                jnp.asarray(params['target_std'], jnp.float32), cfg)
  if cfg.match_norm:
    z = _rescale(z, sum(norms) / len(norms))
  return z


@base.register('nearest-neighbor')
def nearest_neighbor(metric: str = 'cosine', mesh: Optional[Mesh] = None) -> base.Recycler:
  """`nearest-neighbor`: each prompt row -> nearest source token -> its target row.

  Args:
    metric: 'cosine' or 'euclidean'.
    mesh: split the tables over this ('data', 'model') mesh.

  Returns:
    A `Recycler` whose params are {'source': [vocab, source_embed],
    'target': [vocab, target_embed], 'mask': [vocab] bool} (padded for the mesh).
  """
  if metric not in ('cosine', 'euclidean'):
    raise ValueError(f"metric must be 'cosine' or 'euclidean'; found {metric!r}.")

  def fit(source, target, rng=None):
    del rng  # Deterministic.
    base.check_tables(source, target)
    source, mask = base.shard_rows(source, mesh)
    target, _ = base.shard_rows(target, mesh)
    return {'source': source, 'target': target, 'mask': mask}

  def apply(params, prompt):
    ids = nearest_ids(params, prompt, metric, mesh)
    target, _ = base.shard_rows(params['target'], mesh, params['mask'])
    return jnp.take(target, jnp.asarray(ids), axis=0)

  return base.Recycler(fit, apply)


def nearest_ids(params: base.Params, prompt, metric: str = 'cosine',
                mesh: Optional[Mesh] = None) -> np.ndarray:
  """Row index (into the fit vocabulary) of the source token nearest each prompt row.

  Args:
    params: from `nearest_neighbor(...).fit`.
    prompt: [prompt_length, source_embed].
    metric: 'cosine' or 'euclidean'.
    mesh: as given to `nearest_neighbor`.

  Returns:
    [prompt_length] int32 numpy.
  """
  source, mask = base.shard_rows(params['source'], mesh, params['mask'])
  prompt = base.check_prompt(prompt, source.shape[1])
  ids, _ = base.nearest_rows(prompt, source, mask, k=1, metric=metric)
  return ids[:, 0]

