"""The model-family seam: what the trainer needs of a model, for T5, BERT-likes and GPT-2.

As t5x separates `EncoderDecoderModel` from `DecoderOnlyModel`, a family here
wraps one module (its config fixes the sizes) and says how a batch of t5x
features becomes logits, scores and predictions. The trainer, evaluation and
the prompt methods talk to a family, never to `t5.T5` directly:

| family           | module            | batch features read                     | a `prefix` prompt goes        |
|------------------|-------------------|-----------------------------------------|-------------------------------|
| `EncoderDecoder` | `t5.T5`           | encoder_input_tokens, decoder_input_tokens | before the encoder input (T5's `prefix`) |
| `MaskedLM`       | `encoder.Encoder` | encoder_input_tokens (+ prompt_positions) | into slots after [CLS]/<s>, or the batch's `prompt_positions` |
| `CausalLM`       | `gpt2.GPT2`       | decoder_input_tokens, decoder_causal_attention, decoder_loss_weights | into slots before the text |

Every family returns logits aligned with `decoder_target_tokens` [batch,
length], so the trainer's loss, scores and accuracy are one code path:

  * EncoderDecoder: the decoder's logits, as t5x.
  * MaskedLM: one logit row per input token; the targets sit at the predicted
    ([MASK]) positions and the loss weights are 1 there only.
  * CausalLM: row i predicts token i + 1 of `inputs ++ targets` (t5x's
    decoder-only "prefix LM" features without the shift-right start token:
    GPT-2 has none); weights are 1 on the targets' rows.

A prompt method gives `encoder_args(params, batch_size)`: `prefix` [batch,
prompt_length, embed] or a late-prompt `hook` + `hook_layer`. For the
absolute-position families a prefix is written into placeholder slots
(`layers.insert_prompt_slots`, `layers.put_prompt`), so the prompt takes
positions and shifts the text; logit rows of prompt slots, or of vectors a
hook put in front, are dropped again before the loss. A batch that carries
`prompt_positions` [batch, prompt_length] (OptiPrompt's `[V1]..[V5]` slots,
`optiprompt.py`) places the prompt there instead, without changing lengths.

The prompt's width is `embed_dim(config)`: T5's and GPT-2's `emb_dim`, the
BERT-likes' token embedding width (ALBERT: 128). Every family names its token
table `token_embedder/embedding`, read by `embeddings(params)`.
"""
import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from prompt_recycling import data
from prompt_recycling.models import decoding
from prompt_recycling.models import encoder
from prompt_recycling.models import gpt2
from prompt_recycling.models import layers
from prompt_recycling.models import t5

Array = jax.Array
Batch = Mapping[str, Array]
Config = Union[t5.T5Config, encoder.EncoderConfig, gpt2.GPT2Config]
Example = Mapping[str, Any]


def embeddings(params: Any) -> Array:
  """The token embedding table [vocab, embed] of any family's parameter tree."""
  try:
    return params['token_embedder']['embedding']
  except (KeyError, TypeError):
    raise ValueError('The model parameters have no token_embedder/embedding table; expected a '
                     'T5, BERT-like or GPT-2 parameter tree.') from None


def depth(config: Config) -> int:
  """Number of layers a late prompt can be inserted between (T5: the encoder's)."""
  if isinstance(config, t5.T5Config):
    return config.num_encoder_layers
  return config.num_layers


def embed_dim(config: Config) -> int:
  """Width of the token embedding, hence of a soft prompt."""
  if isinstance(config, t5.T5Config):
    return config.emb_dim
  return config.token_embed_dim


def _fit(ids: Sequence[int], length: int, pad_id: int) -> np.ndarray:
  out = np.full((length,), pad_id, np.int32)
  ids = np.asarray(ids, np.int32)[:length]
  out[:len(ids)] = ids
  return out


def _prompt_inputs(tokens: Array, args: Dict[str, Any], batch: Batch, position: int,
                   slot_id: int):
  """(tokens with prompt slots, model kwargs, number of slots inserted at `position`).

  `args` are a prompt method's `encoder_args`; T5's `prefix` becomes `prompt`
  written into `prompt_length` new slots at `position`, or into the batch's
  `prompt_positions` when it has them.
  """
  args = dict(args)
  prefix = args.pop('prefix', None)
  if prefix is None:
    return tokens, args, 0
  if 'prompt_positions' in batch:
    return tokens, dict(args, prompt=prefix, prompt_positions=batch['prompt_positions']), 0
  tokens, positions = layers.insert_prompt_slots(tokens, position, prefix.shape[1], slot_id)
  return tokens, dict(args, prompt=prefix, prompt_positions=positions), prefix.shape[1]


