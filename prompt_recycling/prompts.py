"""Soft prompts (Lester et al. 2021): the parameter, its initialisers, and how it enters T5.

A prompt method is two pure functions, as an optax transformation is:

  init(rng, frozen) -> params                    the trainable tree
  encoder_args(params, batch_size) -> kwargs     `prefix` [batch, prompt_length,
                                                 embed], or `hook` + `hook_layer`

plus the logical axes of `params` for sharding, and optionally
`model_params(params, frozen)`, the model parameters a step runs with (default:
`frozen`; pretraining trains the model itself and returns `params`). The
trainer sees only this interface, so prompt tuning (here), late prompt tuning
(`lpt.py`) and pretraining share one training loop. The method does not know
the model family: it reads the token table through `family.embeddings` (every
family names it `token_embedder/embedding`), and the family
(`models/family.py`) decides where a `prefix` goes (T5: before the encoder
input; BERT-likes and GPT-2: into placeholder slots, or the batch's
`prompt_positions`). No tasks, files of runs, or training live here.
"""
import pathlib
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from prompt_recycling.models import family

Array = jax.Array
# (rng, embedding [vocab, embed], shape (prompt_length, embed)) -> [prompt_length, embed]
Initializer = Callable[[Array, Array, tuple], Array]

PROMPT_AXES = ('prompt', 'prompt_embed')


class PromptMethod(NamedTuple):
  init: Callable[[Array, Any], Any]
  encoder_args: Callable[[Any, int], Dict[str, Any]]
  logical_axes: Any  # tree of PartitionSpec matching `init`'s output
  # (params, frozen) -> model parameters; None means the frozen model's.
  model_params: Optional[Callable[[Any, Any], Any]] = None
  # (params, frozen) -> scalar added to the per-token training loss (e.g. wayward.py).
  penalty: Optional[Callable[[Any, Any], Any]] = None

  def model_variables(self, params: Any, frozen: Any) -> Any:
    """The parameters the model runs with: `model_params(params, frozen)`, or the frozen ones."""
    return frozen if self.model_params is None else self.model_params(params, frozen)


def random_uniform(scale: float = 0.5, centered: bool = False) -> Initializer:
  """Uniform random prompt: U[0, scale) by default, U[-scale, scale) with `centered`.

  The default is what the prompt-tuning release runs, flax's
  `nn.initializers.uniform(scale=0.5)` (`configs/models/t5_1_1_prompt.gin`),
  drawing the same numbers from the same key. The paper (Lester et al. 2021,
  Sec. 3.1) describes [-0.5, 0.5]: `centered=True`.
  """
  def init(rng, embedding, shape):
    del embedding
    if centered:
      return jax.random.uniform(rng, shape, jnp.float32, -scale, scale)
    return nn.initializers.uniform(scale)(rng, shape, jnp.float32)
  return init


def random_normal(stddev: float = 1.0) -> Initializer:
  """N(0, stddev^2): PyTorch's `nn.Embedding` default, the LPT code's static late prompt."""
  def init(rng, embedding, shape):
    del embedding
    return nn.initializers.normal(stddev)(rng, shape, jnp.float32)
  return init


def sampled_vocab(population: int = 5000, ids: Optional[Sequence[int]] = None) -> Initializer:
  """Rows copied from embeddings of tokens drawn from the `population` most common.

  SentencePiece ids are ordered by frequency, so the first 5,000 ids are the
  common tokens the paper samples from. Same draw as the prompt-tuning
  release's `prompts.from_sample_of_embeddings` for the same key (without
  replacement unless the prompt is longer than the population). Deviation: a
  population larger than the table is an error here (the release warns and
  shrinks it).

  WordPiece and byte-level BPE ids are not ordered by frequency (BERT's,
  GPT-2's): give the common tokens as an explicit id set, `ids` (e.g. the
  anchor words' ids of `recycling.vocab`), which then is the population.
  """
  def init(rng, embedding, shape):
    if ids is not None:
      pool = np.asarray(ids, np.int32)  # Host checks: `init` may run under jit.
      if pool.ndim != 1 or not pool.size or pool.min() < 0 or pool.max() >= embedding.shape[0]:
        raise ValueError(f'sampled_vocab(ids=...) needs a non-empty 1-D list of ids within the '
                         f'embedding table of {embedding.shape[0]} rows; got shape {pool.shape}.')
      picks = jax.random.choice(rng, pool.size, (shape[0],), replace=shape[0] > pool.size)
      return jnp.asarray(embedding)[jnp.asarray(pool)[picks]].astype(jnp.float32)
    if population > embedding.shape[0]:
      raise ValueError(f'sampled_vocab(population={population}) exceeds the embedding table '
                       f'of {embedding.shape[0]} rows.')
    draws = jax.random.choice(rng, population, (shape[0],), replace=shape[0] > population)
    return jnp.asarray(embedding)[draws].astype(jnp.float32)
  return init


