"""T5 encoder-decoder in Flax Linen: T5 1.1, original T5, mT5 and LM-adapted shapes.

The parameter tree is named exactly as T5X names it (`token_embedder/embedding`,
`encoder/layers_0/attention/query/kernel`, ...), so a T5X checkpoint's `target`
subtree is our `params` with no renaming. Every parameter and the main
activations carry logical axis names; `partitioning.LOGICAL_AXIS_RULES` maps them
onto a device mesh.

This module knows nothing of prompts, training or files. The encoder offers two
hooks that the prompt methods use:
  * `prefix`: extra embeddings `[batch, prefix_length, embed]` prepended to the
    embedded input tokens (prompt tuning, Lester et al. 2021);
  * `hook` / `hook_layer`: a function applied to the hidden states before
    encoder layer `hook_layer`, which may change their length (late prompt
    tuning, Liu et al. 2022).
"""
import dataclasses
import functools
from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
# (hidden [batch, length, embed], mask [batch, length]) -> (hidden', mask').
EncoderHook = Callable[[Array, Array], Tuple[Array, Array]]

_NEG_INF = -1e10


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Sizes and options of a T5 model. Field names follow t5x's `T5Config`.

  Defaults are T5 1.1 Base; `gin_configs/models/t5_1_1/*.gin` set the others.
  """
  vocab_size: int = 32128
  emb_dim: int = 768
  num_heads: int = 12
  num_encoder_layers: int = 12
  num_decoder_layers: int = 12
  head_dim: int = 64
  mlp_dim: int = 2048
  # ('gelu', 'linear'): T5 1.1 gated-GELU. ('relu',): original T5.
  mlp_activations: Sequence[str] = ('gelu', 'linear')
  dropout_rate: float = 0.0
  # True for original T5: the output layer is the token embedding and logits
  # are scaled by emb_dim**-0.5. T5 1.1 has a separate `logits_dense`.
  logits_via_embedding: bool = False
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  # Activation dtype ('float32' or 'bfloat16'); parameters stay float32.
  dtype: str = 'float32'
  # 'none', 'full' (recompute whole layers) or 'minimal' (save matmul outputs).
  remat_policy: str = 'none'

  def __post_init__(self):
    if self.remat_policy not in ('none', 'full', 'minimal'):
      raise ValueError(f"T5Config.remat_policy must be 'none', 'full' or 'minimal', "
                       f'got {self.remat_policy!r}.')
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))


def _kernel_init(scale: float = 1.0):
  return nn.initializers.variance_scaling(scale, 'fan_in', 'truncated_normal')


def _activation(name: str) -> Callable[[Array], Array]:
  if name == 'linear':
    return lambda x: x
  if name == 'gelu':
    return functools.partial(nn.gelu, approximate=True)  # HF's 'gelu_new'.
  return getattr(nn, name)


class Dense(nn.Module):
  """Bias-free projection of the last axis; the parameter is `kernel` [in, features]."""
  features: int
  axes: Tuple[str, str]
  kernel_init: Callable = _kernel_init()
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., in] -> [..., features]."""
    kernel = self.param('kernel', nn.with_logical_partitioning(self.kernel_init, self.axes),
                        (x.shape[-1], self.features), jnp.float32)
    return jnp.einsum('...f,fg->...g', x, kernel.astype(self.dtype))


