r"""The recycling paper's protocol as one command: tune on the source, recycle, evaluate on the targets.

    python -m prompt_recycling.protocol --gin_file=gin_configs/recycling/protocol_mini.gin \
      --gin.OUTPUT_DIR="'/tmp/protocol'" --gin.MODEL_C="'...'"

1. Tune prompts on the source model with several seeds and initialisations.
2. Tune one prompt directly on each target (the upper bound recycling is
   measured against) and evaluate each source prompt on the source.
3. Recycle every source prompt to every target with every recycler and
   evaluate it there, next to the target's zero-shot baseline
   (`experiment.run`), writing results.csv, summary.md and summary.png.

Training is the ordinary prompt-tuning loop (`train.train`): each run has its
own MODEL_DIR under OUTPUT_DIR/runs, so an interrupted protocol resumes where
it stopped when rerun.
"""
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence

import tqdm

from prompt_recycling import data
from prompt_recycling import experiment
from prompt_recycling import prompts
from prompt_recycling import train as train_lib
from prompt_recycling import trainer

INITS = ('class_labels', 'sampled_vocab', 'random')


def _initializer(name: str, task: str, population: int) -> prompts.Initializer:
  if name == 'class_labels':
    vocab = data.get_task(task).output_features['targets'].vocabulary
    import tasks  # pylint: disable=g-import-not-at-top
    words = tasks.label_words(task)
    if not words:
      raise ValueError(f'Task {task!r} has no label words for class-label initialisation.')
    return prompts.class_labels([list(vocab.encode(w)) for w in words],
                                prompts.sampled_vocab(population))
  if name == 'sampled_vocab':
    return prompts.sampled_vocab(population)
  if name == 'random':
    return prompts.random_uniform()
  raise ValueError(f'Unknown prompt initialisation {name!r}; expected one of {INITS}.')


def tune(model: Mapping[str, Any], task: str, model_dir: pathlib.Path, *, init: str, seed: int,
         prompt_length: int, train_steps: int, batch_size: int,
         feature_lengths: Mapping[str, int], learning_rate: float,
         population: int = 5000, progress: bool = True) -> str:
  """Tunes one prompt with `train.train`; returns the final numpy export's path."""
  config, _ = experiment.load_model(model)
  method = prompts.prompt_tuning(prompt_length, _initializer(init, task, population))
  path = model_dir / 'numpy_checkpoints' / f'checkpoint_{train_steps}' / 'prompt.npy'
  if not path.exists():
    train_lib.train(model_dir=str(model_dir), mixture_or_task_name=task,
                    task_feature_lengths=feature_lengths, batch_size=batch_size,
                    train_steps=train_steps, initial_checkpoint_path=model['path'],
                    prompt_method=method, model_config=config,
                    optimizer=trainer.adafactor(learning_rate=learning_rate), seed=seed,
                    shuffle_seed=seed, save_every=train_steps, keep=1, log_every=25,
                    progress=progress)
  return str(path)


def run(*, models: Mapping[str, Mapping[str, Any]], source: str, targets: Sequence[str],
        task: str, output_dir: str, recyclers: Mapping[str, Mapping[str, Any]],
        seeds: Sequence[int] = (0, 1, 2), inits: Sequence[str] = ('class_labels',),
        prompt_length: int = 100, train_steps: int = 3000, batch_size: int = 32,
        task_feature_lengths: Optional[Mapping[str, int]] = None, learning_rate: float = 0.3,
        retune_targets: bool = True, metric: str = 'accuracy', eval_split: str = 'validation',
        eval_mode: str = 'rank', max_eval_examples: Optional[int] = None,
        vocabulary: str = 'auto', population: int = 5000, vocabulary_path: Optional[str] = None,
        data_dir: Optional[str] = None, progress: bool = True,
        workers: int = 1, eval_batch_size: Optional[int] = None) -> List[experiment.Result]:
  """Runs the whole protocol; see the module docstring.

  Args:
    models: name -> {'path': T5X or HF checkpoint, 'config': optional T5Config}.
    source: the model prompts are tuned on.
    targets: the models they are recycled to.
    task: the SeqIO task.
    output_dir: where runs/ and the results go.
    recyclers: display name -> {'name': registry name, **hyperparameters}.
    seeds, inits: one source prompt per (init, seed).
    prompt_length, train_steps, batch_size, task_feature_lengths, learning_rate:
      prompt tuning (the paper: 100 tokens, lr 0.3, batch 32).
    eval_batch_size: rows per evaluation batch (default: batch_size).
    retune_targets: also tune a prompt on each target (the upper bound).
    metric, eval_split, eval_mode, max_eval_examples: evaluation (a seeded random
      subset of the split when max_eval_examples is set; `data.sample`).
    vocabulary: rows the recyclers fit on (`recycling.vocab.select` spec).
    population: sampled-vocabulary initialisation draws from this many ids.
    vocabulary_path, data_dir: where the tasks find their SentencePiece model
      and local data files (see `data.configure_tasks`).
    progress: progress bars.
    workers: tune, recycle and evaluate this many prompts at a time, in
      threads (`experiment.map_in_threads`; the results do not depend on it).

  Returns:
    The experiment's results.
  """
  data.configure_tasks(vocabulary_path, data_dir)
  lengths = dict(task_feature_lengths or {'inputs': 512, 'targets': 8})
  out = pathlib.Path(output_dir)
  common = dict(prompt_length=prompt_length, train_steps=train_steps, batch_size=batch_size,
                feature_lengths=lengths, learning_rate=learning_rate, population=population,
                progress=progress and workers <= 1)
  # (model, run directory, init, seed) per prompt: the source's, then (retune_targets) one
  # on each target, the upper bound, evaluated with the source's own on the model tuned on.
  runs = [(source, out / 'runs' / f'{source}_{init}_{seed}', init, seed)
          for init in inits for seed in seeds]
  if retune_targets:
    runs += [(target, out / 'runs' / f'{target}_{inits[0]}_retuned', inits[0], seeds[0])
             for target in targets]
  bar = tqdm.tqdm(total=len(runs), desc='tune', unit='prompt',
                  disable=not progress or workers <= 1)

  def tune_one(job):
    name, model_dir, init, seed = job
    path = tune(models[name], task, model_dir, init=init, seed=seed, **common)
    bar.update(1)
    return name, path

  retuned: Dict[str, List[str]] = {}
  for name, path in experiment.map_in_threads(tune_one, runs, workers):
    retuned.setdefault(name, []).append(path)
  bar.close()
  source_prompts = retuned.get(source, [])
  return experiment.run(
      sources=[{'name': source, **models[source]}],
      targets=[{'name': t, **models[t]} for t in [source, *targets]],
      prompt_files={source: source_prompts}, recyclers=recyclers, task=task,
      output_dir=str(out), metric=metric, split=eval_split, mode=eval_mode,
      task_feature_lengths=lengths, batch_size=eval_batch_size or batch_size,
      max_examples=max_eval_examples,
      vocabulary=vocabulary, retuned_prompt_files=retuned, progress=progress, workers=workers)


if __name__ == '__main__':
  from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top
  gin_setup.run_configurable(run)
