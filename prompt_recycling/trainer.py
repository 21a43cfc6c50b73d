"""TrainState, pure train/eval/score/predict steps, and the training loop.

Only the prompt method's parameters are differentiated and carry optimizer
state; the frozen model parameters are an input to every step. Steps are pure
functions jitted once with explicit shardings:

    step_fn = jax.jit(partial(train_step, ...), in_shardings=(state, frozen, batch, None),
                      out_shardings=(state, None), donate_argnums=0)

Batches are dicts of [batch, length] int32 arrays with t5x's feature names:
`encoder_input_tokens`, `decoder_input_tokens`, `decoder_target_tokens`,
`decoder_loss_weights` (each model family's `to_batch` says which it reads).
`model` is a `models.family` family (T5, a BERT-like masked LM or GPT-2), or a
`t5.T5` module, which means its `EncoderDecoder` family; the family turns a
batch and the prompt method's `encoder_args` into logits aligned with
`decoder_target_tokens`, so the loss and scores are the same code for all.
This module knows no file formats or task names.
"""
import functools
import logging
import time
from typing import Any, Callable, Dict, Iterator, Optional, Union

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import run_dir
from prompt_recycling.models import family as families
from prompt_recycling.models import t5

Array = jax.Array
Batch = Dict[str, Array]
Model = Union[t5.T5, families.Family]


class TrainState(flax.struct.PyTreeNode):
  step: Array
  params: Any     # the prompt method's trainable tree
  opt_state: Any  # optimizer state of `params` only


def adafactor(learning_rate: float = 0.3, decay_rate: float = 0.8, clipping_threshold: float = 1.0,
              weight_decay: float = 1e-5, initial_step: int = 0) -> optax.GradientTransformation:
  """Adafactor as the prompt-tuning release runs it (t5x's `adafactor.Adafactor`).

  Constant learning rate 0.3, second-moment decay exponent 0.8, update clipping
  1.0, weight decay 1e-5 (`param <- (1 - 1e-5) param - lr * update`, not scaled
  by the learning rate), no momentum, parameter scaling off (Lester et al.
  2021, Sec. 3; prompt-tuning's `configs/models/t5_1_1_prompt.gin`).

  `initial_step` is the pretrained checkpoint's step. t5x restores the global
  step with the frozen model, so the second-moment decay of prompt-tuning step
  t (counted from 0) is

      beta2_t = 1 - (initial_step + t + 1) ** -decay_rate

  (beta2 ~ 1 - 1.4e-5 for lm100k's 1,100,000: the statistics are nearly a long
  average and update clipping binds on almost every step), where a count from
  0 gives beta2 = 0 on the first step. optax subtracts `decay_offset` from its
  count, so the checkpoint's step enters as `-initial_step`;
  tests/trainer_adafactor_test.py checks the updates against t5x's own Adafactor.
  """
  return optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate,
                         decay_offset=-initial_step, clipping_threshold=clipping_threshold,
                         multiply_by_parameter_scale=False, weight_decay_rate=weight_decay or None)


def init_state(method: prompts.PromptMethod, tx: optax.GradientTransformation, rng: Array,
               frozen: Any) -> TrainState:
  params = method.init(rng, frozen)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def cross_entropy(logits: Array, targets: Array, weights: Array, z_loss: float = 0.0):
  """Summed token cross entropy and t5x's z-loss.

  Args:
    logits: [batch, length, vocab] float32.
    targets: [batch, length] int32.
    weights: [batch, length], 0 on padding.
    z_loss: coefficient of log(Z)^2, which keeps the softmax normaliser near 1.

  Returns:
    (cross entropy summed over tokens, z-loss summed, number of weighted tokens).
  """
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  weights = weights.astype(jnp.float32)
  xent = jnp.sum((log_z - target_logit) * weights)
  return xent, jnp.sum(z_loss * jnp.square(log_z) * weights), jnp.sum(weights)


def _logits(params, frozen, batch, rng, *, model: Model, method: prompts.PromptMethod,
            enable_dropout: bool) -> Array:
  """[batch, target_length, vocab] logits aligned with `decoder_target_tokens`."""
  batch_size = batch['decoder_target_tokens'].shape[0]
  rngs = {'dropout': rng} if enable_dropout else None
  model_params = method.model_variables(params, frozen)
  return families.of(model).logits(model_params, batch, method.encoder_args(params, batch_size),
                                   enable_dropout=enable_dropout, rngs=rngs)


