r"""Recycles a prompt from source model(s) to a target model (no task data, no training on the target).

    python -m prompt_recycling.recycle \
      --source_model=/ckpts/t5_1_1_lm100k_base/checkpoint_1100000 \
      --target_model=/ckpts/t5_1_1_lm100k_large/checkpoint_1100000 \
      --prompt_path=sst2.npy --recycler=v2v-lin --output_path=sst2_large.npy

A model path is a T5X checkpoint or a Hugging Face T5, BERT, RoBERTa, ALBERT or
GPT-2 directory; only the token embedding is read. The output is a `[prompt_length, target_embed]` `.npy` that
`prompt_recycling.eval` loads with `gin_configs/prompts/from_file.gin`.
Options of a recycler go as `--recycler_args='{"steps": 2000}'` (JSON).

The fit rows default to the authors' (`--vocabulary=auto`: positions
1000..4999 of the English filter for Lester et al.'s recyclers; single-token
whole words for the relative search; see `recycling.vocab`).

Multi-source (Wu et al., `relative` only): repeat `--source_model` and
`--prompt_path` in the same order; the search averages the loss against each.

Models of different tokenizers (RoBERTa -> GPT-2, T5 1.1 -> mT5): give each
model's tokenizer, `--source_tokenizer` (one per source) and
`--target_tokenizer` (a tokenizer directory or a SentencePiece .model file).
Rows are then paired through anchor words that are one token in every model
(`recycling.vocab.select_pairs`): `--vocabulary=words:PATH` (Wu et al.'s word
list) or `words:pieces` (the default then: the words all tokenizers share).
Tables of different sizes without tokenizers are refused.

Dev selection (opt-in, Wu et al.'s model selection, so *not* zero-shot): with
`--select_on_dev --dev_task=TASK --dev_output_path=best.npy`, the relative
search's snapshots (every `snapshot_every` steps, 50 by default) are scored on
the target with the task's dev split and the best is written to
`dev_output_path`; `output_path` keeps the zero-shot (final) prompt, and the
printed JSON reports the two apart ('zero_shot', 'dev_selected').

With `--report`, the fit on held-out token pairs and the target tokens nearest
to each recycled prompt vector are printed (and written beside the output).
"""
import json
import logging
import pathlib
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from absl import flags
import jax
import numpy as np

from prompt_recycling import cli
from prompt_recycling import family_checkpoints
from prompt_recycling import prompts
from prompt_recycling.recycling import base
from prompt_recycling.recycling import relative
from prompt_recycling.recycling import report
from prompt_recycling.recycling import vocab

_SOURCE = flags.DEFINE_multi_string(
    'source_model', None, 'Source T5X checkpoint or HF directory; repeat for multi-source '
    '(relative only), in the order of --prompt_path.', required=True)
_TARGET = flags.DEFINE_string('target_model', None, 'Target T5X checkpoint or HF directory.', required=True)
_PROMPT = flags.DEFINE_multi_string(
    'prompt_path', None, 'Source prompt, [prompt_length, source_embed] .npy (the prompt-tuning '
    "repo's numpy export works too); one per --source_model.", required=True)
_RECYCLER = flags.DEFINE_string('recycler', 'v2v-lin', 'Registered recycler name.')
_RECYCLER_ARGS = flags.DEFINE_string('recycler_args', '{}', 'JSON dict of recycler hyperparameters.')
_VOCAB = flags.DEFINE_string(
    'vocabulary', 'auto', "Rows to fit on: 'auto' (the authors' per recycler), "
    "'filtered:PATH@OFFSET:NUM', 'words:PATH', 'words:pieces', 'all', 'first:N[@OFFSET]' or a "
    'filtered-vocabulary .json (recycling.vocab.select).')
_OUTPUT = flags.DEFINE_string('output_path', None, 'Where the recycled .npy goes.', required=True)
_SOURCE_TOKENIZER = flags.DEFINE_multi_string(
    'source_tokenizer', None, "Each source's tokenizer (directory, or SentencePiece .model), in "
    'the order of --source_model: pairs rows of different vocabularies through anchor words.')
_TARGET_TOKENIZER = flags.DEFINE_string(
    'target_tokenizer', None, "The target's tokenizer (directory, or SentencePiece .model).")
