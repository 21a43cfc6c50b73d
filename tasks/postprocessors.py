"""Postprocessors: model output text (and its example) -> what the metrics compare.

SeqIO calls `postprocess_fn(text, example=example, is_target=...)` once for
the prediction and once for the target (`targets_pretokenized`) of every
example; so does `prompt_recycling.evaluation`. Targets may carry grouping
keys from the example (MultiRC's question, ReCoRD's query, LAMA's relation)
that the model's output does not have. Example values may be bytes (SeqIO's
evaluator) or str (our numpy iterator); both are accepted.
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


def as_text(value: Any) -> str:
  """bytes / numpy bytes / str -> str."""
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode('utf-8')
  return str(value)


def as_texts(values: Any) -> List[str]:
  """A list or array of strings (bytes or str) -> list of str."""
  return [as_text(v) for v in np.asarray(values, dtype=object).reshape(-1)]


def class_id(output: Any, *, label_names: Sequence[str],
             example: Optional[Mapping[str, Any]] = None, is_target: bool = False) -> int:
  """The index of `output` in `label_names`; -1 for anything else (an invalid prediction)."""
  del example, is_target
  output = as_text(output).strip()
  return list(label_names).index(output) if output in label_names else -1


def multirc(output: Any, *, example: Optional[Mapping[str, Any]] = None,
            is_target: bool = False) -> Dict[str, Any]:
  """{'value': 0/1/-1} and, for a target, 'group': its (paragraph, question) ids."""
  result = {'value': class_id(output, label_names=('False', 'True'))}
  if is_target:
    result['group'] = question_group(example)
  return result


def question_group(example: Mapping[str, Any]) -> Tuple[int, int]:
  """MultiRC's (paragraph idx, question idx) of an example, flat or nested keys."""
  if 'idx/question' in example:
    return int(example['idx/paragraph']), int(example['idx/question'])
  return int(example['idx']['paragraph']), int(example['idx']['question'])


def record(output: Any, *, example: Optional[Mapping[str, Any]] = None,
           is_target: bool = False) -> Any:
  """Prediction: the text. Target: {'answers': all gold answers, 'group': (passage, query) ids}."""
  if not is_target:
    return as_text(output)
  if 'idx/query' in example:
    group = (int(example['idx/passage']), int(example['idx/query']))
  else:
    group = (int(example['idx']['passage']), int(example['idx']['query']))
  return {'answers': as_texts(example['answers']), 'group': group}


def lama(output: Any, *, example: Optional[Mapping[str, Any]] = None,
         is_target: bool = False) -> Any:
  """Prediction: the text. Target: {'object': the gold object, 'relation': e.g. 'P19'}."""
  if not is_target:
    return as_text(output)
  return {'object': as_text(output), 'relation': as_text(example['predicate_id'])}


def string_to_float(output: Any, *, example: Optional[Mapping[str, Any]] = None,
                    is_target: bool = False, default: float = -1.0) -> float:
  """STS-B: the text as a number; `default` when it is not one (T5's convention)."""
  del example, is_target
  try:
    return float(as_text(output))
  except ValueError:
    return default


# Words ignored when comparing a generated referent with the candidate (T5's list).
_DETERMINERS = frozenset((
    'a', 'an', 'few', 'her', 'his', 'each', 'every', 'many', 'much', 'my', 'our', 'some', 'that',
    'the', 'their', 'these', 'this', 'those', 'which', 'whose', 'your'))


def _content_words(text: str) -> List[str]:
  return [w for w in text.strip().lower().split(' ') if w not in _DETERMINERS]


def wsc_simple(output: Any, *, example: Optional[Mapping[str, Any]] = None,
               is_target: bool = False) -> int:
  """WSC / DPR as generation: 1 if the generated referent names the candidate, else 0.

  Target: the example's label (is the candidate the pronoun's referent?).
  Prediction: 1 when, ignoring case and determiners, the generated words are
  a subset or a superset of the candidate's (and both or neither are
  possessive); -1 for an empty generation. T5's `wsc_simple` rule.
  """
  if is_target:
    return int(example['label'])
  prediction = _content_words(as_text(output))
  if not any(prediction):
    return -1
  referent = _content_words(as_text(example['targets_pretokenized']))
  prediction_text, referent_text = ' '.join(prediction), ' '.join(referent)
  if ("'" in prediction_text) != ("'" in referent_text):
    return 0  # 'Bob' does not name "Bob's hat".
  predicted, candidate = set(prediction), set(referent)
  return int(predicted <= candidate or candidate <= predicted)


def as_text_output(output: Any, *, example: Optional[Mapping[str, Any]] = None,
                   is_target: bool = False) -> str:
  """The text itself, stripped (DPR: the generated referent vs the right candidate)."""
  del example, is_target
  return as_text(output).strip()
