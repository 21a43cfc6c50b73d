"""Greedy decoding with a key/value cache, one `lax.scan` over target positions."""
from typing import Any, Optional

import jax
import jax.numpy as jnp

from prompt_recycling.models import t5

Array = jax.Array


def greedy_decode(model: t5.T5, params: Any, encoder_input_tokens: Array, max_decode_length: int,
                  *, prefix: Optional[Array] = None, hook: Optional[t5.EncoderHook] = None,
                  hook_layer: Optional[int] = None, eos_id: int = 1) -> Array:
  """Decodes greedily; jit it with `model` and `max_decode_length` static.

  The encoder runs once; each step feeds one token through the decoder, which
  appends its keys and values to the cache, so a step costs O(length) rather
  than a full teacher-forced pass.

  Args:
    model: the T5 module.
    params: its parameters (`{'params': ...}` is also accepted).
    encoder_input_tokens: [batch, length] int32.
    max_decode_length: number of tokens to produce.
    prefix, hook, hook_layer: the encoder hooks (see `t5.Encoder`).
    eos_id: after this token a row produces padding (0).

  Returns:
    [batch, max_decode_length] int32 tokens, EOS included, 0 after it.
  """
  variables = params if 'params' in params else {'params': params}
  encoded, mask = model.apply(variables, encoder_input_tokens, prefix, hook, hook_layer,
                              method=t5.T5.encode)
  batch = encoder_input_tokens.shape[0]
  # A full-length call only shapes the cache (all zeros, index 0).
  _, state = model.apply(variables, encoded, mask, jnp.zeros((batch, max_decode_length), jnp.int32),
                         decode=True, max_decode_length=max_decode_length,
                         method=t5.T5.decode, mutable=['cache'])
  cache = jax.tree.map(jnp.zeros_like, state['cache'])

  def step(carry, _):
    cache, token, done = carry
    logits, state = model.apply({**variables, 'cache': cache}, encoded, mask, token[:, None],
                                decode=True, max_decode_length=max_decode_length,
                                method=t5.T5.decode, mutable=['cache'])
    next_token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    next_token = jnp.where(done, 0, next_token)
    return (state['cache'], next_token, done | (next_token == eos_id)), next_token

  start = jnp.zeros((batch,), jnp.int32)  # T5's decoder start token is padding (0).
  _, tokens = jax.lax.scan(step, (cache, start, jnp.zeros((batch,), bool)), None,
                           length=max_decode_length)
  return tokens.T
