r"""The recycling papers' experiment grid: recycle every prompt with every method, evaluate on the target.

    python -m prompt_recycling.experiment \
      --gin_file=gin_configs/recycling/lm100k_base_to_large_sst2.gin \
      --gin.OUTPUT_DIR="'/tmp/recycling'"

For each (source, target) pair the recyclers are fitted once on the two
models' token embeddings (over the chosen vocabulary), applied to every source
prompt (several seeds), and each recycled prompt is evaluated through the
target model on the task. Written to OUTPUT_DIR:

  results.csv    one row per (pair, recycler, prompt): the metric
  summary.md     per recycler and pair: mean with a 95% interval, the
                 recycling success rate (the share of recycled prompts that
                 beat the target's zero-shot accuracy, Lester et al. 2022) with
                 its Wilson interval, the zero-shot accuracy and the prompt
                 re-tuned on the target (upper bound) where given
                 (`results.py`)
  summary.png    per pair: each prompt as a dot, means and intervals, the
                 zero-shot and tuned-on-target references

A model is given as {'name', 'path', 'config'} where path is a T5X checkpoint or
a Hugging Face directory and config a `T5Config` (None: inferred from the files).
Targets are T5 models (the tasks are SeqIO's, T5-tokenized); a source may be of
another vocabulary or family (a HF BERT / RoBERTa / ALBERT / GPT-2 / mT5
directory) when both specs name a 'tokenizer' (a tokenizer directory or a
SentencePiece .model): rows are then paired through anchor words
(`recycling.vocab.select_pairs`, 'auto' meaning 'words:pieces').
"""
import concurrent.futures
import pathlib
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar

import jax
import numpy as np
import tqdm

from prompt_recycling import checkpoints
from prompt_recycling import data
from prompt_recycling import evaluation
from prompt_recycling import family_checkpoints
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import results as results_lib
from prompt_recycling import trainer
from prompt_recycling.models import family as families
from prompt_recycling.models import t5
from prompt_recycling.recycling import base as recycling_base
from prompt_recycling.recycling import vocab as recycling_vocab


TUNED = results_lib.TUNED
Result = results_lib.Result
_T = TypeVar('_T')


def map_in_threads(fn: Callable[[Any], _T], items: Sequence[Any], workers: int) -> List[_T]:
  """`[fn(x) for x in items]`, computed `workers` at a time in threads, in order.

  For independent runs of small models: XLA splits their small ops poorly over
  CPU cores (an evaluation pass of the demo's models is faster on one thread
  than on two; BENCHMARKS.md), so runs side by side use the cores instead. JAX
  releases the GIL while it computes. One process only: the processes of a
  multi-host job must issue their collectives in the same order.
  """
  if workers > 1 and jax.process_count() > 1:
    raise ValueError(f'workers={workers}: runs side by side are for one process; a '
                     f'{jax.process_count()}-process job runs them one at a time (workers=1).')
  if workers <= 1 or len(items) <= 1:
    return [fn(x) for x in items]
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  try:
    return list(pool.map(fn, items))
  finally:  # On an error (or Ctrl-C) start nothing more; let the running ones finish.
    pool.shutdown(wait=True, cancel_futures=True)


def _prompt_name(path: str) -> str:
  """`run/numpy_checkpoints/checkpoint_N/prompt.npy` -> 'run@N'; otherwise the file name."""
  parts = pathlib.Path(path).parts
  if 'numpy_checkpoints' in parts:
    i = parts.index('numpy_checkpoints')
    return f"{parts[i - 1]}@{parts[i + 1].replace('checkpoint_', '')}"
  return pathlib.Path(path).name


def load_model(spec: Mapping[str, Any]):
  """(config, params) of a model spec; the config is checked against the files."""
  params, found = checkpoints.load_params(spec['path'])
  config = spec.get('config') or found or checkpoints.config_from_params(params)
  checkpoints.validate_params(params, config, spec['path'])
  return config, params


