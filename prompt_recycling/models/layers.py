"""Transformer blocks shared by the BERT-family encoder and GPT-2 (Flax Linen).

BERT, RoBERTa, ALBERT and GPT-2 use the same parts: dense layers with biases,
layer norms with a bias, multi-head attention scaled by 1/sqrt(head_dim) at run
time, a two-layer MLP and learned absolute position embeddings. They differ in
where the norms sit (after each residual sum in BERT, before each sublayer in
GPT-2), in the attention mask (bidirectional or causal) and in their heads;
`models/encoder.py` and `models/gpt2.py` assemble these blocks.

Parameter and activation logical axes follow `partitioning.LOGICAL_AXIS_RULES`
and `models/t5.py`: kernels `[embed, joined_kv]`, `[joined_kv, embed]`,
`[embed, mlp]`, `[mlp, embed]`, biases and norms on their output axis,
activations `[batch, length, embed]`.

Soft prompts go into the embedded sequence at given slots (`put_prompt`), the
way OptiPrompt and Wu et al. (2024) feed them: the template holds placeholder
tokens `[V1]..[Vn]` whose embeddings are replaced by the prompt vectors, so the
prompt takes ordinary absolute positions and shifts the text after it.
"""
import functools
from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
# (hidden [batch, length, embed], mask [batch, length]) -> (hidden', mask'),
# the same contract as `t5.EncoderHook`, so `lpt.py`'s hooks apply unchanged.
Hook = Callable[[Array, Array], Tuple[Array, Array]]

NEG_INF = -1e10
_ACTIVATIONS = {
    'gelu': functools.partial(nn.gelu, approximate=False),  # HF 'gelu': exact erf.
    'gelu_new': functools.partial(nn.gelu, approximate=True),  # tanh approximation.
    'gelu_pytorch_tanh': functools.partial(nn.gelu, approximate=True),
    'relu': nn.relu,
}
ACTIVATIONS = tuple(_ACTIVATIONS)


def activation(name: str) -> Callable[[Array], Array]:
  """Hugging Face's activation names (`hidden_act`, `activation_function`) -> function."""
  if name not in _ACTIVATIONS:
    raise ValueError(f'Activation {name!r} is not supported; expected one of {ACTIVATIONS}.')
  return _ACTIVATIONS[name]


def _init(stddev: float = 0.02):
  return nn.initializers.normal(stddev=stddev)  # BERT's and GPT-2's initializer_range.


class DenseBias(nn.Module):
  """`x @ kernel + bias`; kernel `[in, features]` with logical `axes`, bias on axes[1]."""
  features: int
  axes: Tuple[Optional[str], Optional[str]]
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., in] -> [..., features]."""
    kernel = self.param('kernel', nn.with_logical_partitioning(_init(), self.axes),
                        (x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]),
                      (self.features,), jnp.float32)
    y = jnp.einsum('...f,fg->...g', x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class LayerNorm(nn.Module):
  """Layer norm with scale and bias (`[embed]` each); statistics in float32."""
  epsilon: float
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
                       (features,), jnp.float32)
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
                      (features,), jnp.float32)
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype)


class Embed(nn.Module):
  """An embedding table `[num_embeddings, features]` with logical `axes`; `attend` ties a head to it."""
  num_embeddings: int
  features: int
  axes: Tuple[Optional[str], Optional[str]] = ('vocab', 'embed')
  dtype: str = 'float32'

  def setup(self):
    self.embedding = self.param('embedding', nn.with_logical_partitioning(_init(), self.axes),
                                (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, ids: Array) -> Array:
    """[batch, length] int -> [batch, length, features]."""
    return jnp.take(self.embedding.astype(self.dtype), ids, axis=0)

  def attend(self, x: Array) -> Array:
    """[batch, length, features] -> [batch, length, num_embeddings]."""
    return jnp.einsum('bld,vd->blv', x, self.embedding.astype(self.dtype))


class Attention(nn.Module):
  """Multi-head self-attention with biases, scaled by 1/sqrt(head_dim) (BERT, GPT-2)."""
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool = True) -> Array:
    """`x` [batch, length, embed], additive `bias` [batch|1, 1, length, length] -> same as x."""
    b, length, d = x.shape
    joined = self.num_heads * self.head_dim
    heads = lambda y: nn.with_logical_constraint(
        y.reshape(b, length, self.num_heads, self.head_dim), ('batch', 'length', 'heads', 'kv'))
    q = heads(DenseBias(joined, ('embed', 'joined_kv'), self.dtype, name='query')(x))
    k = heads(DenseBias(joined, ('embed', 'joined_kv'), self.dtype, name='key')(x))
    v = heads(DenseBias(joined, ('embed', 'joined_kv'), self.dtype, name='value')(x))
    q = q / jnp.sqrt(self.head_dim).astype(q.dtype)
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) + bias.astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, length, joined)
    return DenseBias(d, ('joined_kv', 'embed'), self.dtype, name='out')(out)


class Mlp(nn.Module):
  """`wo(act(wi(x)))`, both with biases."""
  mlp_dim: int
  activation: str
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[batch, length, embed] -> [batch, length, embed]."""
    h = activation(self.activation)(DenseBias(self.mlp_dim, ('embed', 'mlp'), self.dtype, name='wi')(x))
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    return DenseBias(x.shape[-1], ('mlp', 'embed'), self.dtype, name='wo')(h)


