r"""Tunes a prompt on a frozen T5 (or BERT / RoBERTa / ALBERT / GPT-2), t5x-style.

    python -m prompt_recycling.train \
      --gin_file=gin_configs/models/t5_1_1_base_prompt.gin \
      --gin_file=gin_configs/runs/prompt_finetune.gin \
      --gin.MODEL_DIR="'/tmp/sst2_prompt'" \
      --gin.MIXTURE_OR_TASK_NAME="'glue_sst2_v2'" \
      --gin.INITIAL_CHECKPOINT_PATH="'gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_base/checkpoint_1100000'"

A local Hugging Face BERT / RoBERTa / ALBERT / GPT-2 directory as
INITIAL_CHECKPOINT_PATH runs OptiPrompt's LAMA protocol on one relation
(`optiprompt_run`; gin_configs/runs/optiprompt_lama.gin):

    python -m prompt_recycling.train \
      --gin_file=gin_configs/models/hf/roberta_base.gin \
      --gin_file=gin_configs/runs/optiprompt_lama.gin \
      --gin.ROBERTA_BASE_DIR="'/data/roberta-base'" \
      --gin.MODEL_DIR="'/tmp/roberta_P17'" --gin.MIXTURE_OR_TASK_NAME="'optiprompt_P17'"

Rerunning the same command after a preemption resumes from the latest
checkpoint in MODEL_DIR. Multi-host (Cloud TPU pods): every host runs the same
command with `--multihost` (see `gin_setup`).
"""
import logging
import re
from typing import Any, Mapping, Optional

import gin
import jax

from prompt_recycling import checkpoints
from prompt_recycling import cli
from prompt_recycling import data
from prompt_recycling import evaluation
from prompt_recycling import family_checkpoints
from prompt_recycling import gin_setup
from prompt_recycling import optiprompt_run
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import run_dir
from prompt_recycling import trainer
from prompt_recycling.models import t5


def load_frozen(initial_checkpoint_path: Optional[str], config: t5.T5Config, seed: int):
  """The frozen model: a T5X or HF checkpoint checked against `config`, or random init."""
  if initial_checkpoint_path is None:
    logging.warning('No INITIAL_CHECKPOINT_PATH: the frozen model is randomly initialised '
                    '(seed %d). Fine for tests and benchmarks, meaningless for results.', seed)
    model = t5.T5(config)
    return jax.device_get(trainer.random_frozen(model, jax.random.key(seed), None))
  params, _ = checkpoints.load_params(initial_checkpoint_path)
  checkpoints.validate_params(params, config, initial_checkpoint_path)
  return params


