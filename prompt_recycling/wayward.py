"""Wayward prompts (Khashabi et al., 2022), as recycled by Lester et al. (2022).

A prompt tuned with an extra loss term that keeps it near the embedding of a
discrete instruction D [prompt_length, embed] (the instruction's tokens in the
frozen model):

  loss = task loss + gamma * sum_rows |prompt - D|^2 / prompt_length

The prompt has one row per token of the instruction and starts at D. Settings
are the authors' (google-research/prompt-tuning
`prompt_tuning/extended/train/wayward.py` `squared_l2_distance`,
`configs/extended/models/wayward_t5_1_1_prompt.gin`: gamma 0.01, the SST-2
instruction below, encoded without EOS). Recycling a wayward prompt fits the
recycler on that instruction's tokens only (`recycling.vocab` spec
'string:TEXT').

The penalty is added to this project's per-token mean cross entropy; whether
the authors' t5x loss was summed or normalised per token (which changes what
gamma means) was not checked.
"""
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from prompt_recycling import prompts
from prompt_recycling.models import family

# wayward_t5_1_1_prompt.gin TASK_STRING (SST-2; spaces around punctuation as T5's preprocessing).
SST2_INSTRUCTION = (
    'Classify this movie review based on its sentiment . Use 2 classes . One positive ( for '
    'reviews that paint the movie in a favorable light ) and one negative ( for reviews that make '
    'you not want to see the movie or think it will be bad ) . Use the string ` positive ` for the '
    'positive class , the good / great movies , and use the string ` negative ` for the negative '
    'class , the bad movies .')


def squared_l2_distance(x, y):
  """sum over rows of |x - y|^2, divided by the number of rows: [length, embed] x 2 -> []."""
  return jnp.sum(jnp.square(x - y)) / x.shape[0]


def from_token_ids(token_ids: Sequence[int]) -> prompts.Initializer:
  """The embedding rows of `token_ids`, in order: the discrete prompt D."""
  ids = np.asarray(token_ids, np.int32)

  def init(rng, embedding, shape):
    del rng
    if tuple(shape) != (ids.size, embedding.shape[1]):
      raise ValueError(f'A prompt of shape {tuple(shape)} cannot start from the {ids.size} '
                       f'instruction tokens; expected [{ids.size}, {embedding.shape[1]}].')
    return jnp.asarray(embedding)[ids].astype(jnp.float32)

  return init


def wayward(token_ids: Sequence[int], gamma: float = 0.01) -> prompts.PromptMethod:
  """Prompt tuning from, and kept near, the embedding of an instruction's tokens.

  Args:
    token_ids: the instruction's token ids (no EOS), e.g.
      `vocabulary.encode(SST2_INSTRUCTION)`; the prompt length is their number.
    gamma: weight of the distance to the instruction's embedding.

  Returns:
    A `PromptMethod` whose `penalty` is gamma * squared_l2_distance(prompt, D).
  """
  ids = np.asarray(token_ids, np.int32)
  if ids.ndim != 1 or not ids.size:
    raise ValueError(f'token_ids must be a non-empty list of ids; found shape {ids.shape}.')
  method = prompts.prompt_tuning(int(ids.size), from_token_ids(ids))

  def penalty(params, frozen):
    discrete = jnp.take(family.embeddings(frozen), ids, axis=0).astype(jnp.float32)
    return gamma * squared_l2_distance(params['prompt'], discrete)

  return method._replace(penalty=penalty)


def wayward_from_text(text: str = SST2_INSTRUCTION, gamma: float = 0.01,
                      vocabulary_path: str = None) -> prompts.PromptMethod:
  """`wayward` on the tokens of `text` (the T5 SentencePiece model shipped, by default)."""
  from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
  from prompt_recycling.recycling import vocab  # pylint: disable=g-import-not-at-top
  path = vocabulary_path or vocab.ENGLISH_ONLY_PATH.replace('filtered-vocab-english-only.json',
                                                            'sentencepiece.model')
  return wayward(vocabulary.get_vocabulary(path).encode(text), gamma)
