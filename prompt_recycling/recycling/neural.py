"""MLP recyclers: `v2v-nn` (Lester et al., 2022) and `neural-projector` (Wu et al., 2024).

Both learn f: source embedding -> target embedding as a two-layer MLP

  f(x) = Dense_out(act(Dense_hidden(x)))

trained with Adam on minibatches of (source row, target row) token pairs under
mean squared error, then recycle a prompt row by row. They differ only in
defaults: v2v-nn uses ReLU and hidden = 4 x target_embed; the neural-projector
baseline of Wu et al. uses tanh and hidden = target_embed. One implementation,
`mlp`, serves both.

Inputs and outputs are standardised (per-dimension mean, one overall std, from
the fit vocabulary) so one learning rate suits T5 tables whose entries range
from ~1 (T5 1.1 small) to ~50 (prompts); the MLP predicts standardised target
rows. Training is one jitted `lax.scan` over steps; minibatch `i` draws its rows
with `fold_in(rng, i)`, so a fit is a deterministic function of `rng`.
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


class MLP(nn.Module):
  """Dense -> activation -> Dense: [..., source_embed] -> [..., target_embed]."""
  hidden_size: int
  features: int
  activation: str = 'relu'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden_size, name='hidden')(x)
    x = ACTIVATIONS[self.activation](x)
    return nn.Dense(self.features, name='output')(x)


@dataclasses.dataclass(frozen=True)
class MLPConfig:
  """Hyperparameters of an MLP recycler.

  Attributes:
    hidden_size: MLP width; None means `hidden_scale * target_embed`.
    hidden_scale: width as a multiple of the target embedding width.
    activation: a key of `ACTIVATIONS`.
    learning_rate: Adam's step size.
    steps: minibatch steps.
    batch_size: token pairs per minibatch (drawn with replacement).
    standardize: standardise inputs and outputs (see the module docstring).
  """
  hidden_size: Optional[int] = None
  hidden_scale: float = 4.0
  activation: str = 'relu'
  learning_rate: float = 1e-3
  steps: int = 2000
  batch_size: int = 128
  standardize: bool = True

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}.')
    if self.steps < 1 or self.batch_size < 1:
      raise ValueError(f'steps and batch_size must be positive; found {self.steps}, '
                       f'{self.batch_size}.')

  def hidden(self, target_embed: int) -> int:
    return self.hidden_size or max(1, int(round(self.hidden_scale * target_embed)))


def _stats(table, mask, standardize):
  mean, std, _ = base.masked_moments(table, mask)
  if not standardize:
    return jnp.zeros_like(mean), jnp.ones_like(std)
  return mean, jnp.maximum(std, 1e-6)


def _model(cfg: MLPConfig, source_embed: int, target_embed: int) -> MLP:
  del source_embed  # Dense infers its input width.
  return MLP(cfg.hidden(target_embed), target_embed, cfg.activation)


@functools.partial(jax.jit, static_argnames=('cfg', 'num_rows'))
def _train_loop(mlp_params, source, target, stats, rng, cfg: MLPConfig, num_rows: int):
  """`cfg.steps` Adam steps on minibatches of rows `< num_rows`; returns (params, losses)."""
  source_mean, source_scale, target_mean, target_scale = stats
  model = _model(cfg, source.shape[1], target.shape[1])
  tx = optax.adam(cfg.learning_rate)

  def loss_fn(mlp_params, x, y):
    return jnp.mean(jnp.square(model.apply(mlp_params, x) - y))

  def step(carry, i):
    mlp_params, opt_state = carry
    # Padding rows sit after the real ones, so indices < num_rows are real.
    idx = jax.random.randint(jax.random.fold_in(rng, i), (cfg.batch_size,), 0, num_rows)
    x = (source[idx] - source_mean) / source_scale
    y = (target[idx] - target_mean) / target_scale
    loss, grads = jax.value_and_grad(loss_fn)(mlp_params, x, y)
    updates, opt_state = tx.update(grads, opt_state, mlp_params)
    return (optax.apply_updates(mlp_params, updates), opt_state), loss

  (mlp_params, _), losses = jax.lax.scan(
      step, (mlp_params, tx.init(mlp_params)), jnp.arange(cfg.steps))
  return mlp_params, losses


def train(source, target, rng: jax.Array, cfg: MLPConfig = MLPConfig(),
          mesh: Optional[Mesh] = None) -> Tuple[base.Params, np.ndarray]:
  """Fits the MLP on the token pairs of two row-aligned tables.

  Args:
    source: [vocab, source_embed].
    target: [vocab, target_embed], row i the same token as `source` row i.
    rng: PRNG key; the fit is a deterministic function of it.
    cfg: hyperparameters.
    mesh: split the tables' rows over this mesh; None uses one device.

  Returns:
    (params, losses): params as `Recycler.fit` returns them, and the training
    loss (MSE in standardised units) of every step, [steps] numpy.
  """
  base.check_tables(source, target)
  num_rows = int(np.shape(source)[0])
  source, mask = base.shard_rows(source, mesh)
  target, _ = base.shard_rows(target, mesh)
  source_mean, source_scale = _stats(source, mask, cfg.standardize)
  target_mean, target_scale = _stats(target, mask, cfg.standardize)
  init_rng, data_rng = jax.random.split(rng)
  model = _model(cfg, source.shape[1], target.shape[1])
  mlp_params = model.init(init_rng, jnp.zeros((1, source.shape[1]), jnp.float32))
  stats = (source_mean, source_scale, target_mean, target_scale)
  mlp_params, losses = _train_loop(mlp_params, source, target, stats, data_rng, cfg, num_rows)
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
    model = MLP(mlp_params['params']['hidden']['kernel'].shape[1],
                mlp_params['params']['output']['kernel'].shape[1], cfg.activation)
    x = (prompt - params['source_mean']) / params['source_scale']
    return model.apply(mlp_params, x) * params['target_scale'] + params['target_mean']

  def apply(params, prompt):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    prompt = base.check_prompt(prompt, params['source_mean'].shape[0])
    return forward(params, prompt)

  return base.Recycler(fit, apply)


@base.register('v2v-nn')
def v2v_nn(hidden_scale: float = 4.0, hidden_size: Optional[int] = None,
           activation: str = 'relu', learning_rate: float = 1e-3, steps: int = 2000,
           batch_size: int = 128, standardize: bool = True,
           mesh: Optional[Mesh] = None) -> base.Recycler:
  """`v2v-nn` (Lester et al., 2022): ReLU MLP, hidden = 4 x target_embed.

  Args are the fields of `MLPConfig`, plus `mesh` (see `mlp`).
  """
  return mlp(MLPConfig(hidden_size, hidden_scale, activation, learning_rate, steps, batch_size,
                       standardize), mesh)


@base.register('neural-projector')
def neural_projector(hidden_scale: float = 1.0, hidden_size: Optional[int] = None,
                     activation: str = 'tanh', learning_rate: float = 1e-3, steps: int = 2000,
                     batch_size: int = 128, standardize: bool = True,
                     mesh: Optional[Mesh] = None) -> base.Recycler:
  """The projector baseline of Wu et al. (2024): tanh MLP, hidden = target_embed.

  Args are the fields of `MLPConfig`, plus `mesh` (see `mlp`).
  """
  return mlp(MLPConfig(hidden_size, hidden_scale, activation, learning_rate, steps, batch_size,
                       standardize), mesh)