class RMSNorm(nn.Module):
  """T5's layer norm: rescale only, no mean subtraction and no bias."""
  epsilon: float = 1e-6
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., embed] -> [..., embed]; statistics in float32."""
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
                       (x.shape[-1],), jnp.float32)
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return x.astype(self.dtype) * scale.astype(self.dtype)


class Embed(nn.Module):
  """Token embedding table `[vocab, embed]`; `attend` gives logits over it."""
  num_embeddings: int
  features: int
  dtype: str = 'float32'

  def setup(self):
    self.embedding = self.param(
        'embedding',
        nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ('vocab', 'embed')),
        (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, tokens: Array) -> Array:
    """[batch, length] int -> [batch, length, embed]."""
    return jnp.take(self.embedding.astype(self.dtype), tokens, axis=0)

  def attend(self, x: Array) -> Array:
    """[batch, length, embed] -> [batch, length, vocab]."""
    return jnp.einsum('bld,vd->blv', x, self.embedding.astype(self.dtype))


def relative_position_bucket(relative_position: Array, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> Array:
  """Maps key-minus-query offsets to T5's log-spaced buckets (as Mesh TF and HF).

  Half the buckets hold exact small offsets, the rest grow logarithmically up to
  `max_distance`; bidirectional attention splits buckets by the offset's sign.
  The logarithm is in float32 without an epsilon, as in the reference code that
  trained the released checkpoints, so bucket edges agree with it exactly.
  """
  bucket = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    bucket += (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # Clamp before the log so small distances (selected away below) stay finite.
  safe = jnp.maximum(distance, max_exact).astype(jnp.float32)
  large = max_exact + (jnp.log(safe / max_exact) / np.float32(np.log(max_distance / max_exact))
                       * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, distance, large)


class RelativePositionBiases(nn.Module):
  """Learned per-head attention bias from bucketed relative positions."""
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array, bidirectional: bool) -> Array:
    """[q] and [k] int positions -> bias [1, heads, q, k]."""
    rel_embedding = self.param(
        'rel_embedding',
        nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ('heads', 'relpos_buckets')),
        (self.num_heads, self.num_buckets), jnp.float32)
    buckets = relative_position_bucket(key_positions[None, :] - query_positions[:, None],
                                       bidirectional, self.num_buckets, self.max_distance)
    bias = jnp.take(rel_embedding, buckets, axis=1)  # [heads, q, k]
    return bias[None].astype(self.dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention without scaling, as T5 (folded into init).

  Kernels are stored joined, `[embed, heads * head_dim]`, as T5X stores them.
  With `decode=True` keys and values are cached for one-token-at-a-time decoding.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array,
               deterministic: bool = True, decode: bool = False) -> Array:
    """Attends `[batch, q, embed]` to `[batch, k, embed]` with bias `[batch|1, heads, q, k]`."""
    b, q_len, d = inputs_q.shape
    joined = self.num_heads * self.head_dim

    def dense(name, x, init, axes, features):
      return Dense(features, axes, init, self.dtype, name=name)(x)

    # 1/sqrt(head_dim) is folded into the query initialisation: T5 never scales
    # logits at run time, so checkpoints trained that way load unchanged.
    q = dense('query', inputs_q, _kernel_init(1.0 / self.head_dim), ('embed', 'joined_kv'), joined)
    k = dense('key', inputs_kv, _kernel_init(), ('embed', 'joined_kv'), joined)
    v = dense('value', inputs_kv, _kernel_init(), ('embed', 'joined_kv'), joined)
    split = lambda x: x.reshape(x.shape[:2] + (self.num_heads, self.head_dim))
    q, k, v = split(q), split(k), split(v)  # [batch, length, heads, kv]
    q = nn.with_logical_constraint(q, ('batch', 'length', 'heads', 'kv'))
    k = nn.with_logical_constraint(k, ('batch', 'length', 'heads', 'kv'))
    v = nn.with_logical_constraint(v, ('batch', 'length', 'heads', 'kv'))

    if decode:
      k, v, bias = self._update_cache(k, v, bias)

    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) + bias.astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, q_len, joined)
    return dense('out', out, _kernel_init(), ('joined_kv', 'embed'), d)

  def _update_cache(self, k: Array, v: Array, bias: Array):
    """Writes this step's key/value at `cache_index`; masks the unwritten slots."""
    initialized = self.has_variable('cache', 'cached_key')
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
    cache_index = self.variable('cache', 'cache_index', lambda: jnp.zeros((), jnp.int32))
    if not initialized:  # The init call only shapes the cache.
      return k, v, bias
    index = cache_index.value
    k = jax.lax.dynamic_update_slice(cached_key.value, k, (0, index, 0, 0))
    v = jax.lax.dynamic_update_slice(cached_value.value, v, (0, index, 0, 0))
    cached_key.value, cached_value.value = k, v
    cache_index.value = index + 1
    visible = jnp.arange(k.shape[1]) <= index
    return k, v, bias + jnp.where(visible, 0.0, _NEG_INF)[None, None, None, :]


