r"""Tunes a prompt on a frozen model (T5, or a BERT / RoBERTa / ALBERT / GPT-2), t5x-style.

    python -m prompt_recycling.train \
      --gin_file=gin_configs/models/t5_1_1_base_prompt.gin \
      --gin_file=gin_configs/runs/prompt_finetune.gin \
      --gin.MODEL_DIR="'/tmp/sst2_prompt'" \
      --gin.MIXTURE_OR_TASK_NAME="'glue_sst2_v2'" \
      --gin.INITIAL_CHECKPOINT_PATH="'gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_base/checkpoint_1100000'"

INITIAL_CHECKPOINT_PATH may also be a local Hugging Face directory of a
BERT-like masked LM or a GPT-2 (config.json, weights and tokenizer files, as
`save_pretrained` writes them; `family_checkpoints.load_model`):

* with MIXTURE_OR_TASK_NAME = 'optiprompt_<relation>', it runs OptiPrompt's
  LAMA protocol on that relation (`optiprompt_run`; `train_optiprompt`):

    python -m prompt_recycling.train \
      --gin_file=gin_configs/models/hf/roberta_base.gin \
      --gin_file=gin_configs/runs/optiprompt_lama.gin \
      --gin.ROBERTA_BASE_DIR="'/data/roberta-base'" \
      --gin.MODEL_DIR="'/tmp/roberta_P17'" --gin.MIXTURE_OR_TASK_NAME="'optiprompt_P17'"

* with a SeqIO task, MODEL_CONFIG gives that family's sizes
  (`encoder.EncoderConfig`, `gpt2.GPT2Config`), checked against config.json,
  and its dropout (HF configs load with none); the task's text
  (`inputs_pretokenized`, `targets_pretokenized`) is re-tokenised with the
  directory's tokenizer through `train.template` and `train.label_words`
  (`family_example`); gin_configs/models/roberta_large_lpt.gin and
  gpt2_large_lpt.gin are the late-prompt-tuning paper's setting.

Rerunning the same command after a preemption resumes from the latest
checkpoint in MODEL_DIR. Multi-host (Cloud TPU pods): every host runs the same
command with `--multihost` (see `gin_setup`).
"""
import dataclasses
import logging
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

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
from prompt_recycling.models import family as families
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


def load_model(initial_checkpoint_path: Optional[str], config: families.Config, seed: int):
  """(frozen params, `models.family` family) for `config`.

  A local HF BERT / RoBERTa / ALBERT / GPT-2 directory is read with its
  tokenizer's special ids; its config.json must give `config`'s sizes (the
  dropout rate and dtype are `config`'s: HF configs are loaded without
  dropout). Anything else is T5 (`load_frozen`).

  Raises:
    ValueError: config.json and `config` disagree (the fields named), or a
      non-T5 `config` without a HF directory.
  """
  if initial_checkpoint_path and family_checkpoints.is_family_dir(initial_checkpoint_path):
    params, family = family_checkpoints.load_model(initial_checkpoint_path)
    loaded = dataclasses.replace(family.config, dropout_rate=config.dropout_rate,
                                 dtype=config.dtype)
    if type(loaded) is not type(config):
      raise ValueError(f'{initial_checkpoint_path}/config.json is a {type(loaded).__name__} model '
                       f'but MODEL_CONFIG is a {type(config).__name__}: use the model file of '
                       'this checkpoint\'s family.')
    if loaded != config:
      differ = {f.name: (getattr(loaded, f.name), getattr(config, f.name))
                for f in dataclasses.fields(config)
                if getattr(loaded, f.name) != getattr(config, f.name)}
      raise ValueError(f'{initial_checkpoint_path}/config.json does not describe MODEL_CONFIG: '
                       f'{differ} (config.json, MODEL_CONFIG). Use the model file of this '
                       'checkpoint, or override the differing fields.')
    return params, dataclasses.replace(family, config=config)
  if not isinstance(config, t5.T5Config):
    raise ValueError(f'MODEL_CONFIG is a {type(config).__name__}, which is read from a local '
                     'Hugging Face directory (config.json + weights + tokenizer files), but '
                     f'INITIAL_CHECKPOINT_PATH={initial_checkpoint_path!r} is not one.')
  return load_frozen(initial_checkpoint_path, config, seed), families.EncoderDecoder(config)


