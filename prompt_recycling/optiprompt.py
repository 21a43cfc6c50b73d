"""OptiPrompt's LAMA inputs for BERT, RoBERTa, ALBERT and GPT-2 (Zhong et al. 2021; Wu et al. 2024).

Pure functions from facts to model inputs and back to Precision@1, following
the authors' released code (princeton-nlp/OptiPrompt `code/`, and for GPT-2
MANGA-UOFA/PTfer `gpt_code/`), which ran transformers 3.0.2's tokenizers:

  masked LMs: `[X] [V1] .. [V5] [MASK] .`, the object predicted at [MASK];
  GPT-2:      `[X] [V1] .. [V5]`, the object predicted as the next token.

Tokenisation, as those scripts produce it:

  bert, albert:  [CLS] + tokenize(w) for each whitespace word w of the subject
                 + [V1..V5] + [MASK] + tokenize('.') + [SEP]
  roberta:       <s> + tokenize(subject) + [V1..V5] + <mask> + tokenize(' .') + </s>
                 (the subject opens the text, so it has no leading 'Ġ'; `<mask>`
                 strips the space on its left only, so the full stop is 'Ġ.')
  gpt2:          tokenize(subject) + [V1..V5]

`tests/testdata/optiprompt` holds the ids those scripts give under 3.0.2 for
75 real facts; ours equal them. (Today's transformers would not: its
`add_tokens` no longer strips the spaces around `[V1]`, so re-running the
scripts now puts a 'Ġ' token before every [V] in RoBERTa and GPT-2 inputs.)

The [V] slots hold a placeholder id (the tokenizer's UNK; any non-padding id
serves) whose embeddings the model overwrites with the soft prompt
(`models/layers.put_prompt`): the authors add [V1]..[V5] to the vocabulary and
train only their embedding rows, which gives the same inputs. The object is
the single token of ' ' + object (`family_tokenizers.word_ids_fn`).

Facts (`filter_facts`) keep the first of each distinct (subject, object) pair
and only objects in the common vocabulary, in file order. P@1 takes the argmax
over the common vocabulary's single-token ids only (`candidate_ids`), per
relation; the LAMA score is the unweighted mean over relations (OptiPrompt's
`evaluate` returns it, naming it `micro`).
"""
import json
import pathlib
from typing import Any, Dict, Iterable, List, NamedTuple, Sequence, Union

import numpy as np

from prompt_recycling import family_tokenizers

NUM_VECTORS = 5
MASKED_FAMILIES = ('bert', 'roberta', 'albert')


class Fact(NamedTuple):
  subject: str
  object: str


class Query(NamedTuple):
  """One fact's model input.

  tokens: ids, special tokens included; prompt slots hold a placeholder.
  prompt_positions: the `num_vectors` slot indices in `tokens`.
  target_position: where the object is read: the [MASK] (masked LMs) or the
    last prompt slot, whose logits predict the next token (GPT-2).
  label: the object's token id.
  """
  tokens: List[int]
  prompt_positions: List[int]
  target_position: int
  label: int


def read_facts(path: Union[str, pathlib.Path]) -> List[Fact]:
  """Facts of a LAMA-style .jsonl: keys `sub_label`/`obj_label` (LAMA, ParaRel) or `sub`/`obj`."""
  facts = []
  with open(path, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = json.loads(line)
      try:
        subject = row['sub_label'] if 'sub_label' in row else row['sub']
        obj = row['obj_label'] if 'obj_label' in row else row['obj']
      except KeyError:
        raise ValueError(f'{path}:{n} has neither sub_label/obj_label nor sub/obj keys: '
                         f'{sorted(row)}.') from None
      facts.append(Fact(subject, obj))
  return facts


def read_vocab(path: Union[str, pathlib.Path]) -> List[str]:
  """A common-vocabulary file: one word a line, surrounding spaces stripped (as OptiPrompt)."""
  with open(path, encoding='utf-8') as f:
    return [w.strip() for w in f if w.strip()]


def filter_facts(facts: Iterable[Fact], vocab: Sequence[str]) -> List[Fact]:
  """Distinct (subject, object) pairs whose object is in `vocab`, first occurrence, in order."""
  allowed, seen, kept = set(vocab), set(), []
  for fact in facts:
    if fact in seen or fact.object not in allowed:
      continue
    seen.add(fact)
    kept.append(fact)
  return kept


def _ids(tokenizer: Any, text: str) -> List[int]:
  return list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)))


def build_query(fact: Fact, family: str, tokenizer: Any, num_vectors: int = NUM_VECTORS) -> Query:
  """The OptiPrompt input of `fact` for a `family` model with `tokenizer` (module docstring).

  Raises:
    ValueError: the object is not exactly one non-UNK token of this tokenizer.
  """
  label_ids = family_tokenizers.word_ids_fn(tokenizer)(fact.object)
  unk = family_tokenizers.unk_id(tokenizer)
  if len(label_ids) != 1 or (family in MASKED_FAMILIES and label_ids[0] == unk):
    raise ValueError(f'Object {fact.object!r} is {len(label_ids)} tokens {label_ids} for this '
                     f'{family} tokenizer; OptiPrompt keeps single-token objects only (filter by '
                     'the common vocabulary).')
  subject = fact.subject.strip()
  if family == 'gpt2':
    text = _ids(tokenizer, subject)
    slots_at = len(text)
    tokens = text + [unk] * num_vectors
    target = len(tokens) - 1
  elif family in MASKED_FAMILIES:
    if family == 'roberta':
      text, stop = _ids(tokenizer, subject), _ids(tokenizer, ' .')
    else:  # The scripts tokenize BERT and ALBERT inputs word by word.
      text = [i for word in subject.split() for i in _ids(tokenizer, word)]
      stop = _ids(tokenizer, '.')
    slots_at = 1 + len(text)
    tokens = ([tokenizer.cls_token_id] + text + [unk] * num_vectors + [tokenizer.mask_token_id]
              + stop + [tokenizer.sep_token_id])
    target = slots_at + num_vectors
  else:
    raise ValueError(f'Family {family!r} is not one of {MASKED_FAMILIES + ("gpt2",)}.')
  return Query(tokens, list(range(slots_at, slots_at + num_vectors)), target, label_ids[0])