def train_step(state: TrainState, frozen: Any, batch: Batch, rng: Array, *, model: Model,
               method: prompts.PromptMethod, tx: optax.GradientTransformation,
               accum_steps: int = 1, z_loss: float = 1e-4,
               enable_dropout: bool = True) -> tuple:
  """One optimizer step on `batch`, averaged over `accum_steps` microbatches.

  The loss is the mean cross entropy per target token of the whole batch (plus
  z-loss), so accumulation changes memory, not the update. Microbatch i is
  rows i, i + accum_steps, i + 2 * accum_steps, ... (as MaxText's
  `reshape_to_microbatch_accumulations`): with the batch split over the `data`
  axis in contiguous blocks, every device's block holds its share of every
  microbatch, so the scan slices the batch without moving rows between
  devices (a contiguous split would all-gather each microbatch).

  Returns:
    (new state, metrics {'loss', 'cross_ent_loss', 'z_loss', 'num_tokens', 'grad_norm',
    'params_finite'}).
  """
  rng = jax.random.fold_in(rng, state.step)
  # [batch, ...] -> [accum_steps, batch / accum_steps, ...], rows strided by accum_steps.
  micro = jax.tree.map(lambda x: x.reshape((-1, accum_steps) + x.shape[1:]).swapaxes(0, 1), batch)

  def sums(params, mb, mb_rng):
    logits = _logits(params, frozen, mb, mb_rng, model=model, method=method,
                     enable_dropout=enable_dropout)
    xent, zl, n = cross_entropy(logits, mb['decoder_target_tokens'], mb['decoder_loss_weights'], z_loss)
    return xent + zl, (xent, zl, n)

  def accumulate(carry, inputs):
    grads, xent, zl, n = carry
    mb, i = inputs
    g, (x, z, m) = jax.grad(sums, has_aux=True)(state.params, mb, jax.random.fold_in(rng, i))
    return (jax.tree.map(jnp.add, grads, g), xent + x, zl + z, n + m), None

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  (grads, xent, zl, n), _ = jax.lax.scan(accumulate, (zeros, 0.0, 0.0, 0.0),
                                         (micro, jnp.arange(accum_steps)))
  denom = jnp.maximum(n, 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  penalty, penalty_metric = 0.0, {}
  if method.penalty is not None:  # A regulariser of the prompt, added once per step.
    penalty, penalty_grads = jax.value_and_grad(method.penalty)(state.params, frozen)
    grads = jax.tree.map(jnp.add, grads, penalty_grads)
    penalty_metric = {'penalty': penalty}
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
  metrics = {'loss': (xent + zl) / denom + penalty, 'cross_ent_loss': xent / denom, 'z_loss': zl / denom,
             'num_tokens': n, 'grad_norm': optax.tree.norm(grads),
             # A finite loss can still produce a NaN update; the loop checks both.
             'params_finite': finite.astype(jnp.float32), **penalty_metric}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params: Any, frozen: Any, batch: Batch, *, model: Model,
              method: prompts.PromptMethod) -> Dict[str, Array]:
  """Summed cross entropy and token count of `batch` (no dropout)."""
  logits = _logits(params, frozen, batch, None, model=model, method=method, enable_dropout=False)
  xent, _, n = cross_entropy(logits, batch['decoder_target_tokens'], batch['decoder_loss_weights'])
  return {'cross_ent_sum': xent, 'num_tokens': n}


def _summed_log_likelihood(logits: Array, batch: Batch) -> Array:
  """Sum over the last length axis of the weighted targets' log-probabilities: [...]."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  token_ll = jnp.take_along_axis(log_probs, batch['decoder_target_tokens'][..., None], axis=-1)[..., 0]
  return jnp.sum(token_ll * batch['decoder_loss_weights'], axis=-1)


def score_step(params: Any, frozen: Any, batch: Batch, *, model: Model,
               method: prompts.PromptMethod) -> Array:
  """Log-likelihood of each example's target: [batch] float32 (rank classification)."""
  logits = _logits(params, frozen, batch, None, model=model, method=method, enable_dropout=False)
  return _summed_log_likelihood(logits, batch)


def score_candidates_step(params: Any, frozen: Any, batch: Batch, *, model: Model,
                          method: prompts.PromptMethod) -> Array:
  """Log-likelihood of each example's candidate targets: [batch, candidates] float32.

  The decoder features are [batch, candidates, length]; the encoder runs once
  per example (`family.EncoderDecoder.candidate_logits`), not once per
  candidate as `score_step` on (example, candidate) rows would.
  """
  batch_size = batch['encoder_input_tokens'].shape[0]
  model_params = method.model_variables(params, frozen)
  logits = families.of(model).candidate_logits(model_params, batch,
                                               method.encoder_args(params, batch_size))
  return _summed_log_likelihood(logits, batch)


