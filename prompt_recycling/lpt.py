"""Late prompt tuning (Liu et al. 2022): an instance-dependent prompt inserted mid-encoder.

Prompt tuning prepends its prompt to the input, so every step back-propagates
through the whole frozen encoder. Late prompt tuning (LPT) inserts the prompt
before encoder layer `hook_layer` (k) instead, and makes it depend on the input:
a small neural prompt generator reads the hidden states H arriving at layer k
and its output is concatenated before H (the mask extended with ones), so
layers k, k+1, ... attend to it. The generators are the authors' (xyltt/LPT,
`encoder-only/models/modeling_roberta.py`), with P prompt tokens, embed E and
bottleneck 128:

  NPG  (their default)  h = H[:, 0]                          [batch, E]
                        prompt = W_up relu(W_down h)          -> [batch, P * E] -> [batch, P, E]
  APPG / MPPG           D = W_down H                          [batch, length, 128]
                        S = adaptive avg / max pool of D over each row's valid
                            tokens into P segments            [batch, P, 128]
                        prompt = W_up relu(S)                 [batch, P, E] (W_up shared by tokens)

then dropout (0.1) on the prompt. H goes through `jax.lax.stop_gradient` before
the generator and everything below layer k is frozen, so nothing below layer k
is differentiated: JAX does not compute that part of the backward pass at all.
Layers below k also run on `length` tokens rather than `P + length`.

Fidelity (REPRODUCTION.md, "Fidelity: prompt tuning and late prompt tuning"):
  * insertion layer: the middle of the encoder (their scripts insert at layer
    12 of RoBERTa-large's 24); default `num_encoder_layers // 2`.
  * generator input: RoBERTa is post-LayerNorm, so the states their generator
    reads are normalised. T5 1.1 is pre-LayerNorm: its residual stream is
    unnormalised and grows with depth, so by default H is first put through
    the norm the next layer would apply to it (layer k's frozen
    `pre_attention_layer_norm`; the final `encoder_norm` for k = depth). Only
    the generator sees the normalised states; the inserted prompt joins the raw
    stream. `normalize_input=False` reads the raw stream.
  * NPG reads the first token's state: RoBERTa's <s>; T5 has no BOS, so here
    it is the first input token. On GPT-2 it reads the last input token's
    state (`npg_token='last'`), where the authors' decoder-only code reads it
    (`hidden_states[arange, seq_lengths]` in `decoder-only/models/
    modeling_gpt2.py`): under causal attention the first token sees nothing
    else. The GPT-2 family (`models/family.CausalLM`) gives the generator a
    mask of the input positions only, so neither NPG nor the pooling reads a
    target token the prompt would then reveal.
  * init: PyTorch `nn.Linear` defaults (kernel and bias U(+-1/sqrt(fan_in)));
    a static late prompt N(0, 1) (`nn.Embedding`'s default) or sampled
    vocabulary rows (their `--initialize_from_vocab`).
  * dropout 0.1 on the generated prompt, and (runs/lpt_finetune.gin) 0.1 in
    the frozen backbone, as the authors train in `train()` mode. The
    generator's dropout runs whenever the step enables dropout, and
    `dropout_rate=0` switches it off alone.
  * AdamW (lr 1e-3, weight decay 0.1, 6% linear warm-up then linear decay,
    gradient clipping 1.0): `adamw` below and gin_configs/runs/lpt_finetune.gin.
  * the cheaper ablation, one static `[prompt_length, embed]` late prompt shared
    by all inputs: `late_prompt_tuning(..., static=True)`.

Files: `save_params` writes any of these parameter trees as `.npz` with
`/`-joined keys, `export_checkpoint_params` does so from a run's orbax
checkpoint, and `late_prompt_tuning(init_file=...)` loads one at `init` (with
shape checks), which is how eval.py and infer.py use a trained generator: the
models/*_lpt.gin files bind `init_file` to PROMPT_FILE. A static late prompt is
a `prompt` matrix like prompt tuning's, so the training loop also exports it as
`prompt.npy`, and it loads from `.npy` too.
"""
import pathlib
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from prompt_recycling import prompts
from prompt_recycling.models import family as families
from prompt_recycling.models import gpt2
from prompt_recycling.models import t5

Array = jax.Array