def _fields(text: str, names: List[str]) -> Dict[str, str]:
  """The `name: value` fields of a T5-formatted text ('sentence1: A sentence2: B')."""
  if names == ['inputs']:
    return {'inputs': text.strip()}
  pattern = r'(?:^|\s)(' + '|'.join(map(re.escape, names)) + r'): '
  parts = re.split(pattern, text)
  found = {key: value.strip() for key, value in zip(parts[1::2], parts[2::2])}
  missing = [n for n in names if n not in found]
  if missing:
    raise ValueError(f'The task text {text[:80]!r} has no field(s) {missing} that train.template '
                     "names; use '{inputs}' for the whole text.")
  return found


def family_example(example: Mapping[str, Any], tokenizer: Any, family: families.Family,
                   template: str, label_words: Optional[Mapping[str, str]]) -> Dict[str, Any]:
  """A task example's text as `family`'s `inputs` / `targets` token ids.

  `template` holds `{label}` and the task text, whole as `{inputs}` or by its
  T5 field names (`{sentence}`, `{sentence1}`, ...). The target text
  (`targets_pretokenized`, mapped through `label_words` when given) becomes:

    * MaskedLM: `{label}` -> the tokenizer's mask token; inputs = the text
      with the tokenizer's special tokens, targets = the one id of
      ' ' + label word (as xyltt/LPT's `encoder-only/data/process.py`: a label
      word of several tokens is refused).
    * CausalLM: inputs = BOS + the text before `{label}`, targets = ' ' +
      label word + the rest of the template, then EOS (xyltt/LPT's
      `decoder-only/data/utils.py`, generative: the loss on the label
      description and EOS).

  Raises:
    ValueError: no `{label}` in the template, a missing field, a target with
      no label word, or (MaskedLM) a label word that is not one token.
  """
  if template.count('{label}') != 1:
    raise ValueError(f'train.template {template!r} must hold {{label}} once: where the answer goes.')
  names = [n for n in re.findall(r'{(\w+)}', template) if n != 'label']
  fields = _fields(str(example['inputs_pretokenized']), names)
  answer = str(example['targets_pretokenized'])
  if label_words is not None:
    if answer not in label_words:
      raise ValueError(f'Target {answer!r} has no entry in train.label_words {dict(label_words)}.')
    answer = label_words[answer]
  before, after = template.split('{label}')
  target = _target_ids(answer, after.format(**fields), tokenizer, family)
  if isinstance(family, families.MaskedLM):
    text = before.format(**fields) + tokenizer.mask_token + after.format(**fields)
    return {'inputs': tokenizer(text)['input_ids'], 'targets': target}
  prefix = tokenizer(before.format(**fields).rstrip(), add_special_tokens=False)['input_ids']
  return {'inputs': [tokenizer.bos_token_id] + prefix, 'targets': target}


def _target_ids(answer: str, after: str, tokenizer: Any, family: families.Family) -> List[int]:
  """The ids `family_example` trains on for the label word `answer` (see there)."""
  if isinstance(family, families.MaskedLM):
    target = tokenizer(' ' + answer, add_special_tokens=False)['input_ids']
    if len(target) != 1:
      raise ValueError(f'Label word {answer!r} is {len(target)} tokens for this tokenizer; a '
                       'masked LM predicts one token at its mask: choose one-token label words '
                       '(train.label_words).')
    return target
  if isinstance(family, families.CausalLM):
    rest = tokenizer((' ' + answer + after).rstrip(), add_special_tokens=False)['input_ids']
    return rest + [family.eos_id]
  raise ValueError(f'train.template re-tokenises text for BERT-likes and GPT-2, not {family}.')


