r"""Wu et al. (2024): transfer LAMA soft prompts between models, score P@1 zero-shot.

    python -m prompt_recycling.lama_transfer \
      --gin_file=gin_configs/recycling/wu2024_lama_families.gin \
      --gin.OUTPUT_DIR="'runs/lama_families'" \
      --gin.PROMPT_DIRS="{'bert-base-cased': 'p/bert', 'roberta-base': 'p/roberta', ...}" \
      --gin.BERT_BASE_CASED_DIR="'/data/bert-base-cased'" ...   # one *_DIR per model

(`wu2024_lama_t5.gin`: the same between T5 1.1 models.) For each transfer
(one or more source models -> a target), every recycler is fit once on the
models' token embeddings, applied to the source prompt of every relation
(PROMPT_DIR/<relation>.npy, [prompt_length, source_embed]) and the recycled
prompt is scored on the target with OptiPrompt's P@1. Models are T5X / HF T5
checkpoints (P@1 by `lama_probe`, the T5 adaptation) or local HF BERT /
RoBERTa / ALBERT / GPT-2 directories (`optiprompt_run`, the authors'
inputs). Rows of models of different tokenizers are paired through anchor
words every model of the transfer holds as one token (`recycling.vocab.
select_pairs`: `vocabulary`, 'auto' meaning 'words:pieces'; the authors' list
is 'words:.../common_vocab_cased_be_ro_al.txt'); T5 models of one vocabulary
pair rows by id (each recycler's authors' rows, `recycling.vocab.resolve`).
Multi-source transfers use the relative search only (the authors' loss
averaging). Next to them: the target's manual templates (the discrete
baseline) and, when the target has prompts of its own, those (directly
tuned, the upper bound).

Written to OUTPUT_DIR as the recycling grid writes (`results.py`):
results.csv (source, target, recycler, relation, P@1, facts), summary.md and
summary.json (per transfer and recycler: the mean P@1 over relations, LAMA's
macro average, with a Student's t 95% interval over the relations) and
summary.png. The manual templates appear as '<target> -> <target> | manual
template', and their macro average is each target's 'zero-shot' reference.
All numbers are zero-shot: no dev-set selection (see `recycle.py
--select_on_dev` for the authors' selection).
"""
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

from prompt_recycling import checkpoints
from prompt_recycling import family_checkpoints
from prompt_recycling import lama_probe
from prompt_recycling import optiprompt
from prompt_recycling import optiprompt_run
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import results as results_lib
from prompt_recycling import trainer
from prompt_recycling import vocabulary as t5_vocabulary
from prompt_recycling.models import t5
from prompt_recycling.recycling import base
from prompt_recycling.recycling import relative
from prompt_recycling.recycling import vocab

MANUAL = 'manual template'


def _prompt_files(prompt_dir: str, relations: Sequence[str]) -> Dict[str, str]:
  files = {r: str(pathlib.Path(prompt_dir) / f'{r}.npy') for r in relations}
  missing = [f for f in files.values() if not pathlib.Path(f).exists()]
  if missing:
    raise FileNotFoundError(f'{len(missing)} relation prompts are missing under {prompt_dir}, '
                            f'e.g. {missing[0]}; expected one <relation>.npy per relation.')
  return files


class _T5Scorer:
  """P@1 per relation of a T5 model (`lama_probe`: the T5 adaptation of OptiPrompt)."""

  def __init__(self, path: str, tokenizer: Any, lama_dir: str, split: str,
               relations: Optional[Sequence[str]], common_vocab: str, batch_size: int,
               length: int):
    self.params, self.config = checkpoints.load_params(path)
    self.tokenizer, self.batch_size, self.length = tokenizer, batch_size, length
    self.facts, self.templates, words = lama_probe.load_lama(lama_dir, split, relations,
                                                             common_vocab)
    self.kept, self.ids = lama_probe.candidates(words, tokenizer)

  def __call__(self, prompt_by_relation=None):
    kwargs = ({'templates': self.templates} if prompt_by_relation is None
              else {'prompts': prompt_by_relation})
    result = lama_probe.precision_at_1(t5.T5(self.config), self.params, self.tokenizer,
                                       self.facts, self.kept, self.ids,
                                       batch_size=self.batch_size, length=self.length, **kwargs)
    return {r: (p, result['num_facts'][r]) for r, p in result['per_relation'].items()}