def _reading_only(hook, reads: Array):
  """`hook` run on the positions `reads` [batch, length] only; the attention mask kept."""
  def wrapped(hidden, mask):
    new_hidden, _ = hook(hidden, reads)
    extra = new_hidden.shape[1] - hidden.shape[1]  # Vectors the hook put in front.
    return new_hidden, jnp.concatenate([jnp.ones((mask.shape[0], extra), bool), mask], axis=1)
  return wrapped


def _text_rows(logits: Array, length: int, position: int, inserted: int) -> Array:
  """Drops the logit rows of inserted prompt slots and of vectors a hook put in front."""
  if inserted:
    logits = jnp.concatenate([logits[:, :position], logits[:, position + inserted:]], axis=1)
  return logits[:, logits.shape[1] - length:]


@dataclasses.dataclass(frozen=True)
class EncoderDecoder:
  """T5 (t5x's EncoderDecoderModel): SentencePiece ids, EOS 1, decoder start and padding 0."""
  config: t5.T5Config
  eos_id: int = 1
  pad_id: int = 0
  decoder_start_id: int = 0

  @property
  def module(self) -> t5.T5:
    return t5.T5(self.config)

  def init_inputs(self):
    tokens = jnp.ones((1, 1), jnp.int32)
    return tokens, tokens

  def to_batch(self, examples: Sequence[Example], feature_lengths: Mapping[str, int]):
    return data.to_batch(examples, feature_lengths, self.decoder_start_id)

  def logits(self, params, batch: Batch, args: Dict[str, Any], *, enable_dropout: bool = False,
             rngs=None) -> Array:
    return self.module.apply({'params': params}, batch['encoder_input_tokens'],
                             batch['decoder_input_tokens'], **args, enable_dropout=enable_dropout,
                             rngs=rngs)

  def candidate_logits(self, params, batch: Batch, args: Dict[str, Any]) -> Array:
    """Logits [batch, candidates, length, vocab] of every candidate target from one encoding.

    `decoder_input_tokens` is [batch, candidates, length]: each example's input
    is encoded once and its encoding decoded for each of its candidates (rank
    classification over label words; `evaluation.rank_scores`).
    """
    variables = {'params': params}
    encoded, mask = self.module.apply(variables, batch['encoder_input_tokens'], **args,
                                      method=t5.T5.encode)
    rows, candidates, length = batch['decoder_input_tokens'].shape
    logits = self.module.apply(variables, jnp.repeat(encoded, candidates, axis=0),
                               jnp.repeat(mask, candidates, axis=0),
                               batch['decoder_input_tokens'].reshape(rows * candidates, length),
                               method=t5.T5.decode)
    return logits.reshape(rows, candidates, length, -1)

  def predict(self, params, batch: Batch, args: Dict[str, Any], max_decode_length: int) -> Array:
    return decoding.greedy_decode(self.module, {'params': params}, batch['encoder_input_tokens'],
                                  max_decode_length, eos_id=self.eos_id, **args)