_SAVE_RECYCLER = flags.DEFINE_string('save_recycler', None, 'Optional .npz for the fitted recycler '
                                     '(single source).')
_REPORT = flags.DEFINE_bool('report', False, 'Print held-out fit and nearest target tokens.')
_SEED = flags.DEFINE_integer('seed', 0, 'Fitting seed (v2v-nn, relative search).')
_SELECT = flags.DEFINE_bool('select_on_dev', False, 'Also keep the relative search snapshot that '
                            'scores best on the dev split (not zero-shot; reported apart).')
_DEV_TASK = flags.DEFINE_string('dev_task', None, 'SeqIO task scored for --select_on_dev.')
_DEV_SPLIT = flags.DEFINE_string('dev_split', 'validation', 'Split scored for --select_on_dev.')
_DEV_METRIC = flags.DEFINE_string('dev_metric', 'accuracy', 'Metric maximised by --select_on_dev.')
_DEV_MAX = flags.DEFINE_integer('dev_max_examples', None, 'Score a seeded subset of the split.')
_DEV_OUTPUT = flags.DEFINE_string('dev_output_path', None, 'Where the dev-selected .npy goes.')
_DEV_LENGTHS = flags.DEFINE_string('dev_feature_lengths', '{"inputs": 512, "targets": 8}',
                                   'JSON task feature lengths for --select_on_dev.')
_DEV_VOCAB = flags.DEFINE_string('task_vocabulary_path', None, 'SentencePiece model of the tasks '
                                 '(default: as configured, e.g. $PROMPT_RECYCLING_VOCAB).')
_DATA_DIR = flags.DEFINE_string('dev_data_dir', None, 'Local data of --dev_task (data.configure_tasks).')


def select_on_dev(snapshots, evaluate: Callable[[np.ndarray], float],
                  every: int) -> Dict[str, Any]:
  """The snapshot with the best dev score (the first on ties, as the authors' strict '>').

  Args:
    snapshots: [num_snapshots, prompt_length, target_embed], z at steps
      every, 2 every, ...
    evaluate: prompt -> dev metric (higher is better).
    every: steps between snapshots.

  Returns:
    {'step', 'dev_metric', 'index', 'dev_curve': [(step, metric), ...]}.
  """
  snapshots = np.asarray(snapshots)
  if snapshots.ndim != 3 or not len(snapshots):
    raise ValueError(f'Expected [num_snapshots >= 1, prompt_length, embed] snapshots; found shape '
                     f'{snapshots.shape} (is snapshot_every > 0 and <= steps?).')
  scores = [float(evaluate(s)) for s in snapshots]
  best = int(np.argmax(scores))
  return {'step': (best + 1) * every, 'dev_metric': scores[best], 'index': best,
          'dev_curve': [((i + 1) * every, v) for i, v in enumerate(scores)]}


def _as_list(x) -> list:
  return [x] if isinstance(x, str) else list(x)


