"""MLP recyclers: `v2v-nn` (Lester et al., 2022) and `neural-projector` (Wu et al., 2024).

Both learn f: source embedding -> target embedding as a two-layer MLP

  f(x) = Dense_1(act(Dense_0(x)))

trained with Adam on minibatches of (source row, target row) token pairs under
optax's l2 loss (0.5 (f(x) - y)^2, averaged), then recycle a prompt row by row.
One implementation, `mlp`, serves both.

`v2v-nn` defaults are the authors' (google-research/prompt-tuning
`prompt_tuning/recycling/recycle.py` `JaxRecycler` and `configs/sst2.json`):
ReLU, hidden = 4 x target_embed, flax default initialisation from the fit key
(`PRNGKey(0)` there), Adam 3e-4, batch 50, 25 epochs, each a fresh shuffle
without replacement (`argsort` of uniforms, the key split once per epoch from
the same starting key), loss on the raw embeddings. Given `jax.random.key(0)`,
the fit reproduces their initialisation and data order exactly
(`tests/recycling/golden_test.py`).

The project's own variant, `sampling='with_replacement'` with `standardize`,
draws each minibatch independently (`fold_in(rng, step)`) and standardises
inputs and outputs (per-dimension mean, one overall std): it exists so one
learning rate suits tables whose scales differ by 50x (tiny models, prompts).
`neural-projector` keeps that variant (its settings were not checked against
Wu et al.'s code). Training is one jitted `lax.scan` over steps either way.
"""
import dataclasses
import functools
from typing import Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from prompt_recycling.recycling import base

ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'tanh': jnp.tanh,
    'gelu': nn.gelu,
}
SAMPLINGS = ('epochs', 'with_replacement')


class MLP(nn.Module):
  """Dense -> activation -> Dense: [..., source_embed] -> [..., target_embed].

  The layers keep flax's default names (Dense_0, Dense_1): flax derives each
  layer's init key from its name, so these names give the authors' init.
  """
  hidden_size: int
  features: int
  activation: str = 'relu'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden_size)(x)
    x = ACTIVATIONS[self.activation](x)
    return nn.Dense(self.features)(x)


@dataclasses.dataclass(frozen=True)
class MLPConfig:
  """Hyperparameters of an MLP recycler (defaults: the authors' v2v-nn).

  Attributes:
    hidden_size: MLP width; None means `hidden_scale * target_embed`.
    hidden_scale: width as a multiple of the target embedding width.
    activation: a key of `ACTIVATIONS`.
    learning_rate: Adam's step size.
    batch_size: token pairs per minibatch.
    epochs: passes over the shuffled pairs ('epochs' sampling).
    steps: 'with_replacement': the number of minibatches; 'epochs': if set,
      stop after this many minibatches (None: all `epochs`).
    sampling: 'epochs' (shuffle without replacement each epoch, the authors')
      or 'with_replacement' (independent minibatches, the project's variant).
    standardize: standardise inputs and outputs (the project's variant); the
      authors train on raw embeddings.
  """
  hidden_size: Optional[int] = None
  hidden_scale: float = 4.0
  activation: str = 'relu'
  learning_rate: float = 3e-4
  batch_size: int = 50
  epochs: int = 25
  steps: Optional[int] = None
  sampling: str = 'epochs'
  standardize: bool = False

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}.')
    if self.sampling not in SAMPLINGS:
      raise ValueError(f'sampling {self.sampling!r} is not one of {SAMPLINGS}.')
    if self.sampling == 'with_replacement' and self.steps is None:
      raise ValueError("sampling='with_replacement' needs steps (the number of minibatches).")
    if (self.steps is not None and self.steps < 1) or self.batch_size < 1 or self.epochs < 1:
      raise ValueError(f'steps, batch_size and epochs must be positive; found {self.steps}, '
                       f'{self.batch_size}, {self.epochs}.')

  def hidden(self, target_embed: int) -> int:
    return self.hidden_size or max(1, int(round(self.hidden_scale * target_embed)))


