r"""Evaluates a prompt on a task with the task's metrics (rank classification or decoding).

    python -m prompt_recycling.eval \
      --gin_file=gin_configs/models/t5_1_1_lm100k_base_prompt.gin \
      --gin_file=gin_configs/runs/prompt_eval.gin \
      --gin.MIXTURE_OR_TASK_NAME="'glue_sst2_v2'" \
      --gin.PROMPT_FILE="'/tmp/sst2/numpy_checkpoints/checkpoint_30000/prompt.npy'"

Prints one JSON line of metrics (and writes it to EVAL_OUTPUT if set). A
recycled prompt (`prompt_recycling.recycle --output_path=...`) loads the same way.

Multi-host: every process runs the same command with `--multihost` (see
`gin_setup`); each reads the whole split and scores its rows of every batch,
so the result equals one process's.
"""
import json
import logging
import pathlib
from typing import Any, Dict, Mapping, Optional

import gin
import jax

from prompt_recycling import data
from prompt_recycling import evaluation
from prompt_recycling import gin_setup
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import train as train_lib
from prompt_recycling import trainer
from prompt_recycling.models import t5


def evaluate(*, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
             batch_size: int, initial_checkpoint_path: Optional[str],
             prompt_method: prompts.PromptMethod, model_config: t5.T5Config = t5.T5Config(),
             split: str = 'validation', mode: str = 'rank', max_examples: Optional[int] = None,
             num_partitions: int = 1, output_path: Optional[str] = None, seed: int = 0,
             vocabulary_path: Optional[str] = None,
             data_dir: Optional[str] = None) -> Dict[str, Any]:
  """Metrics of `prompt_method`'s prompt (e.g. from a file) on the frozen model."""
  data.configure_tasks(vocabulary_path, data_dir)
  frozen = train_lib.load_frozen(initial_checkpoint_path, model_config, seed)
  mesh = partitioning.make_mesh(num_partitions)
  steps = trainer.Steps(t5.T5(model_config), prompt_method, None, mesh)
  frozen = steps.put_frozen(frozen)
  params = steps.init_params(jax.random.key(seed), frozen)
  evaluate_fn = evaluation.task_evaluator(
      mixture_or_task_name, split=split, feature_lengths=dict(task_feature_lengths), mode=mode,
      batch_size=batch_size, max_examples=max_examples)
  metrics = evaluate_fn(steps, params, frozen, 0)
  result = {'task': mixture_or_task_name, 'split': split, 'mode': mode, **metrics}
  line = json.dumps(result, sort_keys=True)
  print(line)
  if output_path and jax.process_index() == 0:
    pathlib.Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(output_path).write_text(line + '\n')
  logging.info('Eval %s', line)
  return result


def main(argv):
  del argv
  gin_setup.check_prompt_file_is_used()
  evaluate()  # pylint: disable=missing-kwoa  (gin supplies the arguments)


if __name__ == '__main__':
  evaluate = gin.configurable(evaluate)  # Registered before the gin files are parsed.
  gin_setup.run(main)
