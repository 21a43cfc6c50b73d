"""GPT-2 causal language model in Flax Linen, output layer tied to the token embedding.

  x = tok[ids] + pos[0..length-1]                           [batch, length, embed]
  x = x + attn(LN(x)); x = x + mlp(LN(x))   per layer     (causal attention, pre-norm)
  logits = LN(x) @ tok.T                                    -> [batch, length, vocab] float32

Positions are 0..length-1 whatever the padding, as HF's GPT2LMHeadModel gives
them when called without `position_ids`; pad on the right. Inputs longer than
`max_positions` (1,024 for the released models) are refused.

Parameter names (checkpoint mapping in `family_checkpoints.py`; HF's joint
`c_attn` is split into query/key/value): `token_embedder/embedding`,
`position_embedder/embedding`, `layers_{i}/{attention_norm, attention/{query,
key,value,out}, mlp_norm, mlp/{wi,wo}}`, `final_norm`.

Prompt hooks, as `models/encoder.py`:
  * `prompt` [batch, prompt_length, embed] at `prompt_positions` [batch,
    prompt_length]: written over the token embeddings at those slots (which
    hold a placeholder id), before positions are added.
  * `hook(hidden, mask) -> (hidden, mask)` before layer `hook_layer` (k = after
    k layers; `num_layers` = before the final norm). The causal mask follows
    the hook's output length, so a late prompt put in front is seen by every
    text token after it. A late-prompt generator must pool over the valid
    (mask) positions only: GPT-2 has no [CLS] token to read.
"""
import dataclasses
from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_recycling.models import layers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GPT2Config:
  """Sizes of a GPT-2. Defaults: GPT-2 small (124M)."""
  vocab_size: int = 50257
  emb_dim: int = 768
  num_heads: int = 12
  head_dim: int = 64
  mlp_dim: int = 3072
  num_layers: int = 12
  max_positions: int = 1024
  activation: str = 'gelu_new'
  layer_norm_epsilon: float = 1e-5
  dropout_rate: float = 0.0
  dtype: str = 'float32'

  def __post_init__(self):
    layers.activation(self.activation)  # Fails early on an unknown name.

  @property
  def token_embed_dim(self) -> int:
    """The width of the token embedding table, hence of a soft prompt."""
    return self.emb_dim


class GPT2(nn.Module):
  """GPT-2 LM. Variables: {'params': tree named as the module docstring}."""
  config: GPT2Config

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, ('vocab', 'embed'), cfg.dtype)
    self.position_embedder = layers.Embed(cfg.max_positions, cfg.emb_dim, ('length', 'embed'),
                                          cfg.dtype)
    self.layers = [
        layers.TransformerLayer(cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cfg.activation,
                                cfg.layer_norm_epsilon, True, cfg.dropout_rate, cfg.dtype)
        for _ in range(cfg.num_layers)]
    self.final_norm = layers.LayerNorm(cfg.layer_norm_epsilon, cfg.dtype)
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.run_hook = layers.RunHook()  # Hooks may build modules (dropout).

  def encode(self, tokens: Array, mask: Optional[Array] = None, prompt: Optional[Array] = None,
             prompt_positions: Optional[Array] = None, hook: Optional[layers.Hook] = None,
             hook_layer: Optional[int] = None,
             enable_dropout: bool = False) -> Tuple[Array, Array]:
    """Final (normed) hidden states.

    Args:
      tokens: [batch, length] int32.
      mask: optional [batch, length] bool, False for padding (GPT-2 has no
        padding id); default all valid.
      prompt: optional [batch, prompt_length, embed] soft prompt.
      prompt_positions: [batch, prompt_length] int, its slots in `tokens`.
      hook: optional (hidden [batch, l, embed], mask [batch, l]) -> (hidden,
        mask), run before layer `hook_layer`.
      hook_layer: in [0, num_layers].
      enable_dropout: True in training.

    Returns:
      hidden [batch, length (+ hook's), embed] after the final layer norm, and
      its validity mask [batch, same] bool.
    """
    cfg = self.config
    deterministic = not enable_dropout
    if tokens.shape[1] > cfg.max_positions:
      raise ValueError(f'Input of length {tokens.shape[1]} exceeds GPT-2\'s {cfg.max_positions} '
                       'positions; shorten the text or the prompt.')
    if hook is not None and not 0 <= (-1 if hook_layer is None else hook_layer) <= cfg.num_layers:
      raise ValueError(f'hook_layer must be in [0, {cfg.num_layers}] for a {cfg.num_layers}-layer '
                       f'GPT-2, got {hook_layer}.')
    tokens = tokens.astype(jnp.int32)
    mask = jnp.ones(tokens.shape, bool) if mask is None else mask.astype(bool)
    x = layers.put_prompt(self.token_embedder(tokens), prompt, prompt_positions)
    x = x + self.position_embedder(jnp.arange(tokens.shape[1])[None])
    x = self.dropout(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    for i in range(cfg.num_layers + 1):
      if hook is not None and i == hook_layer:
        x, mask = self.run_hook(hook, x, mask)
      if i == cfg.num_layers:
        break
      bias = layers.causal_bias(x.shape[1]) + layers.key_mask_bias(mask)
      x = self.layers[i](x, bias, deterministic)
    return self.final_norm(x), mask

  def lm_logits(self, hidden: Array) -> Array:
    """hidden [batch, length, embed] -> next-token logits [batch, length, vocab] float32."""
    logits = nn.with_logical_constraint(self.token_embedder.attend(hidden),
                                        ('batch', 'length', 'vocab'))
    return logits.astype(jnp.float32)

  def __call__(self, tokens: Array, mask: Optional[Array] = None, prompt: Optional[Array] = None,
               prompt_positions: Optional[Array] = None, hook: Optional[layers.Hook] = None,
               hook_layer: Optional[int] = None, enable_dropout: bool = False) -> Array:
    """Next-token logits [batch, length (+ hook's), vocab] float32; arguments as `encode`."""
    hidden, _ = self.encode(tokens, mask, prompt, prompt_positions, hook, hook_layer,
                            enable_dropout)
    return self.lm_logits(hidden)
