"""Encode-then-search recycling (Wu, Wu & Mou, 2024) and nearest-neighbour discretisation.

Relative encoding. With K anchor tokens whose embeddings are A_s [K, source_embed]
in the source model and A_t [K, target_embed] in the target model (the same
words), a vector is described by its cosine similarities to the anchors:

  rel_s(x) = cos(x, A_s) [K],   rel_t(z) = cos(z, A_t) [K].

Cosine similarity ignores rotations and scale, so rel_s(prompt) is a
description of the prompt that the target model's space can be asked to match.
The target prompt is found by gradient search. The defaults are the authors'
(MANGA-UOFA/PTfer `rel2abs_GO.py` `Rel2abs_Decoder`, run as in its README and
`get_emb.sh`: `--all_anchors --topk 8192`, budget 2000, lr 5e-3):

* anchors: every row given to `fit` (pick them with
  `vocab.single_token_anchors`, the words of a list that are one token in every
  model; `vocab.select('words:PATH', ...)` for models sharing a tokenizer);
* goal: rel_s(prompt) [prompt_length, K], keeping each row's `top_k` = 8192
  largest similarities and zeroing the rest; the same mask multiplies rel_t;
* candidate c [prompt_length, target_embed], Xavier-normal init
  (std sqrt(2 / (prompt_length + target_embed))); at every step
  z = (c - mean(c)) / std(c) * table_std + table_mean, one scalar mean and std
  (unbiased, as `torch.std`) over the whole candidate, rescaled to the scalar
  mean and std of the *full* target embedding table (`fit(..., target_table=)`);
* loss: PyTorch's cosine embedding loss, mean over rows of 1 - cos(mask *
  rel_t(z), mask * rel_s(prompt)); Adam (lr 5e-3), 2,000 steps; the output is z.
* several sources (`rel2abs_GO_mix.py`): the loss against each source's goal is
  averaged; the top-k mask is the *last* source's, applied to every goal.
* the authors keep the best of the snapshots taken every 50 steps on the
  target's dev set; `search` returns those snapshots (z at iterations 50, 100,
  ...) so a caller can do the same (`recycle.py --select_on_dev`), while the
  default output is the final z (zero-shot).

The project's earlier variants stay available by name: `loss='mse'`,
`normalization='anchor_affine'` (search z = anchor mean + anchor std * u, a
per-dimension affine reparametrisation: lr in std units, e.g. 0.1),
`standardize_encoding=True` (compare standardised relative vectors),
`init='random' | 'mean' | 'linear'`, `match_norm=True` (rescale each output
row to its source row's norm times the target / source anchor norm ratio),
`multi_source='mean_encoding'` (one search against the averaged goal),
`num_anchors=N` (only the first N rows) and `top_k=0` (no mask).

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

LOSSES = ('cosine', 'mse')
NORMALIZATIONS = ('table_scalar', 'anchor_affine')
INITS = ('xavier', 'random', 'mean', 'linear')
MULTI_SOURCE = ('mean_loss', 'mean_encoding')
# PyTorch's cosine_embedding_loss adds this to both squared norms.
_COS_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """How the target prompt is searched for (defaults: Wu et al.'s code).

  Attributes:
    loss: 'cosine' (1 - cos per row, averaged) or 'mse' between the relative
      encodings.
    normalization: 'table_scalar' (the authors' per-step standardise and
      rescale to the target table's scalar mean and std) or 'anchor_affine'
      (the project's variant, see the module docstring).
    top_k: per prompt row, keep the goal's `top_k` largest similarities (0 or
      >= the number of anchors: keep all).
    learning_rate: Adam's step size.
    steps: Adam steps.
    init: 'xavier' (the authors'), 'random' (target anchor mean + std *
      N(0, 1)), 'mean' (the anchor mean row) or 'linear' (prompt @ W, the
      least-squares map fit on the anchors).
    standardize_encoding: standardise each (masked) relative vector over its
      kept anchors before the loss.
    match_norm: rescale each recycled row (see the module docstring).
    multi_source: 'mean_loss' (the authors') or 'mean_encoding'.
    snapshot_every: keep z every this many steps for dev selection (0: none).
  """
  loss: str = 'cosine'
  normalization: str = 'table_scalar'
  top_k: int = 8192
  learning_rate: float = 5e-3
  steps: int = 2000
  init: str = 'xavier'
  standardize_encoding: bool = False
  match_norm: bool = False
  multi_source: str = 'mean_loss'
  snapshot_every: int = 50

  def __post_init__(self):
    for name, value, allowed in (('loss', self.loss, LOSSES),
                                 ('normalization', self.normalization, NORMALIZATIONS),
                                 ('init', self.init, INITS),
                                 ('multi_source', self.multi_source, MULTI_SOURCE)):
      if value not in allowed:
        raise ValueError(f'{name} {value!r} is not one of {allowed}.')
    if self.steps < 0 or self.top_k < 0 or self.snapshot_every < 0:
      raise ValueError(f'steps, top_k and snapshot_every must be >= 0; found {self.steps}, '
                       f'{self.top_k}, {self.snapshot_every}.')


def relative_encoding(x: jax.Array, anchors: jax.Array, mask: jax.Array,
                      normalize: bool = False) -> jax.Array:
  """Cosine similarities of each row of `x` to the anchors, masked.

  Args:
    x: [n, embed].
    anchors: [num_anchors, embed], possibly padded and split over devices.
    mask: [num_anchors] or [n, num_anchors]; 0/False entries (padding
      anchors, or similarities outside a top-k) are zeroed.
    normalize: standardise each row over its kept entries.

  Returns:
    [n, num_anchors] float32; masked entries are 0.
  """
  sims = jnp.matmul(base.normalize_rows(x), base.normalize_rows(anchors).T,
                    precision=base.PRECISION)
  weight = jnp.broadcast_to(jnp.asarray(mask, sims.dtype), sims.shape)
  sims = sims * weight
  if normalize:
    count = jnp.sum(weight, axis=-1, keepdims=True)
    mean = jnp.sum(sims, axis=-1, keepdims=True) / count
    centered = (sims - mean) * weight
    std = jnp.sqrt(jnp.sum(jnp.square(centered), axis=-1, keepdims=True) / count)
    sims = centered / jnp.maximum(std, 1e-12)
  return sims


def top_k_mask(goal: jax.Array, anchor_mask: jax.Array, k: int) -> jax.Array:
  """1 at each row's `k` largest real-anchor entries of `goal`, else 0.

  Args:
    goal: [n, num_anchors] relative encoding.
    anchor_mask: [num_anchors] bool, False for padding anchors.
    k: entries kept per row; 0 or >= the real anchors keeps every real anchor.

  Returns:
    [n, num_anchors] float32.
  """
  num_real = int(np.asarray(anchor_mask).sum())
  real = jnp.broadcast_to(jnp.asarray(anchor_mask, jnp.float32), goal.shape)
  if k == 0 or k >= num_real:
    return real
  _, idx = jax.lax.top_k(jnp.where(real > 0, goal, -jnp.inf), k)
  return jnp.zeros_like(real).at[jnp.arange(goal.shape[0])[:, None], idx].set(1.0)


def cosine_embedding_loss(x: jax.Array, y: jax.Array) -> jax.Array:
  """mean_rows(1 - cos(x_row, y_row)), PyTorch's `CosineEmbeddingLoss` with target 1."""
  dot = jnp.sum(x * y, axis=-1)
  norms = (jnp.sum(jnp.square(x), axis=-1) + _COS_EPS) * (jnp.sum(jnp.square(y), axis=-1)
                                                          + _COS_EPS)
  return jnp.mean(1.0 - dot / jnp.sqrt(norms))


def to_target_space(c: jax.Array, stats, cfg: SearchConfig) -> jax.Array:
  """The candidate the target sees: z [prompt_length, target_embed].

  Args:
    c: [prompt_length, target_embed], the searched variable.
    stats: (mean, std): the target table's scalar mean and std for
      'table_scalar'; the anchors' mean row [target_embed] and overall std for
      'anchor_affine'.
    cfg: `normalization` picks the map.
  """
  mean, std = stats
  if cfg.normalization == 'table_scalar':
    # One mean and one unbiased std over every entry, as torch.mean / torch.std.
    centered = c - jnp.mean(c)
    c_std = jnp.sqrt(jnp.sum(jnp.square(centered)) / (c.size - 1))
    return centered / c_std * std + mean
  return mean + std * c


def _loss(z, goals, target_anchors, weight, cfg: SearchConfig):
  """Mean over goals [sources, prompt_length, num_anchors] of the loss to rel_t(z)."""
  rel = relative_encoding(z, target_anchors, weight, cfg.standardize_encoding)

  def one(goal):
    if cfg.loss == 'cosine':
      return cosine_embedding_loss(rel, goal)
    count = jnp.sum(weight)
    return jnp.sum(jnp.square(rel - goal)) / count

  return jnp.mean(jax.vmap(one)(goals))


@functools.partial(jax.jit, static_argnames='cfg')
def search(goals: jax.Array, target_anchors: jax.Array, weight: jax.Array, init: jax.Array,
           stats: Tuple[jax.Array, jax.Array],
           cfg: SearchConfig) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Adam search for z whose relative encoding matches the goals.

  Args:
    goals: [sources, prompt_length, num_anchors], each source prompt's masked
      relative encoding (standardised if `cfg.standardize_encoding`).
    target_anchors: [num_anchors, target_embed], already unit rows or not.
    weight: [prompt_length, num_anchors], the top-k and padding mask.
    init: [prompt_length, target_embed], the starting search variable c.
    stats: see `to_target_space`.
    cfg: search settings.

  Returns:
    (z [prompt_length, target_embed] after `steps` updates,
     losses [steps]: the loss at each step, before its update,
     snapshots [steps // snapshot_every, prompt_length, target_embed]: z at
     iterations snapshot_every, 2 snapshot_every, ... (z before that
     iteration's update, as the authors snapshot it)).
  """
  anchors = base.normalize_rows(target_anchors)  # Once, not at every step.
  tx = optax.adam(cfg.learning_rate)

  def loss_fn(c):
    return _loss(to_target_space(c, stats, cfg), goals, anchors, weight, cfg)

  def step(carry, _):
    c, opt_state = carry
    loss, grad = jax.value_and_grad(loss_fn)(c)
    updates, opt_state = tx.update(grad, opt_state, c)
    return (optax.apply_updates(c, updates), opt_state), loss

  carry = (init, tx.init(init))
  every = cfg.snapshot_every
  chunks = cfg.steps // every if every else 0
  snapshots = jnp.zeros((0,) + init.shape, init.dtype)
  losses = []
  if chunks:
    def chunk(carry, _):
      carry, first = jax.lax.scan(step, carry, None, length=every - 1)
      snapshot = to_target_space(carry[0], stats, cfg)
      carry, last = step(carry, None)
      return carry, (jnp.concatenate([first, last[None]]), snapshot)

    carry, (chunk_losses, snapshots) = jax.lax.scan(chunk, carry, None, length=chunks)
    losses.append(chunk_losses.reshape(-1))
  rest = cfg.steps - chunks * every
  if rest:
    carry, rest_losses = jax.lax.scan(step, carry, None, length=rest)
    losses.append(rest_losses)
  losses = jnp.concatenate(losses) if losses else jnp.zeros((0,), jnp.float32)
  return to_target_space(carry[0], stats, cfg), losses, snapshots


def _rescale(z, norms):
  return base.normalize_rows(z) * norms[:, None]


def _anchor_tables(params, mesh):
  source, mask = base.shard_rows(params['source_anchors'], mesh, params['mask'])
  target, _ = base.shard_rows(params['target_anchors'], mesh, params['mask'])
  return source, target, mask


def _stats(params, cfg: SearchConfig):
  if cfg.normalization == 'table_scalar':
    return (jnp.asarray(params['table_mean'], jnp.float32),
            jnp.asarray(params['table_std'], jnp.float32))
  return (jnp.asarray(params['target_mean'], jnp.float32),
          jnp.asarray(params['target_std'], jnp.float32))


def _init_z(params, prompt, cfg: SearchConfig, mesh) -> jax.Array:
  """[prompt_length, target_embed] starting z (target space) for the non-xavier inits."""
  mean = jnp.asarray(params['target_mean'], jnp.float32)
  length = prompt.shape[0]
  if cfg.init == 'linear':
    return jnp.matmul(prompt, jnp.asarray(params['linear_map'], jnp.float32),
                      precision=base.PRECISION)
  if cfg.init == 'mean':
    # Every row starts at the same point; their different goals pull them apart.
    return jnp.broadcast_to(mean, (length, mean.shape[0]))
  noise = jax.random.normal(_key(params), (length, mean.shape[0]), jnp.float32)
  return base.replicate(mean + params['target_std'] * noise, mesh)


def _key(params):
  return jnp.asarray(params['init_rng'], jnp.uint32)


def xavier_normal(rng: jax.Array, shape: Tuple[int, int]) -> jax.Array:
  """N(0, 2 / (fan_in + fan_out)) of `shape` [prompt_length, embed], as torch's xavier_normal_."""
  return jax.random.normal(rng, shape, jnp.float32) * np.sqrt(2.0 / (shape[0] + shape[1]))


def initial_candidate(params, prompt, cfg: SearchConfig, mesh=None) -> jax.Array:
  """The search variable c at step 0, [prompt_length, target_embed]."""
  if cfg.init == 'xavier':
    width = np.shape(params['target_anchors'])[1]
    return base.replicate(xavier_normal(_key(params), (prompt.shape[0], width)), mesh)
  z = _init_z(params, prompt, cfg, mesh)
  if cfg.normalization == 'table_scalar':
    return z  # The per-step standardisation makes any positive rescaling equivalent.
  mean, std = _stats(params, cfg)
  return (z - mean) / std


@base.register('relative')
def relative(num_anchors: Optional[int] = None, loss: str = 'cosine',
             normalization: str = 'table_scalar', top_k: int = 8192,
             learning_rate: float = 5e-3, steps: int = 2000, init: str = 'xavier',
             standardize_encoding: bool = False, match_norm: bool = False,
             multi_source: str = 'mean_loss', snapshot_every: int = 50,
             mesh: Optional[Mesh] = None) -> base.Recycler:
  """`relative`: encode the prompt relative to anchor tokens, search the target.

  Args:
    num_anchors: use only the first `num_anchors` rows given to `fit` (None:
      all, the authors' `--all_anchors`).
    loss, normalization, top_k, learning_rate, steps, init,
      standardize_encoding, match_norm, multi_source, snapshot_every: see
      `SearchConfig`.
    mesh: split the anchor tables over this ('data', 'model') mesh.

  Returns:
    A `Recycler` whose `fit(source, target, rng, target_table=None)` takes the
    anchor rows of both models and, optionally, the full target embedding
    table (its scalar mean and std set 'table_scalar'; without it the anchor
    rows' are used). Params: {'source_anchors': [num_anchors, source_embed],
    'target_anchors': [num_anchors, target_embed], 'mask': [num_anchors] bool,
    'table_mean': [], 'table_std': [], 'target_mean': [target_embed],
    'target_std': [], 'norm_ratio': [], 'init_rng': [2] uint32, and
    'linear_map' [source_embed, target_embed] if init='linear'} (anchor tables
    padded for the mesh).
  """
  cfg = SearchConfig(loss, normalization, top_k, learning_rate, steps, init,
                     standardize_encoding, match_norm, multi_source, snapshot_every)
  if num_anchors is not None and num_anchors < 1:
    raise ValueError(f'num_anchors must be positive; found {num_anchors}.')

  def fit(source, target, rng, target_table=None):
    base.check_tables(source, target)
    k = np.shape(source)[0] if num_anchors is None else min(num_anchors, np.shape(source)[0])
    source_anchors, mask = base.shard_rows(source[:k], mesh)
    target_anchors, _ = base.shard_rows(target[:k], mesh)
    target_mean, target_std, target_norm = base.masked_moments(target_anchors, mask)
    _, _, source_norm = base.masked_moments(source_anchors, mask)
    if target_table is None:
      table = np.asarray(target[:k])
    else:
      base.check_table(target_table, 'target_table')
      if np.shape(target_table)[1] != np.shape(target)[1]:
        raise ValueError(f'target_table has shape {tuple(np.shape(target_table))}; expected '
                         f'[vocab, {np.shape(target)[1]}] (the target anchors\' width).')
      table = np.asarray(target_table)
    if rng is None:
      if cfg.init in ('random', 'xavier'):
        raise ValueError(f"relative(init={cfg.init!r}) needs a PRNG key for fit; found rng=None.")
      key = np.zeros(2, np.uint32)
    elif jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
      key = jax.random.key_data(rng)
    else:
      key = rng
    params = {'source_anchors': source_anchors, 'target_anchors': target_anchors, 'mask': mask,
              # np.mean / np.std (ddof 0) of the whole table, as get_abs_anchors.
              'table_mean': jnp.float32(np.mean(table, dtype=np.float64)),
              'table_std': jnp.float32(np.std(table, dtype=np.float64)),
              'target_mean': target_mean, 'target_std': target_std,
              'norm_ratio': target_norm / source_norm,
              'init_rng': jnp.asarray(key, jnp.uint32)}
    if cfg.init == 'linear':
      params['linear_map'] = jnp.asarray(
          linear.solve_least_squares(source[:k], target[:k], mesh=mesh), jnp.float32)
    return params

  def apply(params, prompt):
    return recycle_multi_source([params], [prompt], cfg, mesh)

  return base.Recycler(fit, apply)


def goals_and_mask(params_list: Sequence[base.Params], prompts: Sequence[jax.Array],
                   cfg: SearchConfig, mesh: Optional[Mesh] = None):
  """The masked goals [sources, prompt_length, num_anchors] and their mask.

  The top-k mask comes from the last source's encoding and multiplies every
  source's (`rel2abs_GO_mix.py`); 'mean_encoding' averages the masked goals
  into one.
  """
  encodings = []
  for params, prompt in zip(params_list, prompts):
    source_anchors, _, mask = _anchor_tables(params, mesh)
    prompt = base.check_prompt(prompt, source_anchors.shape[1])
    encodings.append(relative_encoding(prompt, source_anchors, mask))
  shapes = {e.shape for e in encodings}
  if len(shapes) != 1:
    raise ValueError(f'relative encodings differ in shape {sorted(shapes)}; expected one '
                     '[prompt_length, num_anchors] for every source (same prompt length and '
                     'anchor tokens).')
  weight = top_k_mask(encodings[-1], mask, cfg.top_k)
  goals = jnp.stack([e * weight for e in encodings])
  if cfg.standardize_encoding:
    goals = jax.vmap(lambda g: _standardize(g, weight))(goals)
  if cfg.multi_source == 'mean_encoding':
    goals = jnp.mean(goals, axis=0, keepdims=True)
  return goals, weight


def _standardize(goal, weight):
  count = jnp.sum(weight, axis=-1, keepdims=True)
  mean = jnp.sum(goal, axis=-1, keepdims=True) / count
  centered = (goal - mean) * weight
  std = jnp.sqrt(jnp.sum(jnp.square(centered), axis=-1, keepdims=True) / count)
  return centered / jnp.maximum(std, 1e-12)


def search_multi_source(params_list: Sequence[base.Params], prompts: Sequence[jax.Array],
                        cfg: SearchConfig = SearchConfig(), mesh: Optional[Mesh] = None,
                        init: Optional[jax.Array] = None):
  """One target prompt from prompts of several source models, with its search trace.

  Args:
    params_list: `relative(...).fit` params per source model, all fit with the
      same target table and anchor words (in the same order).
    prompts: [prompt_length, source_embed_i] per source, same prompt_length.
    cfg: search settings.
    mesh: split the anchor tables over this mesh.
    init: the search variable at step 0 (default `initial_candidate` of the
      first source's params: its key for 'xavier'/'random'; the mean of the
      sources' linear maps for 'linear').

  Returns:
    (z [prompt_length, target_embed], losses [steps],
     snapshots [steps // snapshot_every, prompt_length, target_embed]); with
    `match_norm`, z and the snapshots are rescaled.

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
  goals, weight = goals_and_mask(params_list, prompts, cfg, mesh)
  prompts = [base.check_prompt(p, np.shape(params['source_anchors'])[1])
             for params, p in zip(params_list, prompts)]
  first = params_list[0]
  if init is None:
    if cfg.init == 'linear':
      init = sum(initial_candidate(params, p, cfg, mesh)
                 for params, p in zip(params_list, prompts)) / len(prompts)
    else:
      init = initial_candidate(first, prompts[0], cfg, mesh)
  _, target_anchors, _ = _anchor_tables(first, mesh)
  z, losses, snapshots = search(goals, target_anchors, weight, jnp.asarray(init, jnp.float32),
                                _stats(first, cfg), cfg)
  if cfg.match_norm:
    norms = sum(jnp.linalg.norm(p, axis=-1) * params['norm_ratio']
                for params, p in zip(params_list, prompts)) / len(prompts)
    z = _rescale(z, norms)
    snapshots = jax.vmap(lambda s: _rescale(s, norms))(snapshots)
  return z, losses, snapshots


def recycle_multi_source(params_list: Sequence[base.Params], prompts: Sequence[jax.Array],
                         cfg: SearchConfig = SearchConfig(),
                         mesh: Optional[Mesh] = None) -> jax.Array:
  """The final z of `search_multi_source`: [prompt_length, target_embed] float32."""
  z, _, _ = search_multi_source(params_list, prompts, cfg, mesh)
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