def recycle(source_models: Union[str, Sequence[str]], target_model: str,
            prompt_paths: Union[str, Sequence[str]], recycler: str, output_path: str, *,
            recycler_args: Optional[Dict[str, Any]] = None, vocabulary: str = 'auto',
            seed: int = 0, save_recycler: Optional[str] = None, with_report: bool = False,
            dev: Optional[Mapping[str, Any]] = None,
            source_tokenizers: Optional[Union[str, Sequence[str]]] = None,
            target_tokenizer: Optional[str] = None) -> Dict[str, Any]:
  """Fits `recycler` on the embedding tables, applies it, writes `output_path`.

  Every input is checked before anything is written: the prompt's width must
  be the source's embedding width, the vocabulary ids must be in both tables,
  and no array may hold NaN or Inf. The output is written atomically.

  Args:
    source_models: one path, or one per source prompt (multi-source: relative).
    target_model: the target's path.
    prompt_paths: one `.npy` per source model.
    recycler: registered name.
    output_path: the zero-shot recycled prompt.
    recycler_args: hyperparameters.
    vocabulary: `vocab.select` spec, or 'auto' (`vocab.default_vocabulary`).
    seed: fit key.
    save_recycler: optional `.npz` of the fitted params (single source).
    with_report: add held-out fit and nearest target tokens.
    dev: opt-in dev selection (relative): {'evaluate': prompt -> metric, or
      'task' (+ 'split', 'metric', 'max_examples', 'feature_lengths',
      'batch_size') to score through the target model; 'output_path'}.
    source_tokenizers, target_tokenizer: models of different tokenizers:
      each one's tokenizer path (`family_tokenizers.load_any`); rows are then
      paired through anchor words (module docstring).

  Returns:
    {'output_path', 'shape', 'recycler', 'vocabulary', 'zero_shot': True}, with
    `with_report` the report, and with `dev` a separate 'dev_selected' entry.
  """
  source_models, prompt_paths = _as_list(source_models), _as_list(prompt_paths)
  if len(source_models) != len(prompt_paths):
    raise ValueError(f'Got {len(source_models)} source models and {len(prompt_paths)} prompts; '
                     'expected one --prompt_path per --source_model, in the same order.')
  if len(source_models) > 1 and recycler != 'relative':
    raise ValueError(f'Multi-source transfer is the relative search of Wu et al.; got '
                     f'{len(source_models)} sources for {recycler!r} (use --recycler=relative).')
  if dev is not None and recycler != 'relative':
    raise ValueError(f'Dev selection picks among the relative search\'s snapshots; {recycler!r} '
                     'has none.')
  cross = source_tokenizers is not None or target_tokenizer is not None
  if cross:
    source_tokenizers = _as_list(source_tokenizers or [])
    if len(source_tokenizers) != len(source_models) or target_tokenizer is None:
      raise ValueError(f'Pairing vocabularies through anchor words needs every model\'s '
                       f'tokenizer: got {len(source_tokenizers)} --source_tokenizer for '
                       f'{len(source_models)} --source_model, and --target_tokenizer='
                       f'{target_tokenizer}.')
  target = family_checkpoints.load_token_embedding(target_model)
  spec = vocab.resolve('words:pieces' if cross and vocabulary == 'auto' else vocabulary, recycler)
  rec = base.get_recycler(recycler, **(recycler_args or {}))
  sources = [family_checkpoints.load_token_embedding(m) for m in source_models]
  if cross:
    from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
    pairs = vocab.select_pairs(
        spec, [family_tokenizers.load_any(t) for t in source_tokenizers + [target_tokenizer]],
        [s.shape[0] for s in sources] + [target.shape[0]], source_models + [target_model])
  fitted, loaded = [], []
  for i, (source_model, prompt_path) in enumerate(zip(source_models, prompt_paths)):
    prompt = prompts.load_prompt(prompt_path)
    source = sources[i]
    if prompt.shape[1] != source.shape[1]:
      raise ValueError(f'Prompt {prompt_path} has shape {prompt.shape}, but the source model '
                       f'{source_model} has embed {source.shape[1]}: expected '
                       f'[prompt_length, {source.shape[1]}].')
    if cross:
      ids, target_ids = pairs[i], pairs[-1]
    elif source.shape[0] != target.shape[0]:
      raise ValueError(f'The embedding tables have {source.shape[0]} ({source_model}) and '
                       f'{target.shape[0]} ({target_model}) rows; aligning rows by token id '
                       'needs models that share a vocabulary. For different vocabularies give '
                       'each model\'s tokenizer (--source_tokenizer, --target_tokenizer: a '
                       'tokenizer directory or SentencePiece .model) to pair rows through anchor '
                       'words.')
    else:
      ids = target_ids = vocab.select(spec, source.shape[0])
    fitted.append(base.fit_tables(rec, source, target, ids, jax.random.key(seed), target_ids))
    loaded.append((prompt, source, ids, target_ids))
  snapshots = None
  if recycler == 'relative':
    cfg = relative.SearchConfig(**{k: v for k, v in (recycler_args or {}).items()
                                   if k not in ('num_anchors', 'mesh')})
    z, _, snapshots = relative.search_multi_source(fitted, [p for p, *_ in loaded], cfg)
    recycled = np.asarray(z, np.float32)
  else:
    recycled = np.asarray(rec.apply(fitted[0], loaded[0][0]), np.float32)
  prompt = loaded[0][0]
  if recycled.shape != (prompt.shape[0], target.shape[1]) or not np.all(np.isfinite(recycled)):
    raise FloatingPointError(f'{recycler} produced shape {recycled.shape} with non-finite values '
                             f'= {not np.all(np.isfinite(recycled))}; nothing was written.')
  prompts.save_prompt(recycled, output_path)
  if save_recycler:
    base.save(fitted[0], save_recycler)
  result = {'output_path': output_path, 'shape': list(recycled.shape), 'recycler': recycler,
            'vocabulary': spec, 'sources': source_models, 'zero_shot': True}
  if cross:
    result['num_anchors'] = int(pairs.shape[1])
  if with_report:
    _, source, ids, target_ids = loaded[0]
    result['report'] = {
        'held_out_fit': report.held_out_fit(rec, source[ids], target[target_ids],
                                            jax.random.key(seed)),
        'nearest_target_tokens': report.nearest_target_tokens(recycled, target, k=5)}
  if dev is not None:
    evaluate = dev.get('evaluate') or _target_evaluator(target_model, dev)
    chosen = select_on_dev(snapshots, evaluate, cfg.snapshot_every)
    best = np.asarray(snapshots[chosen['index']], np.float32)
    if dev.get('output_path'):
      prompts.save_prompt(best, dev['output_path'])
    result['dev_selected'] = {'zero_shot': False, 'output_path': dev.get('output_path'),
                              **{k: v for k, v in chosen.items() if k != 'index'}}
  return result


