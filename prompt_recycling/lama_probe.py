"""LAMA Precision@1 as OptiPrompt scores it, for T5: one forward pass per batch.

OptiPrompt (princeton-nlp/OptiPrompt `code/utils.py` `load_data`, `evaluate`;
`code/run_optiprompt.py`), which Wu et al. (2024) evaluate with:

* facts: each relation's `test.jsonl` (dev for model selection), deduplicated
  on (subject, object); a fact whose object is not in the common vocabulary
  (`common_vocab_cased.txt`) is dropped;
* prediction: the argmax of the masked position's distribution restricted to
  the common vocabulary; P@1 per relation, then the mean over relations;
* templates: the relation's manual template '[X] was born in [Y] .', or for a
  soft prompt of length P, '[X] [V1] ... [VP] [Y] .' (the vectors between the
  subject and the blank).

The T5 adaptation (named deviations): the blank [Y] is T5's first sentinel
`<extra_id_0>` and the object is read from the decoder's second position, after
the sentinel, as in span corruption (decoder input [<pad>, <extra_id_0>]); the
candidates are the common-vocabulary words that are one T5 token after a space
(`recycling.vocab.single_token_anchors`), so facts whose object is not such a
word are dropped too. All candidates are scored at once from one
[batch, 2, vocab] forward pass; no pass per candidate.

Pure JAX and numpy (no TensorFlow): the facts come from the local LAMA files
(`../shared/data/lama`: `relations.jsonl`, `trex_original/<P>/<split>.jsonl`).
"""
import functools
import json
import pathlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from prompt_recycling.models import t5
from prompt_recycling.recycling import vocab as recycling_vocab

SENTINEL = '<extra_id_0>'
EOS_ID = 1


def read_templates(path: str) -> Dict[str, str]:
  """relation id -> manual template, from LAMA's `relations.jsonl`."""
  templates = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        templates[row['relation']] = row['template']
  return templates


def load_facts(path: str, vocab_subset) -> List[Tuple[str, str]]:
  """(subject, object) facts of one relation file, as OptiPrompt's `load_data` keeps them.

  Args:
    path: a `.jsonl` of {'sub' or 'sub_label', 'obj' or 'obj_label'} rows.
    vocab_subset: allowed objects (a set of words).

  Returns:
    Facts in file order, first occurrence of each (subject, object) pair only,
    objects in `vocab_subset` only.
  """
  facts, seen = [], set()
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      row = json.loads(line)
      fact = (row.get('sub_label', row.get('sub')), row.get('obj_label', row.get('obj')))
      if fact in seen or fact[1] not in vocab_subset:
        continue
      seen.add(fact)
      facts.append(fact)
  return facts


def candidates(words: Sequence[str], tokenizer) -> Tuple[List[str], np.ndarray]:
  """The common-vocabulary words that are one T5 token after a space, and those ids [n]."""
  kept, ids = recycling_vocab.single_token_anchors(words, [tokenizer.encode], [tokenizer.unk_id])
  return kept, ids[0]


def encode_fact(subject: str, tokenizer, template: Optional[str] = None,
                prompt_length: int = 0) -> Tuple[List[int], int]:
  """Encoder tokens of one fact and where its soft prompt goes.

  Args:
    subject: the [X] filler.
    tokenizer: `.encode(text)`.
    template: the manual template (with [X], [Y]); None for a soft prompt.
    prompt_length: soft prompt rows, put between the subject and the blank.

  Returns:
    (tokens ending in EOS, with `prompt_length` zeros at the slot; the slot's
    first position, -1 without a soft prompt).
  """
  if template is not None:
    text = template.replace('[X]', subject).replace('[Y]', SENTINEL)
    return tokenizer.encode(text) + [EOS_ID], -1
  head = tokenizer.encode(subject)
  return head + [0] * prompt_length + tokenizer.encode(f'{SENTINEL} .') + [EOS_ID], len(head)


def make_batch(facts: Sequence[Tuple[str, str]], tokenizer, word_index: Dict[str, int],
               length: int, template: Optional[str] = None,
               prompt_length: int = 0) -> Dict[str, np.ndarray]:
  """Numpy arrays of a batch: tokens [batch, length], slot [batch], gold [batch].

  `gold` is the index of the object among the candidates (`word_index`).

  Raises:
    ValueError: a fact longer than `length`.
  """
  tokens = np.zeros((len(facts), length), np.int32)
  slot = np.full((len(facts),), -1, np.int32)
  gold = np.zeros((len(facts),), np.int32)
  for i, (subject, obj) in enumerate(facts):
    ids, start = encode_fact(subject, tokenizer, template, prompt_length)
    if len(ids) > length:
      raise ValueError(f'Fact {subject!r} -> {obj!r} is {len(ids)} tokens; the batch length is '
                       f'{length}: raise `length`.')
    tokens[i, :len(ids)] = ids
    slot[i], gold[i] = start, word_index[obj]
  return {'tokens': tokens, 'slot': slot, 'gold': gold}