def train(*, model_dir: str, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
          batch_size: int, train_steps: Optional[int], initial_checkpoint_path: Optional[str],
          prompt_method: prompts.PromptMethod, model_config: t5.T5Config = t5.T5Config(),
          optimizer: Any = None, num_partitions: int = 1, seed: int = 0, shuffle_seed: int = 0,
          save_every: int = 1000, keep: Optional[int] = 3, log_every: int = 10,
          accum_steps: int = 1, z_loss: float = 1e-4, eval_every: Optional[int] = None,
          eval_split: str = 'validation', eval_mode: str = 'rank',
          eval_examples: Optional[int] = None, best_metric: Optional[str] = None,
          train_split: str = 'train', report_split: Optional[str] = 'validation',
          checkpoint_step: int = 0, enable_dropout: Optional[bool] = None,
          vocabulary_path: Optional[str] = None, data_dir: Optional[str] = None,
          progress: bool = True, train_epochs: Optional[int] = None,
          evals_per_epoch: Optional[int] = None, lama_dir: Optional[str] = None,
          common_vocab: str = 'common_vocab_cased_be_ro_al.txt',
          tokenizer_path: Optional[str] = None):
  """Prompt-tunes `model_config` on a task; see gin_configs/runs/prompt_finetune.gin.

  A BERT / RoBERTa / ALBERT / GPT-2 directory as `initial_checkpoint_path`
  runs `train_optiprompt` instead (the arguments after `progress` are its).

  Selection: `best_metric` picks MODEL_DIR/best.json on `eval_split`, which
  must differ from `report_split` (the split whose numbers are reported):
  choosing on the reported split inflates it. `checkpoint_step` (the
  pretrained checkpoint's step) numbers the numpy exports as t5x does.
  `enable_dropout` defaults to `model_config.dropout_rate > 0`; set it True
  to run a late prompt generator's own dropout over a dropout-free backbone.
  """
  if best_metric and report_split is not None and eval_split == report_split:
    raise ValueError(
        f'train.best_metric={best_metric!r} would choose the best step on eval_split='
        f'{eval_split!r}, the split reported (report_split={report_split!r}): an optimistic '
        'number. Set SELECTION_SPLIT to a split held out of training (e.g. the last 1,000 '
        "training examples of a '{task}_taskless' task, as the recycling experiments), or "
        'train.best_metric = None to keep the prompt of the last step.')
  if initial_checkpoint_path and family_checkpoints.is_family_dir(initial_checkpoint_path):
    if train_steps is not None:
      raise ValueError(f'TRAIN_STEPS={train_steps}: a BERT-like / GPT-2 run trains OptiPrompt\'s '
                       'epochs over its relation (the steps follow from its facts); set '
                       'TRAIN_EPOCHS instead and TRAIN_STEPS = None (runs/optiprompt_lama.gin).')
    return train_optiprompt(
        model_dir=model_dir, task_name=mixture_or_task_name, checkpoint_path=initial_checkpoint_path,
        prompt_method=prompt_method, optimizer=optimizer, batch_size=batch_size,
        train_epochs=train_epochs, evals_per_epoch=evals_per_epoch, lama_dir=lama_dir,
        common_vocab=common_vocab, tokenizer_path=tokenizer_path, num_partitions=num_partitions,
        seed=seed, keep=keep, log_every=log_every, enable_dropout=enable_dropout,
        progress=progress)
  _warn_on_step_mismatch(initial_checkpoint_path, checkpoint_step)
  data.configure_tasks(vocabulary_path, data_dir)
  lengths = data.task_feature_lengths(mixture_or_task_name, task_feature_lengths)
  frozen = load_frozen(initial_checkpoint_path, model_config, seed)
  model = t5.T5(model_config)
  mesh = partitioning.make_mesh(num_partitions)
  host_bs = data.host_batch_size(batch_size)
  task = data.get_task(mixture_or_task_name)  # Fail fast on an unknown name.

  def make_batches(start_step):
    examples = data.seqio_examples(mixture_or_task_name, train_split, lengths, shuffle=True,
                                   seed=shuffle_seed, repeat=True, skip=start_step * host_bs)
    return data.batches(examples, host_bs, lengths)

  eval_fn = None
  if eval_every or best_metric:
    eval_fn = evaluation.task_evaluator(mixture_or_task_name, split=eval_split,
                                        feature_lengths=lengths, mode=eval_mode,
                                        batch_size=batch_size, max_examples=eval_examples)
  if best_metric and hasattr(task, 'tasks') and best_metric != 'average':
    # A mixture: each task has its own metrics; best.json tracks their macro average.
    logging.info('%s is a mixture: best.json tracks the macro average of its tasks\' '
                 'headline metrics (\'average\'), not %r.', mixture_or_task_name, best_metric)
    best_metric = 'average'
  run_info = {'model_config': model_config, 'task': mixture_or_task_name,
              'prompt_shapes': jax.tree.map(lambda x: list(x.shape), jax.eval_shape(
                  prompt_method.init, jax.random.key(0), frozen))}
  gin_setup.write_operative_config(model_dir)
  return trainer.train(
      model=model, frozen=frozen, method=prompt_method, tx=optimizer or trainer.adafactor(),
      mesh=mesh, make_batches=make_batches, total_steps=train_steps, model_dir=model_dir,
      run_info=run_info, batch_size=batch_size, seed=seed, save_every=save_every, keep=keep,
      log_every=log_every, eval_fn=eval_fn, eval_every=eval_every, best_metric=best_metric,
      accum_steps=accum_steps, z_loss=z_loss,
      enable_dropout=model_config.dropout_rate > 0 if enable_dropout is None else enable_dropout,
      progress=progress, export_step_offset=checkpoint_step)