def epoch_orders(rng: jax.Array, num_rows: int, epochs: int) -> jax.Array:
  """The authors' shuffles: per epoch, split the key and argsort uniforms.

  Args:
    rng: the starting key (the authors use `PRNGKey(0)`, the init key too).
    num_rows: token pairs.
    epochs: passes.

  Returns:
    [epochs, num_rows] int32 permutations.
  """
  orders = []
  for _ in range(epochs):
    shuffle_rng, rng = jax.random.split(rng)
    orders.append(jnp.argsort(jax.random.uniform(shuffle_rng, (num_rows,))))
  return jnp.stack(orders).astype(jnp.int32)


def minibatches(cfg: MLPConfig, rng: jax.Array, num_rows: int) -> Tuple[jax.Array, jax.Array]:
  """Row indices and weights of every minibatch, [steps, batch_size] each.

  'epochs': each epoch's permutation cut into batches in order; a short last
  batch is padded with weight-0 rows, so its loss is the mean over its real
  rows, as the authors' smaller last batch. 'with_replacement': uniform draws
  from `fold_in(rng, step)`, all of weight 1.
  """
  b = cfg.batch_size
  if cfg.sampling == 'with_replacement':
    idx = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(rng, i), (b,), 0, num_rows))(
        jnp.arange(cfg.steps))
    return idx, jnp.ones(idx.shape, jnp.float32)
  per_epoch = -(-num_rows // b)
  epochs = cfg.epochs if cfg.steps is None else -(-cfg.steps // per_epoch)
  orders = epoch_orders(rng, num_rows, epochs)
  pad = per_epoch * b - num_rows
  idx = jnp.pad(orders, ((0, 0), (0, pad))).reshape(epochs * per_epoch, b)
  weights = jnp.pad(jnp.ones((epochs, num_rows), jnp.float32), ((0, 0), (0, pad)))
  weights = weights.reshape(epochs * per_epoch, b)
  steps = epochs * per_epoch if cfg.steps is None else cfg.steps
  return idx[:steps], weights[:steps]


def _stats(table, mask, standardize):
  mean, std, _ = base.masked_moments(table, mask)
  if not standardize:
    return jnp.zeros_like(mean), jnp.ones_like(std)
  return mean, jnp.maximum(std, 1e-6)


def _model(cfg: MLPConfig, source_embed: int, target_embed: int) -> MLP:
  del source_embed  # Dense infers its input width.
  return MLP(cfg.hidden(target_embed), target_embed, cfg.activation)


@functools.partial(jax.jit, static_argnames='cfg')
def _train_loop(mlp_params, source, target, stats, batches, cfg: MLPConfig):
  """Adam over the minibatches `batches = (idx, weights)`; returns (params, losses)."""
  source_mean, source_scale, target_mean, target_scale = stats
  model = _model(cfg, source.shape[1], target.shape[1])
  tx = optax.adam(cfg.learning_rate)

  def loss_fn(mlp_params, x, y, w):
    l2 = jnp.mean(optax.l2_loss(model.apply(mlp_params, x), y), axis=-1)
    return jnp.sum(l2 * w) / jnp.sum(w)

  def step(carry, batch):
    mlp_params, opt_state = carry
    idx, w = batch
    x = (source[idx] - source_mean) / source_scale
    y = (target[idx] - target_mean) / target_scale
    loss, grads = jax.value_and_grad(loss_fn)(mlp_params, x, y, w)
    updates, opt_state = tx.update(grads, opt_state, mlp_params)
    return (optax.apply_updates(mlp_params, updates), opt_state), loss

  (mlp_params, _), losses = jax.lax.scan(step, (mlp_params, tx.init(mlp_params)), batches)
  return mlp_params, losses


def train(source, target, rng: jax.Array, cfg: MLPConfig = MLPConfig(),
          mesh: Optional[Mesh] = None) -> Tuple[base.Params, np.ndarray]:
  """Fits the MLP on the token pairs of two row-aligned tables.

  Args:
    source: [vocab, source_embed].
    target: [vocab, target_embed], row i the same token as `source` row i.
    rng: PRNG key; the fit is a deterministic function of it. 'epochs': the
      initialisation and the shuffles both start from `rng`, as the authors'
      both start from `PRNGKey(0)`; 'with_replacement': split in two.
    cfg: hyperparameters.
    mesh: split the tables' rows over this mesh; None uses one device.

  Returns:
    (params, losses): params as `Recycler.fit` returns them, and the training
    loss (l2, in standardised units if `cfg.standardize`) of every step,
    [steps] numpy.
  """
  base.check_tables(source, target)
  num_rows = int(np.shape(source)[0])
  source, mask = base.shard_rows(source, mesh)
  target, _ = base.shard_rows(target, mesh)
  source_mean, source_scale = _stats(source, mask, cfg.standardize)
  target_mean, target_scale = _stats(target, mask, cfg.standardize)
  if cfg.sampling == 'epochs':
    init_rng = data_rng = rng
  else:
    init_rng, data_rng = jax.random.split(rng)
  model = _model(cfg, source.shape[1], target.shape[1])
  mlp_params = model.init(init_rng, jnp.ones((1, source.shape[1]), jnp.float32))
  stats = (source_mean, source_scale, target_mean, target_scale)
  batches = minibatches(cfg, data_rng, num_rows)
  mlp_params, losses = _train_loop(mlp_params, source, target, stats, batches, cfg)
  params = {'mlp': mlp_params,
            'source_mean': source_mean, 'source_scale': source_scale,
            'target_mean': target_mean, 'target_scale': target_scale}
  return params, np.asarray(losses)


def mlp(cfg: MLPConfig, mesh: Optional[Mesh] = None) -> base.Recycler:
  """An MLP recycler with hyperparameters `cfg`.

  Args:
    cfg: hyperparameters.
    mesh: split the tables over this ('data', 'model') mesh while fitting.

  Returns:
    A `Recycler` whose params are {'mlp': flax params of `MLP`,
    'source_mean': [source_embed], 'source_scale': [],
    'target_mean': [target_embed], 'target_scale': []}.
  """

  def fit(source, target, rng):
    params, _ = train(source, target, rng, cfg, mesh)
    return params

  @jax.jit
  def forward(params, prompt):
    mlp_params = params['mlp']
    model = MLP(mlp_params['params']['Dense_0']['kernel'].shape[1],
                mlp_params['params']['Dense_1']['kernel'].shape[1], cfg.activation)
    x = (prompt - params['source_mean']) / params['source_scale']
    return model.apply(mlp_params, x) * params['target_scale'] + params['target_mean']

  def apply(params, prompt):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    prompt = base.check_prompt(prompt, params['source_mean'].shape[0])
    return forward(params, prompt)

  return base.Recycler(fit, apply)


@base.register('v2v-nn')
def v2v_nn(hidden_scale: float = 4.0, hidden_size: Optional[int] = None,
           activation: str = 'relu', learning_rate: float = 3e-4, batch_size: int = 50,
           epochs: int = 25, steps: Optional[int] = None, sampling: str = 'epochs',
           standardize: bool = False, mesh: Optional[Mesh] = None) -> base.Recycler:
  """`v2v-nn` (Lester et al., 2022), the authors' settings by default.

  Args are the fields of `MLPConfig`, plus `mesh` (see `mlp`).
  """
  return mlp(MLPConfig(hidden_size, hidden_scale, activation, learning_rate, batch_size, epochs,
                       steps, sampling, standardize), mesh)


@base.register('neural-projector')
def neural_projector(hidden_scale: float = 1.0, hidden_size: Optional[int] = None,
                     activation: str = 'tanh', learning_rate: float = 1e-3,
                     batch_size: int = 128, epochs: int = 25, steps: Optional[int] = 2000,
                     sampling: str = 'with_replacement', standardize: bool = True,
                     mesh: Optional[Mesh] = None) -> base.Recycler:
  """The projector baseline of Wu et al. (2024): tanh MLP, hidden = target_embed.

  Trained with the project's variant (independent minibatches, standardised
  tables); its settings were not checked against Wu et al.'s code. Args are
  the fields of `MLPConfig`, plus `mesh` (see `mlp`).
  """
  return mlp(MLPConfig(hidden_size, hidden_scale, activation, learning_rate, batch_size, epochs,
                       steps, sampling, standardize), mesh)