def predict_step(params: Any, frozen: Any, batch: Batch, *, model: Model,
                 method: prompts.PromptMethod, max_decode_length: int) -> Array:
  """Greedy predictions [batch, max_decode_length] int32 (T5: decoding with the KV cache)."""
  batch_size = batch['decoder_target_tokens'].shape[0]
  model_params = method.model_variables(params, frozen)
  return families.of(model).predict(model_params, batch, method.encoder_args(params, batch_size),
                                    max_decode_length)


def frozen_shardings(model: Model, mesh: jax.sharding.Mesh,
                     rules: partitioning.Rules = partitioning.LOGICAL_AXIS_RULES):
  """(abstract frozen params, their `NamedSharding`s) from the model's logical axes."""
  family = families.of(model)
  abstract, shardings = partitioning.params_shardings(
      family.module.init, jax.random.key(0), *family.init_inputs(), mesh=mesh, rules=rules)
  return abstract['params'], shardings['params']


def random_frozen(model: Model, rng: Array, shardings: Any) -> Any:
  """A randomly initialised model, created directly sharded (benchmarks, tests)."""
  family = families.of(model)
  init = lambda key: nn.unbox(family.module.init(key, *family.init_inputs()))['params']
  return jax.jit(init, out_shardings=shardings)(rng)


def put_on_mesh(tree: Any, shardings: Any) -> Any:
  """Places host numpy arrays (the same on every host) as global arrays with `shardings`."""
  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)


class Steps:
  """The jitted steps of one (model, prompt method, optimizer) on one mesh.

  Built once per run; each step is compiled once, with explicit input and
  output shardings, under the logical-axis rules that shard activations.
  """

  def __init__(self, model: Model, method: prompts.PromptMethod,
               tx: Optional[optax.GradientTransformation], mesh: jax.sharding.Mesh, *,
               accum_steps: int = 1, z_loss: float = 1e-4, enable_dropout: bool = True, rules: partitioning.Rules = partitioning.LOGICAL_AXIS_RULES):
    self.mesh, self.rules = mesh, rules
    self.family = families.of(model)
    if method.model_params is None:
      abstract_frozen, self.frozen_shardings = frozen_shardings(model, mesh, rules)
    else:  # The model itself trains: nothing is frozen.
      abstract_frozen, self.frozen_shardings = {}, {}
    repl = partitioning.replicated(mesh)
    self.params_shardings = partitioning.logical_to_mesh_sharding(method.logical_axes, mesh, rules)
    self._init_params = jax.jit(method.init, in_shardings=(repl, self.frozen_shardings),
                                out_shardings=self.params_shardings)
    batch_sh = partitioning.batch_sharding(mesh)
    frozen_sh, params_sh = self.frozen_shardings, self.params_shardings
    common = dict(model=model, method=method)
    self._eval = jax.jit(functools.partial(eval_step, **common),
                         in_shardings=(params_sh, frozen_sh, batch_sh), out_shardings=repl)
    self._score = jax.jit(functools.partial(score_step, **common),
                          in_shardings=(params_sh, frozen_sh, batch_sh), out_shardings=repl)
    self._score_candidates = None
    if hasattr(self.family, 'candidate_logits'):
      self._score_candidates = jax.jit(functools.partial(score_candidates_step, **common),
                                       in_shardings=(params_sh, frozen_sh, batch_sh),
                                       out_shardings=repl)
    # max_decode_length goes positionally: jit refuses keyword arguments, even
    # static ones, once in_shardings is given.
    self._predict = jax.jit(lambda p, f, b, n: predict_step(p, f, b, max_decode_length=n, **common),
                            static_argnums=3,
                            in_shardings=(params_sh, frozen_sh, batch_sh), out_shardings=repl)
    if tx is None:  # Evaluation and inference only.
      return
    abstract_state = jax.eval_shape(functools.partial(init_state, method, tx),
                                    jax.random.key(0), abstract_frozen)
    # Optimizer statistics shaped like a parameter share its sharding (Adam's
    # moments); others (factored or scalar statistics) are small and replicated.
    abstract_params = abstract_state.params
    opt_sh = optax.tree_map_params(
        tx, lambda leaf, param, sh: sh if leaf.shape == param.shape else repl,
        abstract_state.opt_state, abstract_params, self.params_shardings,
        transform_non_params=lambda _: repl)
    self.state_shardings = TrainState(step=repl, params=self.params_shardings, opt_state=opt_sh)
    self._init = jax.jit(functools.partial(init_state, method, tx),
                         in_shardings=(repl, frozen_sh), out_shardings=self.state_shardings)
    self._train = jax.jit(
        functools.partial(train_step, tx=tx, accum_steps=accum_steps, z_loss=z_loss,
                          enable_dropout=enable_dropout, **common),
        in_shardings=(self.state_shardings, frozen_sh, batch_sh, repl),
        out_shardings=(self.state_shardings, repl), donate_argnums=0)

  def _run(self, fn, *args, **kwargs):
    with partitioning.axis_rules(self.mesh, self.rules):
      return fn(*args, **kwargs)

  def put_frozen(self, frozen: Any) -> Any:
    """Host numpy model parameters -> global arrays sharded by the logical rules."""
    return put_on_mesh(frozen, self.frozen_shardings)

  def init_params(self, rng: Array, frozen: Any) -> Any:
    """The method's parameters alone (evaluation of a prompt read from a file)."""
    return self._run(self._init_params, rng, frozen)

  def init(self, rng: Array, frozen: Any) -> TrainState:
    return self._run(self._init, rng, frozen)

  def train(self, state: TrainState, frozen: Any, batch: Batch, rng: Array):
    return self._run(self._train, state, frozen, batch, rng)

  def eval(self, params: Any, frozen: Any, batch: Batch):
    return self._run(self._eval, params, frozen, batch)

  def score(self, params: Any, frozen: Any, batch: Batch) -> Array:
    return self._run(self._score, params, frozen, batch)

  @property
  def scores_candidates_together(self) -> bool:
    """Whether `score_candidates` exists: the family encodes an input once for all candidates."""
    return self._score_candidates is not None

  def score_candidates(self, params: Any, frozen: Any, batch: Batch) -> Array:
    return self._run(self._score_candidates, params, frozen, batch)

  def predict(self, params: Any, frozen: Any, batch: Batch, max_decode_length: int) -> Array:
    return self._run(self._predict, params, frozen, batch, max_decode_length)


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the run stopped without saving that state."""


def _metric_writer(model_dir: str):
  """clu's writer (TensorBoard events + logging) where installed, else logging only."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return _LoggingWriter()
  return metric_writers.create_default_writer(model_dir, just_logging=jax.process_index() > 0)