GENERATORS = ('NPG', 'APPG', 'MPPG')
# Logical axes of the generator. Both embed-sized dimensions use the prompt's
# `prompt_embed`; the bottleneck is `prompt_mlp`, which LOGICAL_AXIS_RULES does
# not name: Flax maps unnamed logical axes to None, i.e. replicated, which is
# what a generator of ~(2 + prompt_length) * embed * bottleneck parameters wants.
# (lpt_test checks that every generator parameter is replicated.)
GENERATOR_MLP_AXIS = 'prompt_mlp'


def torch_linear_bias_init(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch `nn.Linear`'s default bias."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(rng, shape, dtype=jnp.float32):
    return jax.random.uniform(rng, shape, dtype, -bound, bound)
  return init


# PyTorch `nn.Linear`'s default kernel, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def adaptive_pool(x: Array, lengths: Array, segments: int, kind: str) -> Array:
  """PyTorch's AdaptiveAvgPool1d / AdaptiveMaxPool1d over each row's first `lengths` tokens.

  Segment i of a row of L valid tokens covers tokens [floor(i L / P),
  ceil((i + 1) L / P)), as in PyTorch, so segments may overlap when L is not
  a multiple of P and repeat tokens when L < P.

  Args:
    x: [batch, length, features].
    lengths: [batch] int, valid tokens per row (a prefix of the row).
    segments: P, the number of output positions.
    kind: 'avg' or 'max'.

  Returns:
    [batch, segments, features] float32; zeros for a row with no valid token.
  """
  x = x.astype(jnp.float32)
  lengths = lengths.astype(jnp.int32)[:, None]  # [batch, 1]
  i = jnp.arange(segments)[None, :]  # [1, segments]
  start = (i * lengths) // segments
  end = ((i + 1) * lengths + segments - 1) // segments  # ceil
  pos = jnp.arange(x.shape[1])
  member = (pos[None, None, :] >= start[..., None]) & (pos[None, None, :] < end[..., None])
  # member: [batch, segments, length]
  if kind == 'avg':
    count = jnp.maximum(jnp.sum(member, axis=-1, keepdims=True), 1).astype(jnp.float32)
    pooled = jnp.einsum('bsl,blf->bsf', member.astype(jnp.float32), x) / count
  elif kind == 'max':
    pooled = jnp.max(jnp.where(member[..., None], x[:, None], -jnp.inf), axis=2)
  else:
    raise ValueError(f"Unknown adaptive pooling {kind!r}; expected 'avg' or 'max'.")
  return jnp.where(lengths[..., None] > 0, pooled, 0.0)


class PromptGenerator(nn.Module):
  """The authors' prompt generators: hidden states -> [batch, prompt_length, embed].

  Attributes:
    prompt_length: P, prompt tokens generated per input.
    kind: 'NPG' (one token's state, their default), 'APPG' (adaptive average
      pooling) or 'MPPG' (adaptive max pooling); see the module docstring.
    bottleneck: width of the down-projection (128 in the authors' scripts).
    dropout_rate: dropout on the generated prompt (0.1 in the authors' code).
    npg_token: the state NPG reads: 'first' (encoders' [CLS]/<s>) or 'last'
      (each row's last valid token by the mask: GPT-2).
  """
  prompt_length: int
  kind: str = 'NPG'
  bottleneck: int = 128
  dropout_rate: float = 0.1
  npg_token: str = 'first'

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, deterministic: bool = True) -> Array:
    """Hidden states [batch, length, embed] + mask [batch, length] -> [batch, prompt_length, embed].

    The mask's valid tokens must be a prefix of each row (right padding), as
    the authors' pooling assumes. The generator computes in float32.
    """
    embed = hidden.shape[-1]
    hidden = hidden.astype(jnp.float32)

    def dense(name, features, fan_in, axes):
      return nn.Dense(
          features, name=name,
          kernel_init=nn.with_logical_partitioning(torch_linear_kernel_init, axes),
          bias_init=nn.with_logical_partitioning(torch_linear_bias_init(fan_in), axes[1:]))

    down = dense('down', self.bottleneck, embed, ('prompt_embed', GENERATOR_MLP_AXIS))
    if self.kind == 'NPG':
      if self.npg_token == 'first':
        read = hidden[:, 0]
      elif self.npg_token == 'last':
        last = jnp.maximum(jnp.sum(mask, axis=1) - 1, 0)  # [batch]
        read = hidden[jnp.arange(hidden.shape[0]), last]
      else:
        raise ValueError(f"npg_token must be 'first' or 'last', got {self.npg_token!r}.")
      h = nn.relu(down(read))  # [batch, bottleneck]
      out = dense('up', self.prompt_length * embed, self.bottleneck,
                  (GENERATOR_MLP_AXIS, 'prompt_embed'))(h)
      out = out.reshape(out.shape[0], self.prompt_length, embed)  # [batch, P, embed]
    elif self.kind in ('APPG', 'MPPG'):
      h = down(hidden)  # [batch, length, bottleneck]
      h = adaptive_pool(h, jnp.sum(mask, axis=1), self.prompt_length,
                        'avg' if self.kind == 'APPG' else 'max')  # [batch, P, bottleneck]
      out = dense('up', embed, self.bottleneck, (GENERATOR_MLP_AXIS, 'prompt_embed'))(nn.relu(h))
    else:
      raise ValueError(f'Unknown prompt generator {self.kind!r}; expected one of {GENERATORS}.')
    return nn.Dropout(self.dropout_rate)(out, deterministic=deterministic)