@dataclasses.dataclass(frozen=True)
class MaskedLM:
  """BERT, RoBERTa, ALBERT: targets predicted at the input's [MASK] slots.

  Attributes:
    config: the encoder's sizes and family options.
    mask_id: the tokenizer's [MASK] / <mask> id; `to_batch` puts an example's
      targets at its positions, in order.
    eos_id: [SEP] / </s> (what ends an encoded text).
    slot_id: the placeholder id in prompt slots (any non-padding id: its
      embedding is overwritten); default `mask_id`.
    prompt_position: where a prefix prompt's slots go (1: after [CLS] / <s>).
  """
  config: encoder.EncoderConfig
  mask_id: int = 103
  eos_id: int = 102
  slot_id: Optional[int] = None
  prompt_position: int = 1

  @property
  def pad_id(self) -> int:
    return self.config.pad_id

  @property
  def module(self) -> encoder.Encoder:
    return encoder.Encoder(self.config)

  def init_inputs(self):
    return (jnp.ones((1, 1), jnp.int32),)

  def to_batch(self, examples: Sequence[Example], feature_lengths: Mapping[str, int]):
    """Examples (`inputs` with [MASK]s, `targets` one id per [MASK]) -> [batch, length] features.

    `prompt_positions` [prompt_length] per example rides along when present.
    """
    length = feature_lengths['inputs']
    tokens = np.stack([_fit(ex['inputs'], length, self.pad_id) for ex in examples])
    targets = np.zeros_like(tokens)
    for row, ex in zip(range(len(examples)), examples):
      slots = np.flatnonzero(tokens[row] == self.mask_id)
      given = list(ex['targets'])
      if len(given) > len(slots):
        raise ValueError(f'Example {row} of the batch has {len(given)} targets but {len(slots)} '
                         f'[MASK] tokens (id {self.mask_id}) within its first {length} tokens.')
      targets[row, slots[:len(given)]] = given
    batch = {'encoder_input_tokens': tokens, 'decoder_target_tokens': targets,
             'decoder_loss_weights': (targets > 0).astype(np.int32)}
    if any('prompt_positions' in ex for ex in examples):
      batch['prompt_positions'] = np.stack([np.asarray(ex['prompt_positions'], np.int32)
                                            for ex in examples])
    return batch

  def logits(self, params, batch: Batch, args: Dict[str, Any], *, enable_dropout: bool = False,
             rngs=None) -> Array:
    tokens = batch['encoder_input_tokens']
    slot = self.mask_id if self.slot_id is None else self.slot_id
    inputs, kwargs, inserted = _prompt_inputs(tokens, args, batch, self.prompt_position, slot)
    logits = self.module.apply({'params': params}, inputs, **kwargs, enable_dropout=enable_dropout,
                               rngs=rngs)
    return _text_rows(logits, tokens.shape[1], self.prompt_position, inserted)

  def predict(self, params, batch: Batch, args: Dict[str, Any], max_decode_length: int) -> Array:
    """The argmax at each [MASK], in order: [batch, max_decode_length] int32, 0 after the last."""
    tokens = batch['encoder_input_tokens']
    best = jnp.argmax(self.logits(params, batch, args), axis=-1).astype(jnp.int32)
    is_mask = tokens == self.mask_id
    # The k-th [MASK] of a row: stable order of (not mask, position).
    order = jnp.argsort(~is_mask, axis=1, stable=True)[:, :max_decode_length]
    picked = jnp.take_along_axis(best, order, axis=1)
    picked = jnp.where(jnp.take_along_axis(is_mask, order, axis=1), picked, 0)
    width = picked.shape[1]
    return jnp.pad(picked, ((0, 0), (0, max_decode_length - width)))