class TransformerLayer(nn.Module):
  """One attention + MLP layer, post-norm (BERT) or pre-norm (GPT-2).

  post-norm: x = LN(x + attn(x)); x = LN(x + mlp(x)), norms `attention_norm`, `mlp_norm`.
  pre-norm:  x = x + attn(LN(x)); x = x + mlp(LN(x)), same names.
  """
  num_heads: int
  head_dim: int
  mlp_dim: int
  activation: str
  layer_norm_epsilon: float
  pre_norm: bool
  dropout_rate: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool = True) -> Array:
    """[batch, length, embed] with attention bias [batch|1, 1, length, length] -> same."""
    drop = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    attention_norm = LayerNorm(self.layer_norm_epsilon, self.dtype, name='attention_norm')
    mlp_norm = LayerNorm(self.layer_norm_epsilon, self.dtype, name='mlp_norm')
    attention = Attention(self.num_heads, self.head_dim, self.dropout_rate, self.dtype,
                          name='attention')
    mlp = Mlp(self.mlp_dim, self.activation, self.dtype, name='mlp')
    if self.pre_norm:
      x = x + drop(attention(attention_norm(x), bias, deterministic))
      x = x + drop(mlp(mlp_norm(x)))
    else:
      x = attention_norm(x + drop(attention(x, bias, deterministic)))
      x = mlp_norm(x + drop(mlp(x)))
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))


class RunHook(nn.Module):
  """Calls a `Hook` inside a compact scope.

  The encoder and GPT-2 define their submodules in `setup`, where a hook
  could not create modules of its own; run through this, a hook may (late
  prompt tuning's dropout draws from the 'dropout' stream this way). It holds
  no parameters.
  """

  @nn.compact
  def __call__(self, hook: Hook, hidden: Array, mask: Array) -> Tuple[Array, Array]:
    return hook(hidden, mask)


def key_mask_bias(mask: Array) -> Array:
  """Validity [batch, length] bool -> additive attention bias [batch, 1, 1, length]."""
  return jnp.where(mask[:, None, None, :], 0.0, NEG_INF)


def causal_bias(length: int) -> Array:
  """[1, 1, length, length]: 0 where key <= query, NEG_INF after."""
  positions = jnp.arange(length)
  return jnp.where(positions[None, :] <= positions[:, None], 0.0, NEG_INF)[None, None]


def put_prompt(x: Array, prompt: Optional[Array], prompt_positions: Optional[Array]) -> Array:
  """Writes prompt vectors over the embeddings at the prompt's slots.

  Args:
    x: embedded tokens [batch, length, embed].
    prompt: [batch, prompt_length, embed], or None (then `x` is returned).
    prompt_positions: [batch, prompt_length] int, the slot of each prompt
      vector in `x` (each row's slots distinct and within [0, length)).

  Returns:
    [batch, length, embed]: `x` with x[b, prompt_positions[b, i]] = prompt[b, i].
  """
  if prompt is None:
    return x
  if prompt_positions is None:
    raise ValueError('A prompt needs prompt_positions [batch, prompt_length]: the token slots it '
                     'occupies (see insert_prompt_slots).')
  if prompt.shape[:2] != prompt_positions.shape or prompt.shape[0] != x.shape[0]:
    raise ValueError(f'prompt {prompt.shape} [batch, prompt_length, embed] and prompt_positions '
                     f'{prompt_positions.shape} [batch, prompt_length] disagree for tokens of '
                     f'batch {x.shape[0]}.')
  if prompt.shape[-1] != x.shape[-1]:
    raise ValueError(f'prompt width {prompt.shape[-1]} differs from the token embedding width '
                     f'{x.shape[-1]} (ALBERT prompts live in its factorised embedding space).')
  rows = jnp.arange(x.shape[0])[:, None]
  return x.at[rows, prompt_positions].set(prompt.astype(x.dtype))


def insert_prompt_slots(tokens: Array, position: int, prompt_length: int,
                        slot_id: int) -> Tuple[Array, Array]:
  """Makes room for a prompt at the same position in every row.

  Args:
    tokens: [batch, length] int.
    position: where the prompt starts (0 prepends; 1 keeps a leading [CLS]/<s> first).
    prompt_length: number of slots.
    slot_id: a non-padding id put in the slots; its embedding is overwritten.

  Returns:
    (tokens [batch, prompt_length + length], prompt_positions [batch, prompt_length]).
  """
  batch = tokens.shape[0]
  slots = jnp.full((batch, prompt_length), slot_id, tokens.dtype)
  tokens = jnp.concatenate([tokens[:, :position], slots, tokens[:, position:]], axis=1)
  positions = jnp.broadcast_to(position + jnp.arange(prompt_length), (batch, prompt_length))
  return tokens, positions