class MlpBlock(nn.Module):
  """Position-wise MLP; several activations are multiplied (gated GELU)."""
  mlp_dim: int
  activations: Sequence[str]
  dropout_rate: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    """[batch, length, embed] -> [batch, length, embed]."""
    hidden = 1.0
    for i, act in enumerate(self.activations):
      name = 'wi' if len(self.activations) == 1 else f'wi_{i}'
      hidden = hidden * _activation(act)(
          Dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype, name=name)(x))
    hidden = nn.with_logical_constraint(hidden, ('batch', 'length', 'mlp'))
    hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic=deterministic)
    return Dense(x.shape[-1], ('mlp', 'embed'), dtype=self.dtype, name='wo')(hidden)


def _attention_mask(query_mask: Optional[Array], key_mask: Array) -> Array:
  """[batch, q] and [batch, k] validity -> additive bias [batch, 1, q, k]."""
  del query_mask  # Rows of padded queries are ignored downstream.
  return jnp.where(key_mask[:, None, None, :], 0.0, _NEG_INF)


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    y = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name='pre_attention_layer_norm')(x)
    y = MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, cfg.dtype,
                           name='attention')(y, y, bias, deterministic)
    x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    y = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name='pre_mlp_layer_norm')(x)
    y = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, cfg.dtype, name='mlp')(
        y, deterministic)
    x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))


class DecoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, self_bias: Array, encoded: Array, cross_bias: Array,
               deterministic: bool, decode: bool) -> Array:
    cfg = self.config
    drop = lambda y: nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    y = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name='pre_self_attention_layer_norm')(x)
    y = MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, cfg.dtype,
                           name='self_attention')(y, y, self_bias, deterministic, decode)
    x = x + drop(y)
    y = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name='pre_cross_attention_layer_norm')(x)
    y = MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, cfg.dtype,
                           name='encoder_decoder_attention')(y, encoded, cross_bias, deterministic)
    x = x + drop(y)
    y = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name='pre_mlp_layer_norm')(x)
    y = MlpBlock(cfg.mlp_dim, cfg.mlp_activations, cfg.dropout_rate, cfg.dtype, name='mlp')(
        y, deterministic)
    x = x + drop(y)
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))


def _maybe_remat(layer_cls, policy: str, static_argnums: Tuple[int, ...]):
  if policy == 'none':
    return layer_cls
  jax_policy = (None if policy == 'full'
                else jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims)
  return nn.remat(layer_cls, policy=jax_policy, static_argnums=static_argnums)


class Encoder(nn.Module):
  """Bidirectional T5 encoder with the prefix and hidden-state hooks."""
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, tokens: Array, prefix: Optional[Array] = None,
               hook: Optional[EncoderHook] = None, hook_layer: Optional[int] = None,
               deterministic: bool = True) -> Tuple[Array, Array]:
    """Encodes tokens.

    Args:
      tokens: [batch, length] int32, 0 is padding.
      prefix: optional [batch, prefix_length, embed] embeddings put before the
        embedded tokens; always attended to.
      hook: optional function of (hidden [batch, l, embed], mask [batch, l])
        returning new (hidden, mask), applied before layer `hook_layer`
        (`num_encoder_layers` means after the last layer, before the norm).
      hook_layer: where `hook` runs.
      deterministic: False enables dropout.

    Returns:
      encoded [batch, prefix_length + length (+ hook's), embed] and its
      validity mask [batch, same length] bool.
    """
    cfg = self.config
    if hook is not None and not 0 <= (hook_layer if hook_layer is not None else -1) <= cfg.num_encoder_layers:
      raise ValueError(f'Encoder hook_layer must be in [0, {cfg.num_encoder_layers}] for a '
                       f'{cfg.num_encoder_layers}-layer encoder, got {hook_layer}.')
    mask = tokens > 0
    x = self.shared_embedding(tokens.astype(jnp.int32))
    if prefix is not None:
      x = jnp.concatenate([prefix.astype(x.dtype), x], axis=1)
      mask = jnp.concatenate([jnp.ones(prefix.shape[:2], bool), mask], axis=1)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    relpos = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads,
                                    cfg.dtype, name='relpos_bias')
    layer_cls = _maybe_remat(EncoderLayer, cfg.remat_policy, static_argnums=(3,))
    for i in range(cfg.num_encoder_layers + 1):
      if hook is not None and i == hook_layer:
        x, mask = hook(x, mask)
      if i == cfg.num_encoder_layers:
        break
      # The bias is recomputed per layer from the current length, so a hook
      # that inserts tokens mid-stack gets correct relative positions above it.
      positions = jnp.arange(x.shape[1])
      bias = relpos(positions, positions, True) + _attention_mask(mask, mask)
      x = layer_cls(cfg, name=f'layers_{i}')(x, bias, deterministic)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name='encoder_norm')(x)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
    return x, mask