def build_manual_query(fact: Fact, template: str, family: str, tokenizer: Any) -> Query:
  """The input of `fact` under a relation's manual template ('[X] was born in [Y] .'), no [V]s.

  The discrete baseline of Wu et al. (2024): [X] is the subject, [Y] the
  [MASK], tokenised as `build_query` tokenises its text (word by word for
  BERT and ALBERT; RoBERTa's `<mask>` takes the space on its left). GPT-2
  reads the template up to [Y] and predicts the next token (named deviation
  `manual_template_cut_at_y`: a template that continues after [Y] loses its
  end, as a left-to-right model cannot read it before the object).

  Raises:
    ValueError: the object is not exactly one non-UNK token, or the template
      lacks [X] or [Y].
  """
  if '[X]' not in template or '[Y]' not in template:
    raise ValueError(f'Manual template {template!r} needs both [X] and [Y].')
  label = build_query(fact, family, tokenizer, num_vectors=0).label  # Checks the object.
  text = template.replace('[X]', fact.subject.strip())
  left, right = text.split('[Y]', 1)
  if family == 'gpt2':
    tokens = _ids(tokenizer, left.rstrip())
    return Query(tokens, [], len(tokens) - 1, label)
  if family == 'roberta':
    head, tail = _ids(tokenizer, left.rstrip()), _ids(tokenizer, right)
  else:
    head = [i for word in left.split() for i in _ids(tokenizer, word)]
    tail = [i for word in right.split() for i in _ids(tokenizer, word)]
  tokens = [tokenizer.cls_token_id] + head + [tokenizer.mask_token_id] + tail + [
      tokenizer.sep_token_id]
  return Query(tokens, [], 1 + len(head), label)


def batch(queries: Sequence[Query], pad_id: int, length: int = 0) -> Dict[str, np.ndarray]:
  """Right-pads queries into arrays.

  Args:
    queries: from `build_query`, all with the same number of prompt slots.
    pad_id: the model's padding id (GPT-2 has none; the authors pad with
      <|endoftext|>, and `mask` marks the padding either way).
    length: pad to this length (default: the longest query).

  Returns:
    tokens [batch, length] int32, mask [batch, length] bool, prompt_positions
    [batch, num_vectors] int32, target_positions [batch] int32, labels [batch] int32.
  """
  length = max([length] + [len(q.tokens) for q in queries])
  tokens = np.full((len(queries), length), pad_id, np.int32)
  mask = np.zeros((len(queries), length), bool)
  for i, q in enumerate(queries):
    tokens[i, :len(q.tokens)] = q.tokens
    mask[i, :len(q.tokens)] = True
  return {'tokens': tokens, 'mask': mask,
          'prompt_positions': np.asarray([q.prompt_positions for q in queries], np.int32),
          'target_positions': np.asarray([q.target_position for q in queries], np.int32),
          'labels': np.asarray([q.label for q in queries], np.int32)}


def candidate_ids(vocab: Sequence[str], tokenizer: Any, family: str) -> np.ndarray:
  """Ids of the vocabulary words that are one token of ' ' + word, in vocabulary order.

  Masked LMs also drop words that are UNK; the GPT-2 script checks the length only.
  """
  word_ids = family_tokenizers.word_ids_fn(tokenizer)
  unk = family_tokenizers.unk_id(tokenizer)
  out = []
  for word in vocab:
    ids = word_ids(word)
    if len(ids) == 1 and (family == 'gpt2' or ids[0] != unk):
      out.append(ids[0])
  return np.asarray(out, np.int32)


def correct_at_1(logits: np.ndarray, target_positions: np.ndarray, labels: np.ndarray,
                 candidates: np.ndarray) -> np.ndarray:
  """Whether the top candidate at each target is the label.

  Args:
    logits: [batch, length, vocab].
    target_positions: [batch] int.
    labels: [batch] int.
    candidates: [num_candidates] int, the ids the argmax ranges over.

  Returns:
    [batch] bool.
  """
  at_target = np.take_along_axis(np.asarray(logits), np.asarray(target_positions)[:, None, None],
                                 axis=1)[:, 0]  # [batch, vocab]
  best = candidates[np.argmax(at_target[:, candidates], axis=-1)]
  return best == np.asarray(labels)


def macro_precision(correct_by_relation: Dict[str, Sequence[bool]]) -> float:
  """Mean over relations of each relation's P@1 (LAMA's headline number)."""
  if not correct_by_relation:
    raise ValueError('No relations to average.')
  return float(np.mean([np.mean(c) for c in correct_by_relation.values()]))