class _NextLayerNorm(nn.Module):
  """Applies the frozen norm that encoder layer `layer` puts before its attention.

  Built inside the running `t5.Encoder` (from the hook), so `self.parent` is
  that encoder and its parameters are read, not copied or trained. During the
  model's own `init`, before layer `layer` exists, the scale is 1.
  """
  layer: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    params = self.parent.variables.get('params', {})
    name = f'layers_{self.layer}'
    if name in params:
      scale = params[name]['pre_attention_layer_norm']['scale']
    elif 'encoder_norm' in params:  # k = depth (checked at init): the final norm.
      scale = params['encoder_norm']['scale']
    else:
      scale = jnp.ones((x.shape[-1],), jnp.float32)
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    # Frozen, and read only to feed the generator: no gradient flows into the model from here.
    return x * jax.lax.stop_gradient(jnp.asarray(scale, jnp.float32))


def insert(prompt: Array, hidden: Array, mask: Array):
  """Puts `prompt` [batch, prompt_length, embed] before `hidden` [batch, length, embed].

  Returns:
    ([batch, prompt_length + length, embed] in hidden's dtype, its mask
    [batch, prompt_length + length] with the prompt always valid).
  """
  hidden = jnp.concatenate([prompt.astype(hidden.dtype), hidden], axis=1)
  mask = jnp.concatenate([jnp.ones(prompt.shape[:2], bool), mask], axis=1)
  return hidden, mask


def _encoder_depth(frozen: Any) -> Optional[int]:
  """T5's encoder depth from its parameters; None for the other families.

  A BERT-like's or GPT-2's depth is not its number of `layers_*` (ALBERT runs
  one shared layer 12 times): those are checked against `model_config`, and
  by the module itself when it runs.
  """
  if 'encoder' not in frozen:
    return None
  return sum(1 for name in frozen['encoder'] if name.startswith('layers_'))


