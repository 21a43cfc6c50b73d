r"""Evaluates a prompt on a task with the task's metrics (rank classification or decoding).

    python -m prompt_recycling.eval \
      --gin_file=gin_configs/models/t5_1_1_lm100k_base_prompt.gin \
      --gin_file=gin_configs/runs/prompt_eval.gin \
      --gin.MIXTURE_OR_TASK_NAME="'glue_sst2_v2'" \
      --gin.PROMPT_FILE="'/tmp/sst2/numpy_checkpoints/checkpoint_30000/prompt.npy'"

Prints one JSON line of metrics (and writes it to EVAL_OUTPUT if set). A
local HF BERT / RoBERTa / ALBERT / GPT-2 directory as INITIAL_CHECKPOINT_PATH
scores OptiPrompt's LAMA P@1 of one relation (`optiprompt_<P>`, test split
by default; `evaluate_optiprompt`), or a SeqIO task's text through
`evaluate.template` / `evaluate.label_words` (a late prompt of
runs/lpt_finetune_roberta.gin: bind them as that file binds `train.`'s). A
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
from prompt_recycling import optiprompt_run
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import train as train_lib
from prompt_recycling import trainer
from prompt_recycling.models import t5


def evaluate(*, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
             batch_size: int, initial_checkpoint_path: Optional[str],
             prompt_method: prompts.PromptMethod, model_config: Any = t5.T5Config(),
             split: str = 'validation', mode: str = 'rank', max_examples: Optional[int] = None,
             num_partitions: int = 1, output_path: Optional[str] = None, seed: int = 0,
             vocabulary_path: Optional[str] = None,
             data_dir: Optional[str] = None, lama_dir: Optional[str] = None,
             common_vocab: str = 'common_vocab_cased_be_ro_al.txt',
             tokenizer_path: Optional[str] = None, template: Optional[str] = None,
             label_words: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
  """Metrics of `prompt_method`'s prompt (e.g. from a file) on the frozen model.

  A BERT-like / GPT-2 `initial_checkpoint_path` with an 'optiprompt_<P>' task
  gives OptiPrompt's P@1 (`evaluate_optiprompt`; `lama_dir`, `common_vocab`,
  `tokenizer_path` are its); with a SeqIO task, its text goes through
  `template` and `label_words` as in training (`train.family_example`).
  """
  if optiprompt_run.applies(initial_checkpoint_path, mixture_or_task_name):
    result = evaluate_optiprompt(
        task_name=mixture_or_task_name, checkpoint_path=initial_checkpoint_path,
        prompt_method=prompt_method, lama_dir=lama_dir, common_vocab=common_vocab,
        tokenizer_path=tokenizer_path, split=split, batch_size=batch_size,
        num_partitions=num_partitions, seed=seed)
    _report(result, output_path)
    return result
  data.configure_tasks(vocabulary_path, data_dir)
  frozen, model = train_lib.load_model(initial_checkpoint_path, model_config, seed)
  convert, tokenizer = train_lib.family_converter(model, initial_checkpoint_path, template,
                                                  label_words)
  mesh = partitioning.make_mesh(num_partitions)
  steps = trainer.Steps(model, prompt_method, None, mesh)
  frozen = steps.put_frozen(frozen)
  params = steps.init_params(jax.random.key(seed), frozen)
  evaluate_fn = evaluation.task_evaluator(
      mixture_or_task_name, split=split, feature_lengths=dict(task_feature_lengths), mode=mode,
      batch_size=batch_size, max_examples=max_examples,
      **train_lib.family_evaluator_args(convert, tokenizer, model, template, label_words))
  metrics = evaluate_fn(steps, params, frozen, 0)
  result = {'task': mixture_or_task_name, 'split': split, 'mode': mode, **metrics}
  _report(result, output_path)
  return result


def evaluate_optiprompt(*, task_name: str, checkpoint_path: str,
                        prompt_method: prompts.PromptMethod, lama_dir: Optional[str],
                        common_vocab: str, tokenizer_path: Optional[str], split: str,
                        batch_size: int, num_partitions: int = 1,
                        seed: int = 0) -> Dict[str, Any]:
  """P@1 (%) of the prompt on relation `optiprompt_<P>`'s `split` ('test' or 'dev')."""
  if lama_dir is None:
    raise ValueError(f'{checkpoint_path} is a BERT-like / GPT-2 checkpoint, scored on LAMA by '
                     "OptiPrompt's protocol: set evaluate.lama_dir "
                     '(gin_configs/runs/optiprompt_lama_eval.gin does).')
  split = {'validation': 'dev'}.get(split, split)
  relation = optiprompt_run.relation_of(task_name)
  frozen, family, name, tokenizer = optiprompt_run.load_model(checkpoint_path, tokenizer_path)
  steps = trainer.Steps(family, prompt_method, None, partitioning.make_mesh(num_partitions))
  frozen = steps.put_frozen(frozen)
  params = steps.init_params(jax.random.key(seed), frozen)
  num_vectors = params['prompt'].shape[0]
  vocab = optiprompt_run.read_common_vocab(lama_dir, common_vocab)
  rel = optiprompt_run.load_relation(lama_dir, relation, name, tokenizer, vocab, (split,),
                                     num_vectors)
  evaluate_fn = optiprompt_run.precision_evaluator(
      family, prompt_method, rel.splits[split], rel.candidates, batch_size=batch_size,
      lengths=rel.lengths, num_vectors=num_vectors)
  return {'task': task_name, 'split': split, **evaluate_fn(steps, params, frozen, 0)}


def _report(result: Mapping[str, Any], output_path: Optional[str]) -> None:
  """Prints `result` as one JSON line, writes it to `output_path` (process 0) and logs it."""
  line = json.dumps(result, sort_keys=True)
  print(line)
  if output_path and jax.process_index() == 0:
    pathlib.Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(output_path).write_text(line + '\n')
  logging.info('Eval %s', line)


def main(argv):
  del argv
  gin_setup.check_prompt_file_is_used()
  evaluate()  # pylint: disable=missing-kwoa  (gin supplies the arguments)


if __name__ == '__main__':
  evaluate = gin.configurable(evaluate)  # Registered before the gin files are parsed.
  gin_setup.run(main)