class _LoggingWriter:
  """The subset of clu's MetricWriter the loop uses, for installs without clu."""

  def write_scalars(self, step, scalars):
    logging.info('[%d] %s', step, ', '.join(f'{k}={float(v):.6g}' for k, v in scalars.items()))

  def flush(self):
    pass

  def close(self):
    pass


def train(*, model: Model, frozen: Any, method: prompts.PromptMethod,
          tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
          make_batches: Callable[[int], Iterator[Batch]], total_steps: int, model_dir: str,
          run_info: Dict[str, Any], batch_size: int, seed: int = 0, save_every: int = 1000,
          keep: Optional[int] = 3, log_every: int = 10,
          eval_fn: Optional[Callable[[Steps, Any, Any, int], Dict[str, float]]] = None,
          eval_every: Optional[int] = None, best_metric: Optional[str] = None,
          accum_steps: int = 1, z_loss: float = 1e-4, enable_dropout: bool = True,
          rules: partitioning.Rules = partitioning.LOGICAL_AXIS_RULES,
          progress: bool = True, writer: Any = None, export_step_offset: int = 0) -> TrainState:
  """Trains a prompt method on a frozen model, resuming from MODEL_DIR if it holds a checkpoint.

  Args:
    model: the model family (`models.family`) or a `t5.T5` module.
    frozen: its parameters as host numpy arrays (never updated).
    method: what trains (see `prompts.PromptMethod`).
    tx: optimizer of the method's parameters.
    mesh: device mesh; steps are sharded by `rules`.
    make_batches: `start_step -> iterator` of this host's batches from that
      step on; deterministic, so a resumed run sees what an uninterrupted one would.
    total_steps: train until the state's step reaches this.
    model_dir: run directory (`run_dir.py` describes its layout).
    run_info: what identifies the run; a MODEL_DIR with different info is refused.
    batch_size: global batch size (for examples/s).
    seed: initialisation and dropout seed.
    save_every: checkpoint (and numpy prompt export) period in steps; the
      final step is always saved.
    keep: number of checkpoints kept (None keeps all).
    log_every: metric-writing period.
    eval_fn: optional `(steps, params, frozen, step) -> metrics`, run every
      `eval_every` steps and at the end.
    eval_every: evaluation period (None: only at the end, if eval_fn).
    best_metric: metric whose best value and step go to MODEL_DIR/best.json.
    accum_steps, z_loss, enable_dropout: see `train_step`.
    rules: logical axis rules.
    progress: show a progress bar.
    writer: a clu `MetricWriter` (default: TensorBoard events in MODEL_DIR
      plus logging, or logging only where clu is not installed).
    export_step_offset: added to the step in the numpy exports' names
      (`numpy_checkpoints/checkpoint_<offset + step>`): the pretrained
      checkpoint's step, as t5x numbers a fine-tuning run's checkpoints
      (`checkpoint_1102000` after 2,000 steps from lm100k). Orbax
      checkpoints, logs and best.json keep the run's own step.

  Returns:
    The final TrainState.

  Raises:
    NonFiniteLossError: the loss became NaN/Inf; the last good checkpoint stays.
  """
  run_dir.claim(model_dir, run_info)
  steps = Steps(model, method, tx, mesh, accum_steps=accum_steps, z_loss=z_loss,
                enable_dropout=enable_dropout, rules=rules)
  frozen = steps.put_frozen(frozen)
  rng = jax.random.key(seed)
  init_rng, dropout_rng = jax.random.split(rng)
  manager = run_dir.checkpoint_manager(model_dir, keep=keep)
  # Not `steps.init`: its jax.set_mesh is refused inside eval_shape's trace.
  abstract = jax.eval_shape(steps._init, init_rng, frozen)  # pylint: disable=protected-access
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, steps.state_shardings)
  state, meta = run_dir.restore(manager, abstract)
  if state is None:
    state, start = steps.init(init_rng, frozen), 0
  else:
    start = int(meta['data_position'])
    logging.info('Resuming %s from step %d.', model_dir, start)
  writer = writer or _metric_writer(model_dir)
  last_saved = manager.latest_step()

  def save(step, state):
    nonlocal last_saved
    if step != last_saved:
      run_dir.save(manager, step, state, data_position=step)
      run_dir.export_prompt(model_dir, export_step_offset + step, state.params)
      last_saved = step

  def evaluate(step, state):
    metrics = eval_fn(steps, state.params, frozen, step)
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    if best_metric:
      run_dir.record_best(model_dir, step, metrics, best_metric)
    return metrics

  try:
    batches = make_batches(start)
    bar = tqdm.tqdm(total=total_steps, initial=start, disable=not progress or jax.process_index() > 0,
                    desc='train', unit='step')
    tick, tick_step = time.perf_counter(), start

    def check(step, metrics):
      """Raises on a non-finite loss or update; reading it waits for the step."""
      loss = float(metrics['loss'])
      if not np.isfinite(loss) or not metrics['params_finite']:
        what = f'Loss is {loss}' if not np.isfinite(loss) else 'The update made parameters NaN/Inf'
        raise NonFiniteLossError(
            f'{what} at step {step}; stopped without saving this state. The last good '
            f'checkpoint is step {last_saved} in {model_dir}/checkpoints. Lower the '
            f'learning rate or check the data, then rerun the same command to resume from it.')
      return loss

    # Step s's metrics are read after step s + 1 is dispatched, so the host
    # prepares the next batch while the device computes; a state is only saved,
    # logged or evaluated after its own metrics were checked.
    pending = None
    for step in range(start + 1, total_steps + 1):
      try:
        batch = next(batches)
      except StopIteration:
        raise ValueError(f'The data ran out at step {step} of {total_steps}.') from None
      state, metrics = steps.train(state, frozen, partitioning.shard_batch(batch, mesh), dropout_rng)
      if pending:
        check(*pending)
      pending = (step, metrics)
      bar.update(1)
      due_log = step % log_every == 0 or step == total_steps
      due_save = step % save_every == 0 or step == total_steps
      due_eval = eval_fn is not None and eval_every and step % eval_every == 0 and step != total_steps
      if not (due_log or due_save or due_eval):
        continue
      loss, pending = check(step, metrics), None
      if due_log:
        now = time.perf_counter()
        rate = (step - tick_step) * batch_size / max(now - tick, 1e-9)
        tick, tick_step = now, step
        scalars = {k: float(v) for k, v in metrics.items()}
        scalars['examples_per_second'] = rate
        writer.write_scalars(step, scalars)
        bar.set_postfix(loss=f'{loss:.4f}', ex_s=f'{rate:.1f}')
      if due_save:
        save(step, state)
      if due_eval:
        evaluate(step, state)
    bar.close()
    if eval_fn is not None:
      evaluate(int(state.step), state)
  finally:
    writer.flush()
    manager.close()
  return state