def select_rows(source_emb: np.ndarray, target_emb: np.ndarray, vocabulary: str,
                source_spec: Optional[Mapping[str, Any]] = None,
                target_spec: Optional[Mapping[str, Any]] = None):
  """(source ids, target ids) [num_tokens] of the row pairs the recyclers fit on.

  One vocabulary: the same ids in both tables, `vocabulary` a
  `recycling.vocab.select` spec (already resolved from 'auto' for the
  recycler: `recycling.vocab.resolve`). Specs naming a 'tokenizer' each:
  anchor-word pairs (`recycling.vocab.select_pairs`).
  """
  source_spec, target_spec = source_spec or {}, target_spec or {}
  if source_spec.get('tokenizer') or target_spec.get('tokenizer'):
    missing = [s.get('name', '?') for s in (source_spec, target_spec) if not s.get('tokenizer')]
    if missing:
      raise ValueError(f'Pairing vocabularies through anchor words needs a tokenizer in every '
                       f'model spec; {missing} have none.')
    from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
    pairs = recycling_vocab.select_pairs(
        vocabulary, [family_tokenizers.load_any(s['tokenizer']) for s in (source_spec, target_spec)],
        [source_emb.shape[0], target_emb.shape[0]],
        [source_spec.get('path', 'source'), target_spec.get('path', 'target')])
    return pairs[0], pairs[1]
  if source_emb.shape[0] != target_emb.shape[0]:
    raise ValueError(f'Source and target embedding tables have {source_emb.shape[0]} and '
                     f'{target_emb.shape[0]} rows ({source_spec.get("path", "source")}, '
                     f'{target_spec.get("path", "target")}): different vocabularies, which '
                     "token ids cannot pair. Give both model specs a 'tokenizer' (a tokenizer "
                     'directory or SentencePiece .model) to pair rows through anchor words.')
  ids = recycling_vocab.select(vocabulary, source_emb.shape[0])
  return ids, ids


class TargetModel:
  """A target model on the mesh, with one compiled evaluator for every prompt of one length."""

  def __init__(self, spec, task: str, split: str, mode: str, lengths, batch_size,
               max_examples, mesh):
    self.config, params = load_model(spec)
    self.model = t5.T5(self.config)
    self.evaluate_fn = evaluation.task_evaluator(task, split=split, feature_lengths=lengths,
                                                 mode=mode, batch_size=batch_size,
                                                 max_examples=max_examples)
    self.mesh = mesh
    self.baseline_steps = trainer.Steps(self.model, prompts.no_prompt(), None, mesh)
    self.frozen = self.baseline_steps.put_frozen(params)
    self.embedding = np.asarray(families.embeddings(params))
    self._steps = {}
    self._lock = threading.Lock()  # `evaluate` may be called from several threads.

  def baseline(self) -> float:
    return self.evaluate_fn(self.baseline_steps, {}, self.frozen, 0)

  def evaluate(self, prompt: np.ndarray) -> Dict[str, float]:
    if prompt.shape[1] != self.config.emb_dim:
      raise ValueError(f'Prompt of shape {prompt.shape} does not fit a target of embed '
                       f'{self.config.emb_dim}.')
    length = prompt.shape[0]
    with self._lock:
      if length not in self._steps:
        self._steps[length] = trainer.Steps(self.model, prompts.prompt_tuning(length), None,
                                            self.mesh)
      steps = self._steps[length]
    params = trainer.put_on_mesh({'prompt': prompt.astype(np.float32)}, steps.params_shardings)
    return self.evaluate_fn(steps, params, self.frozen, 0)