def train_optiprompt(*, model_dir: str, task_name: str, checkpoint_path: str,
                     prompt_method: prompts.PromptMethod, optimizer: Any, batch_size: int,
                     train_epochs: Optional[int], evals_per_epoch: Optional[int],
                     lama_dir: Optional[str], common_vocab: str, tokenizer_path: Optional[str],
                     num_partitions: int = 1, seed: int = 0, keep: Optional[int] = 3,
                     log_every: int = 10, enable_dropout: Optional[bool] = None,
                     progress: bool = True):
  """OptiPrompt's LAMA protocol on one relation (`optiprompt_run`'s module docstring).

  Trains `train_epochs` passes over the relation's train facts (the steps
  follow from their number), scores dev P@1 `evals_per_epoch` times an epoch
  and at the end, and keeps the best prompt (strictly better, as the
  scripts) as MODEL_DIR/best_prompt.npy, its step and P@1 in best.json. The
  optimizer is a function of the number of steps (`optiprompt_run.adamw`)
  or a ready optax transformation.
  """
  if lama_dir is None or train_epochs is None or evals_per_epoch is None:
    raise ValueError(f'{checkpoint_path} is a BERT-like / GPT-2 checkpoint, which trains by '
                     "OptiPrompt's protocol: set train.lama_dir, train.train_epochs and "
                     'train.evals_per_epoch (gin_configs/runs/optiprompt_lama.gin does).')
  relation = optiprompt_run.relation_of(task_name)
  dropout = True if enable_dropout is None else enable_dropout  # The scripts train in train().
  frozen, family, name, tokenizer = optiprompt_run.load_model(checkpoint_path, tokenizer_path,
                                                              dropout=dropout)
  num_vectors = jax.eval_shape(prompt_method.init, jax.random.key(0), frozen)['prompt'].shape[0]
  vocab = optiprompt_run.read_common_vocab(lama_dir, common_vocab)
  rel = optiprompt_run.load_relation(lama_dir, relation, name, tokenizer, vocab, ('train', 'dev'),
                                     num_vectors)
  per_epoch = optiprompt_run.steps_per_epoch(len(rel.splits['train']), batch_size)
  total_steps = train_epochs * per_epoch
  optimizer = optimizer or optiprompt_run.adamw
  tx = optimizer(total_steps=total_steps) if callable(optimizer) else optimizer
  convert = optiprompt_run.converter(family, num_vectors)
  data.host_batch_size(batch_size)  # Fails early when the rows do not split over processes.
  dev_fn = optiprompt_run.precision_evaluator(family, prompt_method, rel.splits['dev'],
                                              rel.candidates, batch_size=batch_size,
                                              lengths=rel.lengths, num_vectors=num_vectors)

  def eval_fn(steps, params, frozen, step):
    metrics = dev_fn(steps, params, frozen, step)
    if run_dir.record_best(model_dir, step, metrics, 'p@1') and jax.process_index() == 0:
      prompts.save_prompt(jax.device_get(params['prompt']), f'{model_dir}/best_prompt.npy')
    return metrics

  logging.info('%s %s: %d train facts (%d steps an epoch, %d steps), %d dev facts, %d candidates.',
               checkpoint_path, relation, len(rel.splits['train']), per_epoch, total_steps,
               len(rel.splits['dev']), len(rel.candidates))
  run_info = {'model_config': family.config, 'task': task_name,
              'prompt_shapes': jax.tree.map(lambda x: list(x.shape), jax.eval_shape(
                  prompt_method.init, jax.random.key(0), frozen))}
  gin_setup.write_operative_config(model_dir)
  every = max(per_epoch // evals_per_epoch, 1)
  return trainer.train(
      model=family, frozen=frozen, method=prompt_method, tx=tx,
      mesh=partitioning.make_mesh(num_partitions),
      make_batches=lambda start: optiprompt_run.epoch_batches(
          rel.splits['train'], batch_size, rel.lengths, convert, start),
      total_steps=total_steps, model_dir=model_dir, run_info=run_info, batch_size=batch_size,
      seed=seed, save_every=every, keep=keep, log_every=log_every, eval_fn=eval_fn,
      eval_every=every, best_metric=None, z_loss=0.0, enable_dropout=dropout, progress=progress)


def _warn_on_step_mismatch(initial_checkpoint_path: Optional[str], checkpoint_step: int) -> None:
  """Warns when a T5X `.../checkpoint_N` path disagrees with CHECKPOINT_STEP."""
  match = re.search(r'checkpoint_(\d+)/*$', initial_checkpoint_path or '')
  if match and int(match.group(1)) != checkpoint_step:
    logging.warning('INITIAL_CHECKPOINT_PATH %s is step %s but CHECKPOINT_STEP is %d: t5x would '
                    "continue Adafactor's decay schedule from %s.", initial_checkpoint_path,
                    match.group(1), checkpoint_step, match.group(1))


def main(argv):
  del argv
  cli.log_to(f"{gin.query_parameter('%MODEL_DIR')}/log.txt")  # INFO lines; the terminal shows warnings.
  train()  # pylint: disable=missing-kwoa  (gin supplies the arguments)


if __name__ == '__main__':
  train = gin.configurable(train)  # Registered before the gin files are parsed.
  gin_setup.run(main)
