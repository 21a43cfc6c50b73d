r"""Wu et al. (2024) on T5: transfer LAMA soft prompts between models, score P@1 zero-shot.

    python -m prompt_recycling.lama_transfer \
      --gin_file=gin_configs/recycling/wu2024_lama_t5.gin \
      --gin.OUTPUT_DIR="'runs/lama_t5'" --gin.PROMPT_DIRS="{'Base': '...', 'Large': '...', ...}"

For each transfer (one or more source models -> a target), every recycler is
fit once on the models' token embeddings (each over its authors' rows:
`recycling.vocab.resolve`), applied to the source prompt of every relation
(PROMPT_DIR/<relation>.npy, [prompt_length, source_embed]) and the recycled
prompt is scored on the target with OptiPrompt's P@1 (`lama_probe`).
Multi-source transfers use the relative search only (the authors' loss
averaging). Next to them: the target's manual templates (the discrete
baseline) and, when the target has prompts of its own, those (the upper
bound). Written to OUTPUT_DIR: results.csv (transfer, recycler, relation,
p@1) and summary.md (mean P@1 over relations per transfer and recycler).
All numbers are zero-shot: no dev-set selection (see `recycle.py
--select_on_dev` for the authors' selection).
"""
import csv
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

from prompt_recycling import checkpoints
from prompt_recycling import lama_probe
from prompt_recycling import prompts
from prompt_recycling import vocabulary
from prompt_recycling.models import t5
from prompt_recycling.recycling import base
from prompt_recycling.recycling import relative
from prompt_recycling.recycling import vocab


def _prompt_files(prompt_dir: str, relations: Sequence[str]) -> Dict[str, str]:
  files = {r: str(pathlib.Path(prompt_dir) / f'{r}.npy') for r in relations}
  missing = [f for f in files.values() if not pathlib.Path(f).exists()]
  if missing:
    raise FileNotFoundError(f'{len(missing)} relation prompts are missing under {prompt_dir}, '
                            f'e.g. {missing[0]}; expected one <relation>.npy per relation.')
  return files


def run(*, models: Mapping[str, str], prompt_dirs: Mapping[str, str],
        transfers: Sequence[Mapping[str, Any]], recyclers: Mapping[str, Mapping[str, Any]],
        lama_dir: str, output_dir: str, relations: Optional[Sequence[str]] = None,
        split: str = 'test', common_vocab: str = 'common_vocab_cased.txt',
        vocabulary_path: str = 'prompt_recycling/assets/t5/sentencepiece.model',
        batch_size: int = 64, length: int = 64, seed: int = 0) -> List[Dict[str, Any]]:
  """Runs the transfers; see the module docstring.

  Args:
    models: name -> T5X checkpoint or HF directory.
    prompt_dirs: name -> directory of <relation>.npy prompts tuned on that model.
    transfers: [{'sources': [names], 'target': name}]; several sources use
      the relative search (the recycler named 'relative').
    recyclers: display name -> {'name', optional 'vocabulary', **hyperparameters}.
    lama_dir: the local LAMA files (`lama_probe.load_lama`).
    output_dir: where results.csv and summary.md go.
    relations: default every relation with a `split` file.
    split, common_vocab: facts and candidates (OptiPrompt: test, common_vocab_cased).
    vocabulary_path: the T5 SentencePiece model.
    batch_size, length: P@1 batches.
    seed: recycler fit key.

  Returns:
    One row per (transfer, recycler, relation).
  """
  tokenizer = vocabulary.get_vocabulary(vocabulary_path)
  facts, templates, words = lama_probe.load_lama(lama_dir, split, relations, common_vocab)
  kept, ids = lama_probe.candidates(words, tokenizer)
  relations = list(facts)
  files = {name: _prompt_files(d, relations) for name, d in prompt_dirs.items()}
  tables = {name: checkpoints.load_token_embedding(path) for name, path in models.items()}
  rows, loaded = [], {}

  def score(target: str, label: str, recycler: str, prompt_by_relation=None):
    if target not in loaded:
      loaded[target] = checkpoints.load_params(models[target])
    params, config = loaded[target]
    kwargs = ({'templates': templates} if prompt_by_relation is None
              else {'prompts': prompt_by_relation})
    result = lama_probe.precision_at_1(t5.T5(config), params, tokenizer, facts, kept, ids,
                                       batch_size=batch_size, length=length, **kwargs)
    for relation, value in result['per_relation'].items():
      rows.append({'transfer': label, 'recycler': recycler, 'relation': relation, 'p@1': value})

  targets = sorted({t['target'] for t in transfers})
  for target in targets:
    score(target, f'-> {target}', 'manual template')
    if target in files:
      score(target, f'{target} -> {target}', 'tuned on the target',
            {r: prompts.load_prompt(f) for r, f in files[target].items()})
  for transfer in transfers:
    sources, target = list(transfer['sources']), transfer['target']
    label = f"{' + '.join(sources)} -> {target}"
    for display, spec in recyclers.items():
      spec = dict(spec)
      name = spec.pop('name')
      if len(sources) > 1 and name != 'relative':
        continue  # Multi-source transfer is the relative search's.
      rows_spec = vocab.resolve(spec.pop('vocabulary', 'auto'), name)
      rec = base.get_recycler(name, **spec)
      fitted = []
      for source in sources:
        rows_ids = vocab.select(rows_spec, tables[source].shape[0])
        fitted.append(base.fit_tables(rec, tables[source], tables[target], rows_ids,
                                      jax.random.key(seed)))
      recycled = {}
      for relation in relations:
        source_prompts = [prompts.load_prompt(files[s][relation]) for s in sources]
        if len(sources) > 1:
          cfg = relative.SearchConfig(**{k: v for k, v in spec.items() if k != 'num_anchors'})
          recycled[relation] = np.asarray(relative.recycle_multi_source(fitted, source_prompts,
                                                                        cfg))
        else:
          recycled[relation] = np.asarray(rec.apply(fitted[0], source_prompts[0]))
      score(target, label, display, recycled)
  write(rows, pathlib.Path(output_dir))
  return rows


def write(rows: Sequence[Mapping[str, Any]], out: pathlib.Path) -> None:
  """results.csv (every row) and summary.md (mean P@1 over relations per transfer x recycler)."""
  out.mkdir(parents=True, exist_ok=True)
  with (out / 'results.csv').open('w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['transfer', 'recycler', 'relation', 'p@1'])
    writer.writeheader()
    writer.writerows(rows)
  groups: Dict[tuple, List[float]] = {}
  for r in rows:
    groups.setdefault((r['transfer'], r['recycler']), []).append(r['p@1'])
  lines = ['| transfer | recycler | P@1 (mean over relations) | relations |', '|---|---|---:|---:|']
  for (transfer, recycler), values in groups.items():
    lines.append(f'| {transfer} | {recycler} | {np.mean(values):.2f} | {len(values)} |')
  (out / 'summary.md').write_text('LAMA P@1 (zero-shot; OptiPrompt protocol for T5)\n\n'
                                  + '\n'.join(lines) + '\n')


if __name__ == '__main__':
  from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top
  gin_setup.run_configurable(run)