@dataclasses.dataclass(frozen=True)
class CausalLM:
  """GPT-2: `inputs ++ targets` as one sequence, row i predicting token i + 1.

  Attributes:
    config: GPT-2's sizes.
    eos_id: <|endoftext|> (50256 in GPT-2's vocabulary).
    slot_id: the placeholder id in prompt slots; default `eos_id`.
    prompt_position: where a prefix prompt's slots go (0: before the text).
  """
  config: gpt2.GPT2Config
  eos_id: int = 50256
  slot_id: Optional[int] = None
  prompt_position: int = 0
  pad_id: int = 0  # Padding is masked, never read: any id serves.

  @property
  def module(self) -> gpt2.GPT2:
    return gpt2.GPT2(self.config)

  def init_inputs(self):
    return (jnp.ones((1, 1), jnp.int32),)

  def to_batch(self, examples: Sequence[Example], feature_lengths: Mapping[str, int]):
    """Examples -> t5x decoder-only features of length inputs + targets - 1.

    `decoder_causal_attention` is 1 on the inputs' positions (t5x's name:
    where a prefix LM would attend bidirectionally; here the late-prompt
    pooling and the predictions read it).
    """
    n_in, n_tgt = feature_lengths['inputs'], feature_lengths['targets']
    length = n_in + n_tgt - 1
    tokens = np.full((len(examples), length), self.pad_id, np.int32)
    targets = np.zeros_like(tokens)
    weights = np.zeros_like(tokens)
    inputs_mask = np.zeros_like(tokens)
    for row, ex in enumerate(examples):
      inputs, tgt = list(ex['inputs'])[:n_in], list(ex['targets'])[:n_tgt]
      seq = inputs + tgt
      if not seq:  # An empty row (evaluation's padding): nothing valid, nothing weighted.
        continue
      tokens[row, :min(len(seq), length)] = seq[:length]
      targets[row, :len(seq) - 1] = seq[1:]
      start = max(len(inputs) - 1, 0)
      weights[row, start:len(seq) - 1] = 1
      inputs_mask[row, :len(inputs)] = 1
    return {'decoder_input_tokens': tokens, 'decoder_target_tokens': targets,
            'decoder_loss_weights': weights, 'decoder_causal_attention': inputs_mask}

  @staticmethod
  def _valid(batch: Batch) -> Array:
    """[batch, length] bool: positions up to the last input or weighted one (right padding)."""
    used = (batch['decoder_causal_attention'] > 0) | (batch['decoder_loss_weights'] > 0)
    return jnp.cumsum(used[:, ::-1], axis=1)[:, ::-1] > 0

  def _forward(self, params, tokens: Array, mask: Array, inputs_mask: Array, batch: Batch,
               args: Dict[str, Any], enable_dropout: bool = False, rngs=None) -> Array:
    """Logits [batch, length, vocab] of `tokens` [batch, length] under the prompt `args`.

    A late-prompt hook sees `inputs_mask` (the inputs' positions) rather than
    `mask`: what it generates is attended to by the targets' rows, so it must
    not read the targets (GPT-2's prompt sits in front, seen by every row).
    """
    slot = self.eos_id if self.slot_id is None else self.slot_id
    if 'hook' in args:
      args = dict(args, hook=_reading_only(args['hook'], inputs_mask))
    inputs, kwargs, inserted = _prompt_inputs(tokens, args, batch, self.prompt_position, slot)
    if inserted:
      mask = jnp.concatenate([mask[:, :self.prompt_position],
                              jnp.ones((mask.shape[0], inserted), bool),
                              mask[:, self.prompt_position:]], axis=1)
    logits = self.module.apply({'params': params}, inputs, mask, **kwargs,
                               enable_dropout=enable_dropout, rngs=rngs)
    return _text_rows(logits, tokens.shape[1], self.prompt_position, inserted)

  def logits(self, params, batch: Batch, args: Dict[str, Any], *, enable_dropout: bool = False,
             rngs=None) -> Array:
    return self._forward(params, batch['decoder_input_tokens'], self._valid(batch),
                         batch['decoder_causal_attention'] > 0, batch, args, enable_dropout, rngs)

  def predict(self, params, batch: Batch, args: Dict[str, Any], max_decode_length: int) -> Array:
    """Greedy continuation of each row's inputs: [batch, max_decode_length] int32, 0 after EOS.

    Without a cache: every step reruns the whole sequence (short answers only).
    """
    inputs_mask = batch['decoder_causal_attention'] > 0
    lengths = jnp.sum(inputs_mask, axis=1)  # [batch]
    tokens = jnp.where(inputs_mask, batch['decoder_input_tokens'], self.pad_id)
    width = tokens.shape[1] + max_decode_length
    tokens = jnp.pad(tokens, ((0, 0), (0, max_decode_length)), constant_values=self.pad_id)
    rows = jnp.arange(tokens.shape[0])

    def step(carry, t):
      tokens, done = carry
      cur = lengths + t
      mask = jnp.arange(width)[None] < cur[:, None]
      logits = self._forward(params, tokens, mask, jnp.arange(width)[None] < lengths[:, None], {},
                             args)
      nxt = jnp.argmax(logits[rows, jnp.maximum(cur - 1, 0)], axis=-1).astype(jnp.int32)
      nxt = jnp.where(done, 0, nxt)
      tokens = tokens.at[rows, cur].set(jnp.where(done, self.pad_id, nxt))
      return (tokens, done | (nxt == self.eos_id)), nxt

    _, out = jax.lax.scan(step, (tokens, jnp.zeros(tokens.shape[0], bool)),
                          jnp.arange(max_decode_length))
    return out.T


Family = Union[EncoderDecoder, MaskedLM, CausalLM]


def of(model: Any) -> Family:
  """A family from a family (returned as is), a `t5.T5` module, or a model config.

  BERT-likes built from a config get BERT's [MASK] and [SEP] ids; build
  `MaskedLM(config, mask_id=..., eos_id=...)` from the tokenizer otherwise.
  """
  if isinstance(model, (EncoderDecoder, MaskedLM, CausalLM)):
    return model
  if isinstance(model, t5.T5):
    return EncoderDecoder(model.config)
  if isinstance(model, encoder.Encoder):
    return MaskedLM(model.config)
  if isinstance(model, gpt2.GPT2):
    return CausalLM(model.config)
  if isinstance(model, t5.T5Config):
    return EncoderDecoder(model)
  if isinstance(model, encoder.EncoderConfig):
    return MaskedLM(model)
  if isinstance(model, gpt2.GPT2Config):
    return CausalLM(model)
  raise TypeError(f'No model family for {type(model).__name__}; expected a T5, Encoder or GPT2 '
                  'module, its config, or a models.family family.')


def from_tokenizer(config: Config, tokenizer: Any) -> Family:
  """The family of `config` with its special ids read from a `transformers` tokenizer."""
  if isinstance(config, encoder.EncoderConfig):
    return MaskedLM(config, mask_id=tokenizer.mask_token_id, eos_id=tokenizer.sep_token_id)
  if isinstance(config, gpt2.GPT2Config):
    return CausalLM(config, eos_id=tokenizer.eos_token_id)
  return of(config)