class _FamilyScorer:
  """P@1 per relation of a BERT / RoBERTa / ALBERT / GPT-2 directory (`optiprompt_run`)."""

  def __init__(self, path: str, tokenizer_path: Optional[str], lama_dir: str, split: str,
               relations: Sequence[str], common_vocab: str, batch_size: int, length: int,
               num_vectors: int):
    frozen, self.family, name, tokenizer = optiprompt_run.load_model(path, tokenizer_path)
    mesh = partitioning.make_mesh()
    self.soft = prompts.prompt_tuning(num_vectors, prompts.random_normal())  # Params given.
    self.steps = trainer.Steps(self.family, self.soft, None, mesh)
    self.frozen = self.steps.put_frozen(frozen)
    self.correct_soft = optiprompt_run.correct_fn(self.family, self.soft)
    self.correct_manual = optiprompt_run.correct_fn(self.family, prompts.no_prompt())
    templates = lama_probe.read_templates(str(pathlib.Path(lama_dir) / 'relations.jsonl'))
    vocab = optiprompt_run.read_common_vocab(lama_dir, common_vocab)
    candidates = optiprompt.candidate_ids(vocab, tokenizer, name)
    self.soft_data, self.manual_data = {}, {}
    for relation in relations:
      self.soft_data[relation] = optiprompt_run.load_relation(
          lama_dir, relation, name, tokenizer, vocab, (split,), num_vectors,
          candidates=candidates)
      self.manual_data[relation] = optiprompt_run.load_relation(
          lama_dir, relation, name, tokenizer, vocab, (split,), 0, templates[relation],
          candidates)
    config = self.family.config
    most = config.max_length() if hasattr(config, 'max_length') else config.max_positions
    self.split, self.batch_size, self.length = split, batch_size, min(length, most)
    self.num_vectors = num_vectors

  def __call__(self, prompt_by_relation=None):
    out = {}
    for relation, soft in self.soft_data.items():
      rel = soft if prompt_by_relation is not None else self.manual_data[relation]
      if prompt_by_relation is None:
        correct, params, vectors = self.correct_manual, {}, 0
      else:
        correct, vectors = self.correct_soft, self.num_vectors
        params = {'prompt': np.asarray(prompt_by_relation[relation], np.float32)}
      # Padded to a multiple of 16 (few compiled shapes), within the model's positions.
      longest = rel.lengths['inputs']
      lengths = {'inputs': max(longest, min(-(-longest // 16) * 16, self.length)), 'targets': 1}
      result = optiprompt_run.precision(
          correct, self.steps, params, self.frozen, rel.splits[self.split], rel.candidates,
          batch_size=self.batch_size, lengths=lengths, num_vectors=vectors)
      out[relation] = (result['p@1'], result['num_examples'])
    return out


def run(*, models: Mapping[str, str], prompt_dirs: Mapping[str, str],
        transfers: Sequence[Mapping[str, Any]], recyclers: Mapping[str, Mapping[str, Any]],
        lama_dir: str, output_dir: str, relations: Optional[Sequence[str]] = None,
        split: str = 'test', common_vocab: str = 'common_vocab_cased.txt',
        vocabulary_path: str = 'prompt_recycling/assets/t5/sentencepiece.model',
        tokenizers: Optional[Mapping[str, str]] = None, vocabulary: str = 'auto',
        num_vectors: int = 5, batch_size: int = 64, length: int = 64,
        seed: int = 0) -> List[Dict[str, Any]]:
  """Runs the transfers; see the module docstring.

  Args:
    models: name -> T5X checkpoint, HF T5 directory or HF BERT / RoBERTa /
      ALBERT / GPT-2 directory.
    prompt_dirs: name -> directory of <relation>.npy prompts tuned on that model.
    transfers: [{'sources': [names], 'target': name}]; several sources use
      the relative search (the recycler named 'relative').
    recyclers: display name -> {'name', optional 'vocabulary', **hyperparameters}.
    lama_dir: the local LAMA files (`relations.jsonl`, `trex_original/<P>/`,
      `common_vocabs/`).
    output_dir: where results.csv, summary.md, summary.json and summary.png go.
    relations: default every relation with a `split` file.
    split, common_vocab: facts and candidates (OptiPrompt: test,
      common_vocab_cased; Wu et al. across families: common_vocab_cased_be_ro_al).
    vocabulary_path: the T5 SentencePiece model (T5 models' tokenizer).
    tokenizers: name -> tokenizer directory, where not the model's directory.
    vocabulary: anchor words pairing models of different tokenizers
      ('words:PATH' or 'words:pieces'; 'auto' = 'words:pieces'), unless a
      recycler names its own 'vocabulary'.
    num_vectors: prompt rows (OptiPrompt: 5).
    batch_size, length: P@1 batches (T5: every batch's length; the other families pad
      each relation's queries to a multiple of 16, at most `length` unless longer).
    seed: recycler fit key.

  Returns:
    One row {'transfer', 'recycler', 'relation', 'p@1'} per (transfer,
    recycler, relation), the manual templates and tuned prompts included.
  """
  root = pathlib.Path(lama_dir)
  if relations is None:
    relations = sorted(p.parent.name for p in (root / 'trex_original').glob(f'*/{split}.jsonl'))
  relations = list(relations)
  t5_tokenizer = None
  is_family = {name: family_checkpoints.is_family_dir(path) for name, path in models.items()}
  tokenizer_paths = {name: (tokenizers or {}).get(name) or (path if is_family[name]
                                                            else vocabulary_path)
                     for name, path in models.items()}
  files = {name: _prompt_files(d, relations) for name, d in prompt_dirs.items()}
  tables = {name: family_checkpoints.load_token_embedding(path) for name, path in models.items()}
  scorers, rows, results, loaded_tokenizers, anchor_pairs = {}, [], [], {}, {}

  def pairs_of(spec, names):
    """[len(names), num_anchors] rows of the anchor words every model in `names` holds."""
    from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
    key = (spec, tuple(names))
    if key not in anchor_pairs:
      for n in names:
        if tokenizer_paths[n] not in loaded_tokenizers:
          loaded_tokenizers[tokenizer_paths[n]] = family_tokenizers.load_any(tokenizer_paths[n])
      anchor_pairs[key] = vocab.select_pairs(
          spec, [loaded_tokenizers[tokenizer_paths[n]] for n in names],
          [tables[n].shape[0] for n in names], [models[n] for n in names])
    return anchor_pairs[key]

  def scorer(target):
    nonlocal t5_tokenizer
    if target not in scorers:
      if is_family[target]:
        scorers[target] = _FamilyScorer(models[target], (tokenizers or {}).get(target), lama_dir,
                                         split, relations, common_vocab, batch_size, length,
                                         num_vectors)
      else:
        t5_tokenizer = t5_tokenizer or t5_vocabulary.get_vocabulary(vocabulary_path)
        scorers[target] = _T5Scorer(models[target], t5_tokenizer, lama_dir, split, relations,
                                    common_vocab, batch_size, length)
    return scorers[target]

  def score(sources, target, recycler, prompt_by_relation=None):
    """Scores the prompts (None: the manual templates, no source) on `target`."""
    label = f"{' + '.join(sources)} -> {target}" if sources else f'-> {target}'
    source = ' + '.join(sources) or target  # A target's own rows: not a transfer panel.
    for relation, (value, n) in scorer(target)(prompt_by_relation).items():
      rows.append({'transfer': label, 'recycler': recycler, 'relation': relation, 'p@1': value})
      results.append(results_lib.Result(source, target, recycler, relation, value, n))

  for target in sorted({t['target'] for t in transfers}):
    first = len(results)
    score([], target, MANUAL)
    manual = [r.metric for r in results[first:]]
    # The target's zero-shot reference: the manual templates' macro average.
    results.append(results_lib.Result('-', target, results_lib.BASELINE, MANUAL,
                                      float(np.mean(manual))))
    if target in files:
      score([target], target, results_lib.TUNED,
            {r: prompts.load_prompt(f) for r, f in files[target].items()})
  for transfer in transfers:
    sources, target = list(transfer['sources']), transfer['target']
    names = sources + [target]
    cross = any(is_family[n] for n in names) or len({tokenizer_paths[n] for n in names}) > 1
    for display, spec in recyclers.items():
      spec = dict(spec)
      name = spec.pop('name')
      if len(sources) > 1 and name != 'relative':
        continue  # Multi-source transfer is the relative search's.
      rows_spec = spec.pop('vocabulary', vocabulary)
      rows_spec = vocab.resolve('words:pieces' if cross and rows_spec == 'auto' else rows_spec,
                                name)
      if cross:
        pairs = pairs_of(rows_spec, names)
      rec = base.get_recycler(name, **spec)
      fitted = []
      for i, source in enumerate(sources):
        if cross:
          ids, target_ids = pairs[i], pairs[-1]
        else:
          ids = target_ids = vocab.select(rows_spec, tables[source].shape[0])
        fitted.append(base.fit_tables(rec, tables[source], tables[target], ids,
                                      jax.random.key(seed), target_ids))
      recycled = {}
      for relation in relations:
        source_prompts = [prompts.load_prompt(files[s][relation]) for s in sources]
        if len(sources) > 1:
          cfg = relative.SearchConfig(**{k: v for k, v in spec.items() if k != 'num_anchors'})
          recycled[relation] = np.asarray(relative.recycle_multi_source(fitted, source_prompts,
                                                                        cfg))
        else:
          recycled[relation] = np.asarray(rec.apply(fitted[0], source_prompts[0]))
      score(sources, target, display, recycled)
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  results_lib.write(results, out, 'p@1')
  return rows


if __name__ == '__main__':
  from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top
  gin_setup.run_configurable(run)