def family_label_ids(tokenizer: Any, family: families.Family, template: str,
                     label_words: Optional[Mapping[str, str]]) -> Callable[[str], List[int]]:
  """The task's label word -> the candidate ids rank classification scores for it.

  The ids `family_example` trains on for that answer, so evaluation during
  training ranks exactly what training taught (xyltt/LPT rank the label words'
  logits at <mask>, and score GPT-2's label descriptions).

  Raises:
    ValueError: a GPT-2 template with task fields after `{label}` (each
      example would have its own candidates).
  """
  after = template.split('{label}')[-1]
  if isinstance(family, families.CausalLM) and re.search(r'{\w+}', after):
    raise ValueError(f'train.template {template!r} has task fields after {{label}}: a GPT-2 '
                     'run cannot rank one set of label continuations for every example; set '
                     'train.eval_every = None and train.best_metric = None.')

  def label_ids(word: str) -> List[int]:
    return _target_ids(label_words.get(word, word) if label_words else word, after, tokenizer,
                       family)
  return label_ids


def train(*, model_dir: str, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
          batch_size: int, train_steps: Optional[int], initial_checkpoint_path: Optional[str],
          prompt_method: prompts.PromptMethod, model_config: families.Config = t5.T5Config(),
          optimizer: Any = None, num_partitions: int = 1, seed: int = 0, shuffle_seed: int = 0,
          save_every: int = 1000, keep: Optional[int] = 3, log_every: int = 10,
          accum_steps: int = 1, z_loss: float = 1e-4, eval_every: Optional[int] = None,
          eval_split: str = 'validation', eval_mode: str = 'rank',
          eval_examples: Optional[int] = None, best_metric: Optional[str] = None,
          train_split: str = 'train', report_split: Optional[str] = 'validation',
          checkpoint_step: int = 0, enable_dropout: Optional[bool] = None,
          vocabulary_path: Optional[str] = None, data_dir: Optional[str] = None,
          template: Optional[str] = None, label_words: Optional[Mapping[str, str]] = None,
          progress: bool = True, train_epochs: Optional[int] = None,
          evals_per_epoch: Optional[int] = None, lama_dir: Optional[str] = None,
          common_vocab: str = 'common_vocab_cased_be_ro_al.txt',
          tokenizer_path: Optional[str] = None):
  """Prompt-tunes `model_config` on a task; see gin_configs/runs/prompt_finetune.gin.

  Selection: `best_metric` picks MODEL_DIR/best.json on `eval_split`, which
  must differ from `report_split` (the split whose numbers are reported):
  choosing on the reported split inflates it. `checkpoint_step` (the
  pretrained checkpoint's step) numbers the numpy exports as t5x does.
  `enable_dropout` defaults to `model_config.dropout_rate > 0`; set it True
  to run a late prompt generator's own dropout over a dropout-free backbone.
  `template` and `label_words` turn the task's text into a BERT-like's or
  GPT-2's ids (`family_example`; required for those, refused for T5);
  evaluation during training then ranks the label words' ids as training
  built them (`family_label_ids`).

  A BERT / RoBERTa / ALBERT / GPT-2 directory with an 'optiprompt_<relation>'
  task runs `train_optiprompt` instead (`train_epochs`, `evals_per_epoch`,
  `lama_dir`, `common_vocab` and `tokenizer_path` are its).
  """
  if optiprompt_run.applies(initial_checkpoint_path, mixture_or_task_name):
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
  if train_steps is None:
    raise ValueError(f'TRAIN_STEPS is None: set it for {mixture_or_task_name!r} (only an '
                     "'optiprompt_<relation>' run on a BERT-like / GPT-2 directory counts epochs).")
  if best_metric and report_split is not None and eval_split == report_split:
    raise ValueError(
        f'train.best_metric={best_metric!r} would choose the best step on eval_split='
        f'{eval_split!r}, the split reported (report_split={report_split!r}): an optimistic '
        'number. Set SELECTION_SPLIT to a split held out of training (e.g. the last 1,000 '
        "training examples of a '{task}_taskless' task, as the recycling experiments), or "
        'train.best_metric = None to keep the prompt of the last step.')
  _warn_on_step_mismatch(initial_checkpoint_path, checkpoint_step)
  data.configure_tasks(vocabulary_path, data_dir)
  lengths = data.task_feature_lengths(mixture_or_task_name, task_feature_lengths)
  frozen, model = load_model(initial_checkpoint_path, model_config, seed)
  convert, tokenizer = family_converter(model, initial_checkpoint_path, template, label_words)
  mesh = partitioning.make_mesh(num_partitions)
  host_bs = data.host_batch_size(batch_size)
  task = data.get_task(mixture_or_task_name)  # Fail fast on an unknown name.

  def make_batches(start_step):
    examples = data.seqio_examples(mixture_or_task_name, train_split, lengths, shuffle=True,
                                   seed=shuffle_seed, repeat=True, skip=start_step * host_bs)
    if convert is None:
      return data.batches(examples, host_bs, lengths)
    return data.batches(map(convert, examples), host_bs, lengths, convert=model.to_batch)

  eval_fn = None
  if eval_every or best_metric:
    eval_fn = evaluation.task_evaluator(
        mixture_or_task_name, split=eval_split, feature_lengths=lengths, mode=eval_mode,
        batch_size=batch_size, max_examples=eval_examples,
        **family_evaluator_args(convert, tokenizer, model, template, label_words))
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


