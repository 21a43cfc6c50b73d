r"""Decodes a task's inputs with a prompt; one JSON line per example.

    python -m prompt_recycling.infer \
      --gin_file=gin_configs/models/t5_1_1_lm100k_base_prompt.gin \
      --gin_file=gin_configs/runs/prompt_infer.gin \
      --gin.MIXTURE_OR_TASK_NAME="'glue_sst2_v2'" --gin.PROMPT_FILE="'/tmp/p.npy'" \
      --gin.INFER_OUTPUT="'/tmp/predictions.jsonl'"

Multi-host: every process runs the same command with `--multihost` (see
`gin_setup`); each reads the whole split and scores its rows of every batch,
so the result equals one process's.
"""
import json
import pathlib
from typing import Mapping, Optional

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


def infer(*, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int], batch_size: int,
          initial_checkpoint_path: Optional[str], prompt_method: prompts.PromptMethod,
          output_path: str, model_config: t5.T5Config = t5.T5Config(), split: str = 'validation',
          max_examples: Optional[int] = None, num_partitions: int = 1, seed: int = 0,
          vocabulary_path: Optional[str] = None, data_dir: Optional[str] = None) -> int:
  """Writes {'inputs', 'target', 'prediction'} per example to `output_path`; returns the count."""
  data.configure_tasks(vocabulary_path, data_dir)
  lengths = dict(task_feature_lengths)
  frozen = train_lib.load_frozen(initial_checkpoint_path, model_config, seed)
  steps = trainer.Steps(t5.T5(model_config), prompt_method, None,
                        partitioning.make_mesh(num_partitions))
  frozen = steps.put_frozen(frozen)
  params = steps.init_params(jax.random.key(seed), frozen)
  task = data.get_task(mixture_or_task_name)
  vocab = task.output_features['targets'].vocabulary
  examples = data.take(data.seqio_examples(mixture_or_task_name, split, lengths, shuffle=False,
                                           per_host=False),
                       max_examples)
  predictions = evaluation.greedy_predict(steps, params, frozen, examples, batch_size=batch_size,
                                          feature_lengths=lengths)
  if jax.process_index() == 0:
    path = pathlib.Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('w') as f:
      for ex, pred in zip(examples, predictions):
        f.write(json.dumps({
            'inputs': ex.get('inputs_pretokenized') or vocab.decode([int(t) for t in ex['inputs']]),
            'target': ex.get('targets_pretokenized') or vocab.decode([int(t) for t in ex['targets']]),
            'prediction': vocab.decode([int(t) for t in pred])}) + '\n')
  return len(examples)


def main(argv):
  del argv
  gin_setup.check_prompt_file_is_used()
  infer()  # pylint: disable=missing-kwoa  (gin supplies the arguments)


if __name__ == '__main__':
  infer = gin.configurable(infer)  # Registered before the gin files are parsed.
  gin_setup.run(main)