def late_prompt_tuning(prompt_length: int = 5, hook_layer: Optional[int] = None, *,
                       model_config: Optional[families.Config] = None, generator: str = 'NPG',
                       bottleneck: int = 128, dropout_rate: float = 0.1,
                       normalize_input: bool = True, static: bool = False,
                       static_init: prompts.Initializer = prompts.random_normal(),
                       init_file: Optional[str] = None,
                       npg_token: Optional[str] = None) -> prompts.PromptMethod:
  """Late prompt tuning as a `PromptMethod`: a prompt inserted before encoder layer k.

  Args:
    prompt_length: number of late prompt tokens (the authors' scripts use 5).
    hook_layer: k, the encoder layer the prompt is inserted before (0 = before
      the first layer, which is prompt tuning with an instance-dependent prompt;
      num_encoder_layers = after the last). Default: `num_encoder_layers // 2`,
      the middle of the encoder, where the authors insert it (layer 12 of 24
      for RoBERTa-large); needs `model_config`.
    model_config: the model's config (`T5Config`, `EncoderConfig` or
      `GPT2Config`); gives the default layer (`family.depth`: ALBERT counts
      its shared layer at every depth) and the norm's epsilon, and lets a
      wrong `hook_layer` fail here, not at `init`. Without it the model is
      taken to be T5.
    generator: 'NPG' (the authors' default), 'APPG' or 'MPPG' (`PromptGenerator`).
    bottleneck: the generator's down-projection width (128).
    dropout_rate: dropout on the generated prompt (the authors' 0.1). Applied
      only when the step runs with dropout enabled (the trainer's
      `enable_dropout`: train.py's default turns it on for
      `T5Config.dropout_rate > 0`, `train.enable_dropout = True` turns it on
      over a dropout-free backbone), using the encoder's 'dropout' stream;
      0 switches the generator's dropout off alone.
    normalize_input: the generator reads the hidden states through layer k's
      frozen pre-attention norm (see the module docstring); False: raw. T5
      only: BERT-likes are post-LayerNorm, so their states arrive normalised
      (as the authors' RoBERTa generator reads them); GPT-2's generator reads
      its raw residual stream.
    static: instead of a generator, one `[prompt_length, embed]` parameter
      shared by all inputs (the authors' generator-free variant); cheaper, and
      exported like a prompt-tuning prompt.
    static_init: initialiser of the static prompt (`prompts.Initializer`):
      N(0, 1) as the authors' `nn.Embedding`, or `prompts.sampled_vocab()`.
    init_file: start from saved parameters instead: an `.npz` written by
      `save_params` (generator or static), or for `static=True` also a
      `[prompt_length, embed]` `.npy`. Shapes are checked at `init`.
    npg_token: which state NPG reads ('first' or 'last', `PromptGenerator`);
      default 'last' for a `GPT2Config`, else 'first'.

  Returns:
    A `PromptMethod` whose params are `{'down': {...}, 'up': {...}}` (generator)
    or `{'prompt': [prompt_length, embed]}` (static), and whose
    `encoder_args` are `{'hook': ..., 'hook_layer': k}`.

  Raises:
    ValueError: k outside [0, num_encoder_layers] (here when `model_config` is
      given, otherwise at `init`), or no k and no `model_config`.
  """
  if hook_layer is None:
    if model_config is None:
      raise ValueError('late_prompt_tuning needs hook_layer or model_config (the default layer '
                       'is num_encoder_layers // 2).')
    hook_layer = families.depth(model_config) // 2
  if model_config is not None:
    _check_layer(hook_layer, families.depth(model_config))
  if generator not in GENERATORS:
    raise ValueError(f'Unknown prompt generator {generator!r}; expected one of {GENERATORS}.')
  if prompt_length < 1:
    raise ValueError(f'prompt_length must be positive, got {prompt_length}.')
  epsilon = model_config.layer_norm_epsilon if model_config is not None else 1e-6
  normalize_input = normalize_input and (model_config is None
                                         or isinstance(model_config, t5.T5Config))
  # Built outside any module, so it is a top-level Module applied with `params`.
  if npg_token is None:
    npg_token = 'last' if isinstance(model_config, gpt2.GPT2Config) else 'first'
  module = PromptGenerator(prompt_length, generator, bottleneck, dropout_rate, npg_token)

  def fresh_params(rng, embed):
    if static:
      return None
    hidden, mask = jnp.zeros((1, 1, embed), jnp.float32), jnp.ones((1, 1), bool)
    return module.init(rng, hidden, mask)['params']

  def init(rng, frozen):
    depth = _encoder_depth(frozen)
    if depth is not None:
      _check_layer(hook_layer, depth)
    embedding = families.embeddings(frozen)
    # The width of the hidden states the prompt joins: the token table's,
    # except ALBERT's, whose 128-wide embedding is projected up first.
    embed = embedding.shape[1] if model_config is None else model_config.emb_dim
    if init_file is not None:
      expected = jax.eval_shape(lambda: initial_params(rng, embedding, embed))
      return _params_from_file(init_file, expected, static)
    return initial_params(rng, embedding, embed)

  def initial_params(rng, embedding, embed):
    if static:
      return {'prompt': static_init(rng, embedding, (prompt_length, embed))}
    return nn.unbox(fresh_params(rng, embed))

  def encoder_args(params, batch_size):
    del batch_size  # The hook reads it from the hidden states.

    def hook(hidden, mask):
      if static:
        prompt = prompts.prepend(params['prompt'], hidden.shape[0])
        return insert(prompt, hidden, mask)
      rngs = None
      if dropout_rate > 0:
        # Created inside the running encoder, so it draws from (and is bound
        # to) the encoder's 'dropout' stream, present only when dropout is on.
        carrier = nn.Dropout(dropout_rate)
        if carrier.has_rng('dropout'):
          rngs = {'dropout': carrier.make_rng('dropout')}
      # No gradient to anything below layer k: the generator reads constants.
      source = jax.lax.stop_gradient(hidden)
      if normalize_input:
        source = _NextLayerNorm(hook_layer, epsilon)(source)
      prompt = module.apply({'params': params}, source, mask, deterministic=rngs is None,
                            rngs=rngs)
      return insert(prompt, hidden, mask)

    return {'hook': hook, 'hook_layer': hook_layer}

  if static:
    logical_axes = {'prompt': P(*prompts.PROMPT_AXES)}
  else:  # Read off the module's own annotations; the tree shape does not depend on embed.
    logical_axes = nn.get_partition_spec(
        jax.eval_shape(lambda rng: fresh_params(rng, 1), jax.random.key(0)))
  return prompts.PromptMethod(init, encoder_args, logical_axes)


