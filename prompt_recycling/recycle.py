r"""Recycles a prompt from a source model to a target model (no task data, no training on the target).

    python -m prompt_recycling.recycle \
      --source_model=/ckpts/t5_1_1_lm100k_base/checkpoint_1100000 \
      --target_model=/ckpts/t5_1_1_lm100k_large/checkpoint_1100000 \
      --prompt_path=sst2.npy --recycler=v2v-lin --output_path=sst2_large.npy

A model path is a T5X checkpoint or a Hugging Face T5 directory; only the token
embedding is read. The output is a `[prompt_length, target_embed]` `.npy` that
`prompt_recycling.eval` loads with `gin_configs/prompts/from_file.gin`.
Options of a recycler go as `--recycler_args='{"steps": 2000}'` (JSON).
With `--report`, the fit on held-out token pairs and the target tokens nearest
to each recycled prompt vector are printed (and written beside the output).
"""
import json
import logging
import pathlib
from typing import Any, Dict, Optional

from absl import flags
import jax
import numpy as np

from prompt_recycling import checkpoints
from prompt_recycling import cli
from prompt_recycling import prompts
from prompt_recycling.recycling import base
from prompt_recycling.recycling import report
from prompt_recycling.recycling import vocab

_SOURCE = flags.DEFINE_string('source_model', None, 'Source T5X checkpoint or HF directory.', required=True)
_TARGET = flags.DEFINE_string('target_model', None, 'Target T5X checkpoint or HF directory.', required=True)
_PROMPT = flags.DEFINE_string('prompt_path', None, 'Source prompt, [prompt_length, source_embed] .npy '
                              "(the prompt-tuning repo's numpy export works too).", required=True)
_RECYCLER = flags.DEFINE_string('recycler', 'v2v-lin', 'Registered recycler name.')
_RECYCLER_ARGS = flags.DEFINE_string('recycler_args', '{}', 'JSON dict of recycler hyperparameters.')
_VOCAB = flags.DEFINE_string('vocabulary', 'all', "Rows to fit on: 'all', 'first:N[@OFFSET]' or the "
                             "recycling paper's filtered-vocabulary .json.")
_OUTPUT = flags.DEFINE_string('output_path', None, 'Where the recycled .npy goes.', required=True)
_SAVE_RECYCLER = flags.DEFINE_string('save_recycler', None, 'Optional .npz for the fitted recycler.')
_REPORT = flags.DEFINE_bool('report', False, 'Print held-out fit and nearest target tokens.')
_SEED = flags.DEFINE_integer('seed', 0, 'Fitting seed (v2v-nn, relative search).')


def recycle(source_model: str, target_model: str, prompt_path: str, recycler: str,
            output_path: str, *, recycler_args: Optional[Dict[str, Any]] = None,
            vocabulary: str = 'all', seed: int = 0, save_recycler: Optional[str] = None,
            with_report: bool = False) -> Dict[str, Any]:
  """Fits `recycler` on the two embedding tables, applies it, writes `output_path`.

  Every input is checked before anything is written: the prompt's width must
  be the source's embedding width, the vocabulary ids must be in both tables,
  and no array may hold NaN or Inf. The output is written atomically.

  Returns:
    {'output_path', 'shape', 'recycler'} and, with `with_report`, the report.
  """
  prompt = prompts.load_prompt(prompt_path)
  source = checkpoints.load_token_embedding(source_model)
  target = checkpoints.load_token_embedding(target_model)
  if prompt.shape[1] != source.shape[1]:
    raise ValueError(f'Prompt {prompt_path} has shape {prompt.shape}, but the source model '
                     f'{source_model} has embed {source.shape[1]}: expected '
                     f'[prompt_length, {source.shape[1]}].')
  if source.shape[0] != target.shape[0]:
    raise ValueError(f'The embedding tables have {source.shape[0]} ({source_model}) and '
                     f'{target.shape[0]} ({target_model}) rows; recycling aligns rows by token id, '
                     'so both models must share a vocabulary.')
  ids = vocab.select(vocabulary, source.shape[0])
  rec = base.get_recycler(recycler, **(recycler_args or {}))
  fitted = rec.fit(source[ids], target[ids], jax.random.key(seed))
  recycled = np.asarray(rec.apply(fitted, prompt), np.float32)
  if recycled.shape != (prompt.shape[0], target.shape[1]) or not np.all(np.isfinite(recycled)):
    raise FloatingPointError(f'{recycler} produced shape {recycled.shape} with non-finite values '
                             f'= {not np.all(np.isfinite(recycled))}; nothing was written.')
  prompts.save_prompt(recycled, output_path)
  if save_recycler:
    base.save(fitted, save_recycler)
  result = {'output_path': output_path, 'shape': list(recycled.shape), 'recycler': recycler}
  if with_report:
    result['report'] = {
        'held_out_fit': report.held_out_fit(rec, source[ids], target[ids], jax.random.key(seed)),
        'nearest_target_tokens': report.nearest_target_tokens(recycled, target, k=5)}
  return result


def main(argv):
  del argv
  try:
    recycler_args = json.loads(_RECYCLER_ARGS.value)
  except json.JSONDecodeError as error:
    raise ValueError(f'--recycler_args={_RECYCLER_ARGS.value!r} is not valid JSON ({error}); '
                     """expected an object, e.g. '{"steps": 2000}'.""") from error
  if not isinstance(recycler_args, dict):
    raise ValueError(f'--recycler_args={_RECYCLER_ARGS.value!r} must be a JSON object '
                     """(e.g. '{"steps": 2000}').""")
  result = recycle(_SOURCE.value, _TARGET.value, _PROMPT.value, _RECYCLER.value, _OUTPUT.value,
                   recycler_args=recycler_args, vocabulary=_VOCAB.value,
                   seed=_SEED.value, save_recycler=_SAVE_RECYCLER.value, with_report=_REPORT.value)
  if 'report' in result:
    path = pathlib.Path(_OUTPUT.value).with_suffix('.report.json')
    path.write_text(json.dumps(result['report'], indent=2, default=_jsonable))
    logging.info('Report written to %s', path)
  print(json.dumps(result, default=_jsonable))


def _jsonable(x):
  return np.asarray(x).tolist()


if __name__ == '__main__':
  cli.run(main)