@functools.partial(jax.jit, static_argnames=('model',))
def candidate_logits(model: t5.T5, frozen: Any, tokens: jax.Array, slot: jax.Array,
                     prompt: Optional[jax.Array], candidate_ids: jax.Array) -> jax.Array:
  """Logits of every candidate as the object, [batch, num_candidates]: one forward pass.

  Args:
    model: the T5 module.
    frozen: its params.
    tokens: [batch, length] encoder tokens (0 = padding, and the prompt slot).
    slot: [batch] first position of the soft prompt (-1: none).
    prompt: [prompt_length, embed] soft prompt, or None.
    candidate_ids: [num_candidates] token ids.
  """
  hook = None
  if prompt is not None:
    rows = jnp.arange(tokens.shape[1])[None, :] - slot[:, None]  # [batch, length]
    in_slot = (slot[:, None] >= 0) & (rows >= 0) & (rows < prompt.shape[0])

    def hook(x, mask):  # Puts the prompt rows in the slot before the first layer.
      values = jnp.take(prompt.astype(x.dtype), jnp.clip(rows, 0, prompt.shape[0] - 1), axis=0)
      return jnp.where(in_slot[..., None], values, x), mask | in_slot

  decoder_inputs = jnp.broadcast_to(jnp.array([0, 32099], jnp.int32), (tokens.shape[0], 2))
  logits = model.apply({'params': frozen}, tokens, decoder_inputs, hook=hook,
                       hook_layer=0 if hook is not None else None)
  return jnp.take(logits[:, 1], candidate_ids, axis=-1)


def predict(model, frozen, tokens, slot, prompt, candidate_ids) -> np.ndarray:
  """Index of the best candidate for each fact, [batch] (`candidate_logits`' argmax)."""
  return np.asarray(jnp.argmax(candidate_logits(model, frozen, tokens, slot, prompt,
                                                candidate_ids), axis=-1))


def precision_at_1(model: t5.T5, frozen: Any, tokenizer, facts: Dict[str, Sequence[Tuple[str, str]]],
                   candidate_words: Sequence[str], candidate_ids, *,
                   templates: Optional[Dict[str, str]] = None, prompts=None,
                   batch_size: int = 64, length: int = 48) -> Dict[str, Any]:
  """LAMA P@1 (%) per relation and its mean over relations.

  Args:
    model, frozen: the T5 model and params.
    tokenizer: the T5 vocabulary.
    facts: relation -> (subject, object) facts (`load_facts`).
    candidate_words, candidate_ids: `candidates(...)`; objects outside them
      are dropped (counted in 'dropped').
    templates: relation -> manual template (for manual prompts).
    prompts: relation -> soft prompt [prompt_length, embed] (instead).
    batch_size: facts per forward pass (the last batch is padded).
    length: encoder length of every batch (one compilation).

  Returns:
    {'p@1': mean over relations, 'per_relation': {relation: p@1},
     'num_facts': {relation: n}, 'dropped': {relation: n}}.
  """
  if (templates is None) == (prompts is None):
    raise ValueError('Give exactly one of templates= (manual) or prompts= (soft).')
  word_index = {w: i for i, w in enumerate(candidate_words)}
  ids = jnp.asarray(candidate_ids, jnp.int32)
  per_relation, counts, dropped = {}, {}, {}
  for relation, relation_facts in facts.items():
    kept = [f for f in relation_facts if f[1] in word_index]
    dropped[relation] = len(relation_facts) - len(kept)
    if not kept:
      continue
    prompt = None if prompts is None else jnp.asarray(prompts[relation], jnp.float32)
    template = None if templates is None else templates[relation]
    correct = 0
    for start in range(0, len(kept), batch_size):
      chunk = kept[start:start + batch_size]
      padded = list(chunk) + [chunk[-1]] * (batch_size - len(chunk))
      batch = make_batch(padded, tokenizer, word_index, length, template,
                         0 if prompt is None else prompt.shape[0])
      best = predict(model, frozen, batch['tokens'], batch['slot'], prompt, ids)
      correct += int(np.sum(best[:len(chunk)] == batch['gold'][:len(chunk)]))
    per_relation[relation] = 100.0 * correct / len(kept)
    counts[relation] = len(kept)
  if not per_relation:
    raise ValueError('No fact has an object among the candidates.')
  return {'p@1': float(np.mean(list(per_relation.values()))), 'per_relation': per_relation,
          'num_facts': counts, 'dropped': dropped}


def load_lama(lama_dir: str, split: str = 'test', relations: Optional[Sequence[str]] = None,
              common_vocab: str = 'common_vocab_cased.txt') -> Tuple[Dict[str, list], Dict[str, str], List[str]]:
  """(facts per relation, templates, common vocabulary words) from a local LAMA directory.

  Args:
    lama_dir: holds `relations.jsonl`, `trex_original/<P>/<split>.jsonl` and
      `common_vocabs/<common_vocab>` (../shared/data/lama).
    split: 'test' (evaluation) or 'dev' (model selection).
    relations: relation ids (default: every relation with a file).
    common_vocab: OptiPrompt's main results use `common_vocab_cased.txt`.
  """
  root = pathlib.Path(lama_dir)
  words = recycling_vocab.read_word_list(str(root / 'common_vocabs' / common_vocab))
  templates = read_templates(str(root / 'relations.jsonl'))
  if relations is None:
    relations = sorted(p.parent.name for p in (root / 'trex_original').glob(f'*/{split}.jsonl'))
  allowed = set(words)
  facts = {r: load_facts(str(root / 'trex_original' / r / f'{split}.jsonl'), allowed)
           for r in relations}
  return facts, templates, words