def _target_evaluator(target_model: str, dev: Mapping[str, Any]) -> Callable[[np.ndarray], float]:
  """prompt -> the task metric on the target's dev split (experiment's evaluator)."""
  from prompt_recycling import experiment  # pylint: disable=g-import-not-at-top
  from prompt_recycling import partitioning  # pylint: disable=g-import-not-at-top
  if not dev.get('task'):
    raise ValueError("Dev selection needs dev['task'] (--dev_task) or dev['evaluate'].")
  target = experiment.TargetModel(
      {'path': target_model}, dev['task'], dev.get('split', 'validation'), 'rank',
      dict(dev.get('feature_lengths') or {'inputs': 512, 'targets': 8}),
      dev.get('batch_size', 32), dev.get('max_examples'), partitioning.make_mesh(1))
  metric = dev.get('metric', 'accuracy')
  return lambda prompt: target.evaluate(np.asarray(prompt, np.float32))[metric]


def _json_flag(name: str, value: str) -> dict:
  """A flag's JSON object, or a one-line error naming the flag."""
  try:
    parsed = json.loads(value)
  except json.JSONDecodeError as error:
    raise ValueError(f'--{name}={value!r} is not valid JSON ({error}); expected an object, '
                     """e.g. '{"steps": 2000}'.""") from error
  if not isinstance(parsed, dict):
    raise ValueError(f"--{name}={value!r} must be a JSON object (e.g. '{{\"steps\": 2000}}').")
  return parsed


def main(argv):
  del argv
  dev = None
  if _SELECT.value:
    if not _DEV_TASK.value:
      raise ValueError('--select_on_dev needs --dev_task.')
    from prompt_recycling import data  # pylint: disable=g-import-not-at-top
    data.configure_tasks(_DEV_VOCAB.value, _DATA_DIR.value)
    dev = {'task': _DEV_TASK.value, 'split': _DEV_SPLIT.value, 'metric': _DEV_METRIC.value,
           'max_examples': _DEV_MAX.value, 'output_path': _DEV_OUTPUT.value,
           'feature_lengths': _json_flag('dev_feature_lengths', _DEV_LENGTHS.value)}
  result = recycle(_SOURCE.value, _TARGET.value, _PROMPT.value, _RECYCLER.value, _OUTPUT.value,
                   recycler_args=_json_flag('recycler_args', _RECYCLER_ARGS.value),
                   vocabulary=_VOCAB.value, seed=_SEED.value, save_recycler=_SAVE_RECYCLER.value,
                   with_report=_REPORT.value, dev=dev, source_tokenizers=_SOURCE_TOKENIZER.value,
                   target_tokenizer=_TARGET_TOKENIZER.value)
  if 'report' in result:
    path = pathlib.Path(_OUTPUT.value).with_suffix('.report.json')
    path.write_text(json.dumps(result['report'], indent=2, default=_jsonable))
    logging.info('Report written to %s', path)
  print(json.dumps(result, default=_jsonable))


def _jsonable(x):
  return np.asarray(x).tolist()


if __name__ == '__main__':
  cli.run(main)
