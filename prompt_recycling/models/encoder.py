"""BERT, RoBERTa and ALBERT masked language models: one Flax Linen encoder.

The three families are one architecture told apart by `EncoderConfig` fields:

| field                    | BERT      | RoBERTa                  | ALBERT                 |
|--------------------------|-----------|--------------------------|------------------------|
| `positions_from_padding` | False     | True (offset pad_id + 1) | False                  |
| `embedding_size`         | = emb_dim | = emb_dim                | 128 (factorised)       |
| `num_layer_groups`       | 0         | 0                        | 1 (all layers shared)  |
| `type_vocab_size`        | 2         | 1                        | 2                      |
| `activation`             | gelu      | gelu                     | gelu_new               |
| `head_activation`        | gelu      | gelu (always)            | gelu_new               |

Forward pass (post-layer-norm, as BERT):

  x = LN(tok[ids] + pos[positions] + type[token_types])   [batch, length, embedding_size]
  x = x @ projection + b   (ALBERT only)                    -> [batch, length, emb_dim]
  x = layer_g(i)(x) for i < num_layers                      (g(i) = i for unshared layers)
  logits = LN(act(x @ dense + b)) @ tok.T + mlm_bias        -> [batch, length, vocab] float32

Positions are 0..length-1 for BERT and ALBERT; RoBERTa counts non-padding
tokens from `pad_id + 1` and gives padding `pad_id`, as its PyTorch code does
for `input_ids`. The masked-LM head is tied to the token embedding.

Parameter names (checkpoint mapping in `family_checkpoints.py`):
`token_embedder/embedding` [vocab, embedding_size], `position_embedder`,
`token_type_embedder`, `embedding_norm`, `embedding_projection` (ALBERT),
`layers_{i}/{attention,attention_norm,mlp,mlp_norm}/...` (ALBERT: one
`layers_{g}` per layer group, applied to several depths), `mlm_head/{dense,
norm,bias}`.

Prompt hooks, as in `models/t5.py` but for absolute positions:
  * `prompt` [batch, prompt_length, embedding_size] with `prompt_positions`
    [batch, prompt_length]: the prompt vectors replace the token embeddings at
    those slots before positions and types are added (`layers.put_prompt`);
    the slots hold a placeholder id. The prompt width is `embedding_size`
    (128 for ALBERT).
  * `hook` / `hook_layer`: `hook(hidden, mask) -> (hidden, mask)` runs on the
    hidden states before layer `hook_layer` (k = after k layers; `num_layers`
    = on the final hidden states, before the head), and may change their
    length (late prompt tuning: a generator reads the layer-k states and
    inserts its prompt). Positions were added at the input, so inserted
    vectors carry none.
"""
import dataclasses
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_recycling.models import layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Sizes and family options of a BERT-like masked LM. Defaults: BERT base (cased).

  Field names follow `T5Config` where they mean the same (`emb_dim`, `num_heads`,
  `head_dim`, `mlp_dim`); `family_checkpoints.encoder_config_from_hf` reads them
  from a Hugging Face config.json.
  """
  vocab_size: int = 28996
  emb_dim: int = 768  # Width of the layers (HF hidden_size).
  # Width of the token embedding, positions and types; None = emb_dim. ALBERT
  # factorises it (128) and projects to emb_dim after the embedding norm.
  embedding_size: Optional[int] = None
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int = 3072
  num_layers: int = 12
  # 0: every layer has its own parameters. G > 0 (ALBERT's num_hidden_groups):
  # layer i uses group int(i / (num_layers / G)), as HF's AlbertTransformer.
  num_layer_groups: int = 0
  max_positions: int = 512
  type_vocab_size: int = 2
  pad_id: int = 0
  # RoBERTa: positions count non-padding tokens from pad_id + 1; padding gets pad_id.
  positions_from_padding: bool = False
  activation: str = 'gelu'
  head_activation: str = 'gelu'
  layer_norm_epsilon: float = 1e-12
  dropout_rate: float = 0.0
  dtype: str = 'float32'

  def __post_init__(self):
    for name in ('activation', 'head_activation'):
      layers.activation(getattr(self, name))  # Fails early on an unknown name.
    if self.num_layer_groups < 0 or self.num_layer_groups > self.num_layers:
      raise ValueError(f'EncoderConfig.num_layer_groups must be in [0, num_layers='
                       f'{self.num_layers}], got {self.num_layer_groups}.')

  @property
  def token_embed_dim(self) -> int:
    """The width of the token embedding table, hence of a soft prompt."""
    return self.embedding_size or self.emb_dim

  @property
  def num_param_layers(self) -> int:
    return self.num_layer_groups or self.num_layers

  def layer_params_index(self, depth: int) -> int:
    """Which `layers_{g}` runs at depth `depth` (HF's int(i / (layers per group)))."""
    if not self.num_layer_groups:
      return depth
    return int(depth / (self.num_layers / self.num_layer_groups))

  def max_length(self) -> int:
    """The longest input the position table admits (RoBERTa loses pad_id + 1 slots)."""
    offset = self.pad_id + 1 if self.positions_from_padding else 0
    return self.max_positions - offset


def positions(tokens: Array, config: EncoderConfig) -> Array:
  """Absolute position ids [batch, length] of `tokens` [batch, length]."""
  if config.positions_from_padding:
    mask = (tokens != config.pad_id).astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask + config.pad_id
  return jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)