def run(*, sources: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
        prompt_files: Mapping[str, Sequence[str]], recyclers: Mapping[str, Mapping[str, Any]],
        task: str, output_dir: str, metric: str = 'accuracy', split: str = 'validation',
        mode: str = 'rank', task_feature_lengths: Mapping[str, int] = None,
        batch_size: int = 32, max_examples: Optional[int] = None, vocabulary: str = 'auto',
        retuned_prompt_files: Optional[Mapping[str, Sequence[str]]] = None,
        num_partitions: int = 1, seed: int = 0, vocabulary_path: Optional[str] = None,
        data_dir: Optional[str] = None, progress: bool = True, workers: int = 1
        ) -> List[Result]:
  """Runs the grid and writes the results (see the module docstring).

  Args:
    sources: model specs prompts were tuned on.
    targets: model specs to recycle to.
    prompt_files: source name -> `.npy` prompts tuned on it (seeds, inits).
    recyclers: display name -> {'name': registry name, optional 'vocabulary'
      (a spec for this recycler only), **hyperparameters}.
    task: the SeqIO task the prompts were tuned for.
    output_dir: where results.csv, summary.md and summary.png go.
    metric: the task metric reported.
    split, mode, task_feature_lengths, batch_size, max_examples: evaluation.
    vocabulary: rows the recyclers fit on, a `recycling.vocab.select` spec;
      'auto' (default): each recycler's authors' (`recycling.vocab.resolve`).
    retuned_prompt_files: target name -> prompts tuned directly on the target
      (the upper bound), evaluated alongside.
    num_partitions: model-parallel mesh axis size.
    seed: recycler fitting seed.
    vocabulary_path, data_dir: where the tasks find their SentencePiece model
      and local data files (`data.configure_tasks`; default: as already
      configured, e.g. by $PROMPT_RECYCLING_VOCAB, and TFDS).
    progress: show a progress bar over the grid.
    workers: recycle and evaluate this many prompts at a time, in threads
      (`map_in_threads`; the results do not depend on it).

  Returns:
    One `Result` per evaluated prompt; the target's zero-shot row has recycler
    'baseline', and prompts tuned directly on a target have `TUNED`.
  """
  data.configure_tasks(vocabulary_path, data_dir)
  lengths = dict(task_feature_lengths or {'inputs': 512, 'targets': 8})
  mesh = partitioning.make_mesh(num_partitions)
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  for name, files in prompt_files.items():
    for f in files:
      prompts.load_prompt(f)  # Fail before any fitting on a missing or malformed prompt.
  results: List[Result] = []
  total = len(recyclers) * sum(len(prompt_files.get(s['name'], ()))
                               for s in sources for t in targets if s['name'] != t['name'])
  bar = tqdm.tqdm(total=total, desc='recycle+eval', unit='prompt', disable=not progress)
  for target_spec in targets:
    target = TargetModel(target_spec, task, split, mode, lengths, batch_size, max_examples, mesh)
    scores = target.baseline()
    results.append(Result('-', target_spec['name'], results_lib.BASELINE, '-', scores[metric],
                          scores.get('num_examples')))
    # (source name, display, prompt file, recycler, its fitted params) per evaluation.
    jobs = [(target_spec['name'], TUNED, f, None, None)
            for f in (retuned_prompt_files or {}).get(target_spec['name'], ())]
    for source_spec in sources:
      if source_spec['name'] == target_spec['name']:
        continue
      source_emb = family_checkpoints.load_token_embedding(source_spec['path'])
      cross = bool(source_spec.get('tokenizer') or target_spec.get('tokenizer'))
      for display, spec in recyclers.items():
        spec = dict(spec)
        name = spec.pop('name')
        rows = spec.pop('vocabulary', vocabulary)
        rows = recycling_vocab.resolve('words:pieces' if cross and rows == 'auto' else rows, name)
        ids, target_ids = select_rows(source_emb, target.embedding, rows, source_spec, target_spec)
        recycler = recycling_base.get_recycler(name, **spec)
        fitted = recycling_base.fit_tables(recycler, source_emb, target.embedding, ids,
                                           jax.random.key(seed), target_ids)
        jobs += [(source_spec['name'], display, f, recycler, fitted)
                 for f in prompt_files.get(source_spec['name'], ())]

    def evaluate(job, target=target, target_name=target_spec['name']):
      source, display, f, recycler, fitted = job
      prompt = prompts.load_prompt(f)
      if recycler is not None:
        prompt = np.asarray(recycler.apply(fitted, prompt))
      scores = target.evaluate(prompt)
      if recycler is not None:
        bar.update(1)
        bar.set_postfix(last=f'{display}:{scores[metric]:.1f}')
      return Result(source, target_name, display, _prompt_name(f), scores[metric],
                    scores.get('num_examples'))

    results += map_in_threads(evaluate, jobs, workers)
  bar.close()
  results_lib.write(results, out, metric)
  return results


if __name__ == '__main__':
  from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top
  gin_setup.run_configurable(run)