class Decoder(nn.Module):
  """Causal T5 decoder with cross-attention; `decode=True` uses the KV cache."""
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
               deterministic: bool = True, decode: bool = False,
               max_decode_length: Optional[int] = None) -> Array:
    """[batch, target_length] tokens -> logits [batch, target_length, vocab] float32.

    In decode mode `decoder_input_tokens` is one step, [batch, 1], and
    `max_decode_length` is the cache length.
    """
    cfg = self.config
    y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
    y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    relpos = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                    cfg.relative_attention_max_distance, cfg.num_heads,
                                    cfg.dtype, name='relpos_bias')
    length = y.shape[1]
    if decode:
      # One query at the step `position`, against every cache slot.
      position = self._decode_position(length)
      self_bias = relpos(position[None], jnp.arange(max_decode_length), False)
    else:
      positions = jnp.arange(length)
      causal = jnp.where(positions[None, :] <= positions[:, None], 0.0, _NEG_INF)
      self_bias = relpos(positions, positions, False) + causal[None, None]
    cross_bias = _attention_mask(None, encoder_mask)
    layer_cls = _maybe_remat(DecoderLayer, cfg.remat_policy, static_argnums=(5, 6))
    for i in range(cfg.num_decoder_layers):
      y = layer_cls(cfg, name=f'layers_{i}')(y, self_bias, encoded, cross_bias, deterministic, decode)
    y = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name='decoder_norm')(y)
    y = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(y) / jnp.sqrt(y.shape[-1]).astype(y.dtype)
    else:
      logits = Dense(cfg.vocab_size, ('embed', 'vocab'), dtype=cfg.dtype, name='logits_dense')(y)
    logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
    return logits.astype(jnp.float32)

  def _decode_position(self, length: int) -> Array:
    """The decoder-level step counter that mirrors the layers' cache_index."""
    initialized = self.has_variable('cache', 'position')
    position = self.variable('cache', 'position', lambda: jnp.zeros((), jnp.int32))
    if initialized:
      current = position.value
      position.value = current + length
      return current
    return jnp.zeros((), jnp.int32)


class T5(nn.Module):
  """Encoder-decoder T5. Variables: {'params': tree named as T5X's `target`}."""
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, cfg.dtype)
    self.encoder = Encoder(cfg, self.token_embedder)
    self.decoder = Decoder(cfg, self.token_embedder)

  def encode(self, encoder_input_tokens: Array, prefix: Optional[Array] = None,
             hook: Optional[EncoderHook] = None, hook_layer: Optional[int] = None,
             enable_dropout: bool = False) -> Tuple[Array, Array]:
    """See `Encoder.__call__`: returns (encoded [batch, l, embed], mask [batch, l])."""
    return self.encoder(encoder_input_tokens, prefix, hook, hook_layer, not enable_dropout)

  def decode(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array,
             enable_dropout: bool = False, decode: bool = False,
             max_decode_length: Optional[int] = None) -> Array:
    """See `Decoder.__call__`: logits [batch, target_length, vocab] float32."""
    return self.decoder(encoded, encoder_mask, decoder_input_tokens, not enable_dropout,
                        decode, max_decode_length)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               prefix: Optional[Array] = None, hook: Optional[EncoderHook] = None,
               hook_layer: Optional[int] = None, enable_dropout: bool = False) -> Array:
    """Teacher-forced logits [batch, target_length, vocab] float32."""
    encoded, mask = self.encode(encoder_input_tokens, prefix, hook, hook_layer, enable_dropout)
    return self.decode(encoded, mask, decoder_input_tokens, enable_dropout)