class MlmHead(nn.Module):
  """dense -> activation -> layer norm -> tied output layer + bias."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, x: Array, token_embedder: layers.Embed) -> Array:
    """[batch, length, emb_dim] -> logits [batch, length, vocab] float32."""
    cfg = self.config
    x = layers.DenseBias(cfg.token_embed_dim, ('embed', None), cfg.dtype, name='dense')(x)
    x = layers.activation(cfg.head_activation)(x)
    x = layers.LayerNorm(cfg.layer_norm_epsilon, cfg.dtype, name='norm')(x)
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('vocab',)),
                      (cfg.vocab_size,), jnp.float32)
    logits = token_embedder.attend(x) + bias.astype(x.dtype)
    logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
    return logits.astype(jnp.float32)


class Encoder(nn.Module):
  """A BERT/RoBERTa/ALBERT masked LM. Variables: {'params': tree named as the module docstring}."""
  config: EncoderConfig

  def setup(self):
    cfg = self.config
    width = cfg.token_embed_dim
    self.token_embedder = layers.Embed(cfg.vocab_size, width, ('vocab', 'embed'), cfg.dtype)
    self.position_embedder = layers.Embed(cfg.max_positions, width, ('length', 'embed'), cfg.dtype)
    self.token_type_embedder = layers.Embed(cfg.type_vocab_size, width, (None, 'embed'), cfg.dtype)
    self.embedding_norm = layers.LayerNorm(cfg.layer_norm_epsilon, cfg.dtype)
    if cfg.embedding_size is not None and cfg.embedding_size != cfg.emb_dim:
      self.embedding_projection = layers.DenseBias(cfg.emb_dim, (None, 'embed'), cfg.dtype)
    self.layers = [
        layers.TransformerLayer(cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cfg.activation,
                                cfg.layer_norm_epsilon, False, cfg.dropout_rate, cfg.dtype)
        for _ in range(cfg.num_param_layers)]
    self.mlm_head = MlmHead(cfg)
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.run_hook = layers.RunHook()  # Hooks may build modules (dropout).

  def encode(self, tokens: Array, token_types: Optional[Array] = None,
             prompt: Optional[Array] = None, prompt_positions: Optional[Array] = None,
             hook: Optional[layers.Hook] = None, hook_layer: Optional[int] = None,
             enable_dropout: bool = False) -> Tuple[Array, Array]:
    """Final hidden states of the encoder.

    Args:
      tokens: [batch, length] int32; `pad_id` is padding (not attended to).
      token_types: optional [batch, length] int segment ids (default 0).
      prompt: optional [batch, prompt_length, embedding_size] soft prompt.
      prompt_positions: [batch, prompt_length] int, its slots in `tokens`.
      hook: optional (hidden [batch, l, emb_dim], mask [batch, l]) -> (hidden,
        mask), run before layer `hook_layer`.
      hook_layer: in [0, num_layers].
      enable_dropout: True in training.

    Returns:
      hidden [batch, length (+ hook's), emb_dim] and its validity mask [batch, same] bool.
    """
    cfg = self.config
    deterministic = not enable_dropout
    if tokens.shape[1] > cfg.max_length():
      raise ValueError(f'Input of length {tokens.shape[1]} exceeds the {cfg.max_length()} '
                       f'positions of this model (max_positions={cfg.max_positions}).')
    if hook is not None and not 0 <= (-1 if hook_layer is None else hook_layer) <= cfg.num_layers:
      raise ValueError(f'hook_layer must be in [0, {cfg.num_layers}] for a {cfg.num_layers}-layer '
                       f'encoder, got {hook_layer}.')
    tokens = tokens.astype(jnp.int32)
    mask = tokens != cfg.pad_id
    if token_types is None:
      token_types = jnp.zeros_like(tokens)
    x = layers.put_prompt(self.token_embedder(tokens), prompt, prompt_positions)
    x = x + self.position_embedder(positions(tokens, cfg)) + self.token_type_embedder(token_types)
    x = self.dropout(self.embedding_norm(x), deterministic=deterministic)
    if cfg.embedding_size is not None and cfg.embedding_size != cfg.emb_dim:
      x = self.embedding_projection(x)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    for i in range(cfg.num_layers + 1):
      if hook is not None and i == hook_layer:
        x, mask = self.run_hook(hook, x, mask)
      if i == cfg.num_layers:
        break
      x = self.layers[cfg.layer_params_index(i)](x, layers.key_mask_bias(mask), deterministic)
    return x, mask

  def lm_logits(self, hidden: Array) -> Array:
    """hidden [batch, length, emb_dim] -> logits [batch, length, vocab] float32."""
    return self.mlm_head(hidden, self.token_embedder)

  def __call__(self, tokens: Array, token_types: Optional[Array] = None,
               prompt: Optional[Array] = None, prompt_positions: Optional[Array] = None,
               hook: Optional[layers.Hook] = None, hook_layer: Optional[int] = None,
               enable_dropout: bool = False) -> Array:
    """Masked-LM logits [batch, length (+ hook's), vocab] float32; arguments as `encode`."""
    hidden, _ = self.encode(tokens, token_types, prompt, prompt_positions, hook, hook_layer,
                            enable_dropout)
    return self.lm_logits(hidden)