def _check_layer(hook_layer: int, num_encoder_layers: int) -> None:
  if not 0 <= hook_layer <= num_encoder_layers:
    raise ValueError(
        f'Late prompt insertion layer {hook_layer} is outside [0, {num_encoder_layers}] for a '
        f'{num_encoder_layers}-layer encoder (0 = before the first layer, {num_encoder_layers} = '
        f'after the last; the paper uses the middle, {num_encoder_layers // 2}).')


def late_prompts(method: prompts.PromptMethod, model: Any, frozen: Any, params: Any,
                 tokens: Array) -> Array:
  """The late prompts `method` inserts for `tokens` [batch, length]: [batch, prompt_length, embed].

  Runs the frozen encoder up to the insertion layer and captures what the hook
  inserts (for inspection and tests; training never needs it).
  """
  args = method.encoder_args(params, tokens.shape[0])
  captured = {}

  def capture(hidden, mask):
    new_hidden, new_mask = args['hook'](hidden, mask)
    captured['prompt'] = new_hidden[:, :new_hidden.shape[1] - hidden.shape[1]]
    return new_hidden, new_mask

  module = families.of(model).module  # A family, a module or a config.
  module.apply({'params': frozen}, tokens, hook=capture, hook_layer=args['hook_layer'],
               method=type(module).encode)
  return captured['prompt']


# --- Files --------------------------------------------------------------------

# One .npz writer and reader for every parameter tree (see prompts.py).
save_params = prompts.save_params
load_params = prompts.load_params


def _params_from_file(path: str, expected: Any, static: bool) -> Any:
  """Loads `path` and checks it against `expected` (a tree of ShapeDtypeStruct)."""
  if static and pathlib.Path(path).suffix != '.npz':
    params = {'prompt': prompts.load_prompt(path)}
  else:
    params = load_params(path)
  want = {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(expected, sep='/').items()}
  got = {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(params, sep='/').items()}
  if want != got:
    raise ValueError(f'Late prompt file {path} holds {got}, but this model and late_prompt_tuning '
                     f'settings need {want}.')
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


def export_checkpoint_params(model_dir: str, path: str, step: Optional[int] = None) -> int:
  """Writes the trainable params of MODEL_DIR's orbax checkpoint (default: latest) to `path` (.npz).

  Returns:
    The step exported.
  """
  from prompt_recycling import run_dir  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = run_dir.checkpoint_manager(model_dir, keep=None)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{model_dir}/checkpoints holds no checkpoint to export.')
    # Without a target orbax returns the saved tree as nested dicts of numpy arrays.
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  finally:
    manager.close()
  save_params(restored['state']['params'], path)
  return step


# --- Optimizer ----------------------------------------------------------------

def adamw(learning_rate: float = 1e-3, weight_decay: float = 0.1, warmup_fraction: float = 0.06,
          total_steps: Optional[int] = None, max_grad_norm: Optional[float] = 1.0,
          b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
  """AdamW with the LPT authors' settings: lr 1e-3, weight decay 0.1, linear warm-up and decay.

  The learning rate rises linearly from 0 over `warmup_fraction * total_steps`
  steps, then falls linearly to 0 at `total_steps` (constant if `total_steps`
  is None); gradients are clipped to global norm `max_grad_norm` first. As in
  the authors' code, biases are not decayed (kernels and a static prompt are).
  """
  if total_steps is None:
    schedule = learning_rate
  else:
    warmup = int(warmup_fraction * total_steps)

    def schedule(count):
      count = jnp.asarray(count, jnp.float32)
      up = learning_rate * count / max(warmup, 1)
      down = learning_rate * jnp.maximum(total_steps - count, 0.0) / max(total_steps - warmup, 1)
      return jnp.where(count < warmup, up, down)

  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
  if max_grad_norm:
    tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
  return tx