def class_labels(label_token_ids: Sequence[Sequence[int]],
                 fallback: Initializer = sampled_vocab()) -> Initializer:
  """The first rows are the class labels' embeddings, the rest from `fallback`.

  A label of several tokens is the mean of its token embeddings, as in the
  prompt-tuning release's `prompts.from_embedded_list`, which this matches
  row for row for the same key. Deviation: more labels than prompt rows is an
  error here (the release warns and drops the extra labels).

  Args:
    label_token_ids: one token-id list per label word (EOS excluded), e.g. the
      verbalizers' tokenisations.
    fallback: initialiser of the remaining rows.
  """
  def init(rng, embedding, shape):
    if len(label_token_ids) > shape[0]:
      raise ValueError(f'{len(label_token_ids)} class labels do not fit a prompt of length {shape[0]}.')
    embedding = jnp.asarray(embedding)
    rows = [embedding[jnp.asarray(ids)].mean(axis=0) for ids in label_token_ids]
    prompt = fallback(rng, embedding, shape)
    return prompt.at[:len(rows)].set(jnp.stack(rows).astype(prompt.dtype)) if rows else prompt
  return init


def from_file(path: str) -> Initializer:
  """A prompt saved as `.npy` (ours, or the prompt-tuning repo's numpy export)."""
  def init(rng, embedding, shape):
    del rng, embedding
    prompt = load_prompt(path)
    if prompt.shape != tuple(shape):
      raise ValueError(f'Prompt file {path} holds an array of shape {prompt.shape}, but this model '
                       f'needs [prompt_length, embed] = {tuple(shape)}.')
    return jnp.asarray(prompt, jnp.float32)
  return init


def load_prompt(path: str) -> np.ndarray:
  """Reads a `[prompt_length, embed]` prompt from `.npy`; rejects other shapes and NaNs."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'Prompt file {path} does not exist.')
  try:
    with path.open('rb') as f:
      prompt = np.load(f, allow_pickle=False)
  except (ValueError, EOFError) as error:  # Not a .npy file: text, pickle, truncated.
    raise ValueError(f'Prompt file {path} is not a numpy .npy array ({error}); save one with '
                     'numpy.save, shape [prompt_length, embed].') from error
  if not isinstance(prompt, np.ndarray) or prompt.ndim != 2:
    raise ValueError(f'Prompt file {path} holds shape {prompt.shape}; expected [prompt_length, embed].')
  if not np.all(np.isfinite(prompt)):
    raise ValueError(f'Prompt file {path} contains NaN or Inf values.')
  return prompt


def save_prompt(prompt: Any, path: str) -> None:
  """Writes `[prompt_length, embed]` as `.npy` (also files without the suffix, as the
  prompt-tuning repo's `encoder.prompt.prompt.prompt` export)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  with tmp.open('wb') as f:
    np.save(f, np.asarray(prompt, np.float32))
  tmp.replace(path)  # Never leave a half-written prompt behind.


def prepend(prompt: Array, batch_size: int) -> Array:
  """[prompt_length, embed] -> [batch, prompt_length, embed], the encoder's `prefix`."""
  return jnp.broadcast_to(prompt[None], (batch_size,) + prompt.shape)


def prompt_tuning(length: int = 100, init: Initializer = sampled_vocab()) -> PromptMethod:
  """Prompt tuning: one `[length, embed]` matrix prepended to every input.

  Args:
    length: number of prompt tokens (the paper's default is 100).
    init: how to initialise it from the frozen model's token embeddings.
  """
  def init_fn(rng, frozen):
    embedding = family.embeddings(frozen)
    return {'prompt': init(rng, embedding, (length, embedding.shape[1]))}

  def encoder_args(params, batch_size):
    return {'prefix': prepend(params['prompt'], batch_size)}

  return PromptMethod(init_fn, encoder_args, {'prompt': P(*PROMPT_AXES)})


def no_prompt() -> PromptMethod:
  """The frozen model alone: the zero-shot baseline a recycled prompt must beat."""
  return PromptMethod(lambda rng, frozen: {}, lambda params, batch_size: {}, {})


def save_params(params: Any, path: str) -> None:
  """Writes a tree of arrays to one `.npz`, keys `/`-joined (`down/kernel`); atomic.

  Refuses NaN or Inf: a diverged fit or run is not worth keeping.
  """
  flat = flax.traverse_util.flatten_dict(jax.device_get(params))
  for key in flat:
    if any(not isinstance(k, str) or not k or '/' in k for k in key):
      raise ValueError(f'params key {key} must be non-empty strings without "/" to round-trip '
                       f'through {path}.')
  flat = {'/'.join(k): np.asarray(v) for k, v in flat.items()}
  for key, value in flat.items():
    if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
      raise ValueError(f'params[{key!r}] (shape {value.shape}) contains NaN or Inf; refusing to '
                       f'write {path}.')
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  with tmp.open('wb') as f:
    np.savez(f, **flat)
  tmp.replace(path)  # Never leave a half-written file behind.


def load_params(path: str) -> Dict[str, Any]:
  """Reads a tree written by `save_params` (host numpy arrays); rejects NaN and Inf."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'Parameter file {path} does not exist.')
  try:
    with np.load(path, allow_pickle=False) as f:
      flat = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise ValueError(f'{path} is not a parameter .npz written by save_params: {e}') from e
  bad = [k for k, v in flat.items() if np.issubdtype(v.dtype, np.inexact) and not np.isfinite(v).all()]
  if bad:
    raise ValueError(f'Parameter file {path} has NaN or Inf values in {bad}.')
  return flax.traverse_util.unflatten_dict(flat, sep='/')