def family_converter(model: families.Family, path: Optional[str], template: Optional[str],
               label_words: Optional[Mapping[str, str]]
               ) -> Tuple[Optional[Callable[[Mapping[str, Any]], Dict[str, Any]]], Any]:
  """(the example re-tokeniser, the tokenizer) of a BERT-like or GPT-2 run; (None, None) for T5."""
  if isinstance(model, families.EncoderDecoder):
    if template is not None or label_words is not None:
      raise ValueError('train.template / train.label_words re-tokenise text for BERT-likes and '
                       'GPT-2; a T5 run reads the task\'s own ids: unset them.')
    return None, None
  if template is None:
    raise ValueError(f'A {type(model).__name__} run needs train.template (where the task text and '
                     "the answer go, e.g. '{sentence} . It was {label} .') to tokenise the task "
                     f'with the tokenizer in {path}.')
  from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
  tokenizer = family_tokenizers.load_any(path)
  return (lambda example: family_example(example, tokenizer, model, template, label_words),
          tokenizer)


def family_evaluator_args(convert, tokenizer: Any, model: families.Family,
                          template: Optional[str], label_words: Optional[Mapping[str, str]]
                          ) -> Dict[str, Any]:
  """`evaluation.task_evaluator`'s `convert` and `encode_label` for a BERT-like or GPT-2 run
  (`family_converter`'s re-tokeniser and tokenizer): the family's ids for the inputs and for
  each label word, as training builds them. {} for T5."""
  if convert is None:
    return {}
  return dict(convert=convert,
              encode_label=family_label_ids(tokenizer, model, template, label_words))


def _warn_on_step_mismatch(initial_checkpoint_path: Optional[str], checkpoint_step: int) -> None:
  """Warns when a T5X `.../checkpoint_N` path disagrees with CHECKPOINT_STEP."""
  step = checkpoints.step_of(initial_checkpoint_path)
  if step is not None and step != checkpoint_step:
    logging.warning('INITIAL_CHECKPOINT_PATH %s is step %d but CHECKPOINT_STEP is %d: t5x would '
                    "continue Adafactor's decay schedule from %d.", initial_checkpoint_path,
                    step, checkpoint_step, step)


def main(argv):
  del argv
  cli.log_to(f"{gin.query_parameter('%MODEL_DIR')}/log.txt")  # INFO lines; the terminal shows warnings.
  train()  # pylint: disable=missing-kwoa  (gin supplies the arguments)


if __name__ == '__main__':
  train = gin.configurable(train)  # Registered before the gin files are parsed.
  gin_setup.run(main)
