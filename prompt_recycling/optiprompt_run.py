"""OptiPrompt's LAMA protocol as a run: a relation's data, epochs, dev/test P@1, the optimizer.

What `prompt_recycling.train` / `eval` do with a BERT / RoBERTa / ALBERT / GPT-2
checkpoint (a local Hugging Face directory) and a task named `optiprompt_<P>`
(e.g. `optiprompt_P17`). The inputs and the metric are `optiprompt.py`'s; this
module turns them into the trainer's examples and batches, as the authors'
`code/run_optiprompt.py` (princeton-nlp/OptiPrompt; for GPT-2
MANGA-UOFA/PTfer `gpt_code/run_optiprompt_gpt.py`) trains one relation:

  * facts: `trex_original/<P>/{train,dev,test}.jsonl` under the LAMA directory,
    deduplicated and filtered by the common vocabulary (`optiprompt.filter_facts`);
    test is scored by `eval`, dev selects the prompt during training;
  * batches of 16 in file order, every epoch the same (the scripts' `batchify`;
    their `--do_shuffle` is off by default), the last one smaller (here padded
    with rows of zero loss weight, so its loss is the mean over its real rows);
  * 10 epochs; the steps follow from the data: `epochs * ceil(facts / 16)`;
  * AdamW (`adamw`): lr 3e-3, no bias correction (transformers' `AdamW(...,
    correct_bias=False)`), eps 1e-6, no weight decay, the learning rate rising
    linearly over the first 10% of the steps and falling linearly to 0;
  * the prompt: 5 vectors drawn N(0, 0.02^2) (the rows `resize_token_embeddings`
    adds, initialised as the model's `initializer_range`); dropout of the
    frozen model on in training (the scripts train in `train()` mode);
  * dev P@1 three times an epoch, keeping the best prompt (`best_prompt.npy`).

Deviations (named; REPRODUCTION.md's fidelity table):
  * `dev_schedule`: dev evaluation at steps k * floor(steps_per_epoch / 3) and
    at the last step; the scripts test `(global_step + 1) % eval_step == 0`
    after incrementing, one step earlier, and also score the initial prompt.
  * `softmax_over_vocabulary`: the training loss is a softmax over the model's
    vocabulary; the scripts add [V1]..[V10] to a tied vocabulary, so their
    softmax also has the 10 prompt vectors as outputs.
  * `one_dropout_rate`: one dropout rate (config.json's hidden / residual
    dropout) also for attention probabilities (equal in the released models).
"""
import dataclasses
import logging
import math
import os
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prompt_recycling import data
from prompt_recycling import optiprompt
from prompt_recycling import partitioning

Example = Dict[str, Any]
TASK_PREFIX = 'optiprompt_'


def applies(checkpoint_path: Optional[str], task_name: str) -> bool:
  """Whether `train` / `eval` run this protocol: a BERT-like / GPT-2 directory and an
  'optiprompt_<P>' task (any other task on such a directory goes through `train.template`)."""
  from prompt_recycling import family_checkpoints  # pylint: disable=g-import-not-at-top
  return bool(checkpoint_path) and task_name.startswith(TASK_PREFIX) and (
      family_checkpoints.is_family_dir(checkpoint_path))


def relation_of(task_name: str) -> str:
  """'optiprompt_P17' -> 'P17'.

  Raises:
    ValueError: a name without the prefix (a SeqIO task name given for a
      BERT-like / GPT-2 checkpoint).
  """
  if not task_name.startswith(TASK_PREFIX) or len(task_name) == len(TASK_PREFIX):
    raise ValueError(f'MIXTURE_OR_TASK_NAME={task_name!r}: a BERT / RoBERTa / ALBERT / GPT-2 '
                     f"checkpoint runs OptiPrompt's LAMA protocol, one relation a run: name it "
                     f"'{TASK_PREFIX}<relation>', e.g. '{TASK_PREFIX}P17'.")
  return task_name[len(TASK_PREFIX):]


def read_relation(lama_dir: str, relation: str, split: str,
                  vocab: Sequence[str]) -> List[optiprompt.Fact]:
  """The kept facts of `relation`'s `split` (`lama_dir/trex_original/<P>/<split>.jsonl`)."""
  path = os.path.join(lama_dir, 'trex_original', relation, f'{split}.jsonl')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} does not exist: expected LAMA T-REx as '
                            "trex_original/<relation>/{train,dev,test}.jsonl under the LAMA "
                            'directory (../shared/data/lama; see its SOURCES.md).')
  facts = optiprompt.filter_facts(optiprompt.read_facts(path), vocab)
  if not facts:
    raise ValueError(f'{path}: no fact has its object in the common vocabulary.')
  return facts


def examples(facts: Sequence[optiprompt.Fact], family: str, tokenizer: Any,
             num_vectors: int = optiprompt.NUM_VECTORS,
             template: Optional[str] = None) -> List[Example]:
  """Trainer examples: `inputs` (the query's tokens), `targets` [label], `prompt_positions`.

  A masked LM's `to_batch` puts the label at the [MASK]; GPT-2's predicts it
  after the last input token, the last [V] (`models/family.py`). With a
  manual `template`, no [V] slots (`optiprompt.build_manual_query`).
  """
  out = []
  for fact in facts:
    query = (optiprompt.build_query(fact, family, tokenizer, num_vectors) if template is None
             else optiprompt.build_manual_query(fact, template, family, tokenizer))
    out.append({'inputs': query.tokens, 'targets': [query.label],
                'prompt_positions': query.prompt_positions})
  return out


def feature_lengths(*example_lists: Sequence[Example]) -> Dict[str, int]:
  """{'inputs': the longest query, 'targets': 1}: one compiled shape for all of them."""
  longest = max(len(ex['inputs']) for exs in example_lists for ex in exs)
  return {'inputs': longest, 'targets': 1}


def converter(family: Any, num_vectors: int = optiprompt.NUM_VECTORS) -> Callable[..., Dict]:
  """`family.to_batch` plus `prompt_positions` [batch, num_vectors] for every row.

  Rows that pad a batch (no `prompt_positions`) point at positions 0..n-1;
  their loss weights are 0 and evaluation drops them.
  """
  def convert(batch_examples, lengths):
    positions = np.stack([np.asarray(ex.get('prompt_positions', range(num_vectors)), np.int32)
                          for ex in batch_examples])
    plain = [{k: v for k, v in ex.items() if k != 'prompt_positions'} for ex in batch_examples]
    return dict(family.to_batch(plain, lengths), prompt_positions=positions)
  return convert


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return math.ceil(num_examples / batch_size)


def epoch_batches(train_examples: Sequence[Example], batch_size: int,
                  lengths: Mapping[str, int], convert: Callable[..., Dict],
                  start_step: int = 0) -> Iterator[Dict[str, np.ndarray]]:
  """Endless epochs of the same batches in file order, from batch `start_step` on.

  Each yields this process's rows of the global batch (`data.host_rows`).
  """
  per_epoch = steps_per_epoch(len(train_examples), batch_size)
  offset = start_step % per_epoch
  while True:
    epoch = data.batches(train_examples, batch_size, lengths, pad_last=True, convert=convert)
    for i, batch in enumerate(epoch):
      if i < offset:
        continue
      batch.pop('valid')
      yield data.host_rows(batch)
    offset = 0


def adamw(total_steps: int, learning_rate: float = 3e-3, warmup_fraction: float = 0.1,
          weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-6) -> optax.GradientTransformation:
  """transformers' `AdamW(correct_bias=False)` under `get_linear_schedule_with_warmup`.

  update = -lr_t * m_t / (sqrt(v_t) + eps), with m_t, v_t Adam's moments not
  divided by (1 - b^t); lr_t = lr * t / w for t < w = int(warmup_fraction *
  total_steps), then lr * (total_steps - t) / (total_steps - w); t counts
  from 0 at the first update (the scheduler steps after the optimizer, so the
  first update has lr 0). Weight decay, if any, is decoupled (0 in OptiPrompt).
  Built by `train` once the number of steps is known: gin binds the function
  itself (`train.optimizer = @optiprompt_run.adamw`).
  """
  warmup = int(warmup_fraction * total_steps)
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, max(warmup, 1)),
       optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1))], [warmup])
  parts = [_scale_by_adam_uncorrected(b1, b2, eps)]
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  return optax.chain(*parts, optax.scale_by_learning_rate(schedule))


def _scale_by_adam_uncorrected(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """Adam's direction m / (sqrt(v) + eps) without bias correction (optax's always corrects)."""
  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

  def update(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
    nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * jnp.square(g), updates, state.nu)
    direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return direction, optax.ScaleByAdamState(count=state.count + 1, mu=mu, nu=nu)
  return optax.GradientTransformation(init, update)


def correct_fn(family: Any, method: Any) -> Callable[..., jax.Array]:
  """Jitted `(params, frozen, batch, candidates) -> [batch] bool`: is the top candidate the label?

  The target is the one weighted position of each row (the [MASK]; GPT-2's
  last input token); the argmax ranges over `candidates` [num_candidates]
  ids only (OptiPrompt's common-vocabulary restriction). Build it once per
  model and method: each call compiles once per batch shape.
  """
  def correct(params, frozen, batch, candidates):
    model_params = method.model_variables(params, frozen)
    rows = batch['decoder_target_tokens'].shape[0]
    logits = family.logits(model_params, batch, method.encoder_args(params, rows))
    at = jnp.argmax(batch['decoder_loss_weights'], axis=1)  # [batch], one target per row
    target_logits = jnp.take_along_axis(logits, at[:, None, None], axis=1)[:, 0]  # [batch, vocab]
    best = candidates[jnp.argmax(target_logits[:, candidates], axis=-1)]
    label = jnp.take_along_axis(batch['decoder_target_tokens'], at[:, None], axis=1)[:, 0]
    return best == label
  return jax.jit(correct)


def precision(correct: Callable[..., jax.Array], steps: Any, params: Any, frozen: Any,
              eval_examples: Sequence[Example], candidates: np.ndarray, *, batch_size: int,
              lengths: Mapping[str, int], num_vectors: int = optiprompt.NUM_VECTORS
              ) -> Dict[str, float]:
  """{'p@1' (percent), 'num_examples'} of `eval_examples` under `correct` (`correct_fn`).

  `steps` (`trainer.Steps`) gives the mesh and rules; the last batch is
  padded with rows that are not counted.
  """
  cands = jnp.asarray(candidates, jnp.int32)
  convert = converter(steps.family, num_vectors)
  hits = 0
  with partitioning.axis_rules(steps.mesh, steps.rules):
    for batch in data.batches(eval_examples, batch_size, lengths, pad_last=True, convert=convert):
      valid = batch.pop('valid')
      sharded = partitioning.shard_batch(data.host_rows(batch), steps.mesh)
      hits += int(np.sum(np.asarray(correct(params, frozen, sharded, cands))[valid]))
  return {'p@1': 100.0 * hits / len(eval_examples), 'num_examples': len(eval_examples)}


def precision_evaluator(family: Any, method: Any, eval_examples: Sequence[Example],
                        candidates: np.ndarray, *, batch_size: int, lengths: Mapping[str, int],
                        num_vectors: int = optiprompt.NUM_VECTORS
                        ) -> Callable[..., Dict[str, float]]:
  """`(steps, params, frozen, step) -> {'p@1', 'num_examples'}` on `eval_examples` (`precision`)."""
  correct = correct_fn(family, method)

  def evaluate_fn(steps, params, frozen, step):
    del step
    return precision(correct, steps, params, frozen, eval_examples, candidates,
                     batch_size=batch_size, lengths=lengths, num_vectors=num_vectors)
  return evaluate_fn


class RelationData(NamedTuple):
  """One relation's examples and candidates for one model (`load_relation`).

  candidates: [num_candidates] int32 ids of the common vocabulary's one-token words.
  splits: {split: examples}.
  lengths: the feature lengths all of them fit.
  """
  candidates: np.ndarray
  splits: Dict[str, List[Example]]
  lengths: Dict[str, int]


def read_common_vocab(lama_dir: str, common_vocab: str) -> List[str]:
  """The words of LAMA_DIR/common_vocabs/<common_vocab> (`optiprompt.read_vocab`)."""
  path = os.path.join(lama_dir, 'common_vocabs', common_vocab)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Common vocabulary {path} does not exist (LAMA_DIR/common_vocabs/'
                            '<file>, e.g. common_vocab_cased_be_ro_al.txt).')
  return optiprompt.read_vocab(path)


def load_relation(lama_dir: str, relation: str, family_name: str, tokenizer: Any,
                  vocab: Sequence[str], splits: Sequence[str],
                  num_vectors: int = optiprompt.NUM_VECTORS, template: Optional[str] = None,
                  candidates: Optional[np.ndarray] = None) -> RelationData:
  """`relation`'s facts of `splits` as examples for a `family_name` model with `tokenizer`.

  Args:
    lama_dir, relation: the files (`read_relation`).
    family_name, tokenizer: the model's ('bert', 'roberta', 'albert', 'gpt2').
    vocab: the common vocabulary's words (`read_common_vocab`): facts whose
      object is not among them are dropped, and P@1 ranks its one-token words.
    splits: e.g. ('train', 'dev').
    num_vectors: [V] slots.
    template: a manual template instead of the [V] slots (the discrete baseline).
    candidates: `optiprompt.candidate_ids(vocab, tokenizer, family_name)`
      when already computed (it tokenises every word).

  A fact whose object is in `vocab` but not one (non-UNK) token of this model
  is dropped (logged): the scripts never rank it.
  """
  by_split = {}
  for split in splits:
    facts = read_relation(lama_dir, relation, split, vocab)
    by_split[split] = []
    for fact in facts:
      try:
        by_split[split] += examples([fact], family_name, tokenizer, num_vectors, template)
      except ValueError:  # The object is not one token of this model.
        continue
    if len(by_split[split]) < len(facts):
      logging.info('%s %s: %d of %d facts have an object that is not one %s token; dropped.',
                   relation, split, len(facts) - len(by_split[split]), len(facts), family_name)
  if candidates is None:
    candidates = optiprompt.candidate_ids(vocab, tokenizer, family_name)
  return RelationData(np.asarray(candidates), by_split, feature_lengths(*by_split.values()))


def load_model(checkpoint_path: str, tokenizer_path: Optional[str] = None,
               dropout: bool = False):
  """(params, `models.family` family, family name, tokenizer) of a local HF directory.

  Args:
    checkpoint_path: a BERT / RoBERTa / ALBERT / GPT-2 directory
      (`family_checkpoints.is_family_dir`).
    tokenizer_path: its tokenizer files (default: the checkpoint directory).
    dropout: give the model config.json's dropout rate (hidden_dropout_prob,
      GPT-2's resid_pdrop), for training as the scripts do; else none.
  """
  from prompt_recycling import family_checkpoints  # pylint: disable=g-import-not-at-top
  from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
  from prompt_recycling.models import family as families  # pylint: disable=g-import-not-at-top
  params, config = family_checkpoints.load_hf(checkpoint_path)
  hf_config = family_checkpoints.read_config(checkpoint_path)
  name = family_checkpoints.family(hf_config, os.path.join(checkpoint_path, 'config.json'))
  if dropout:
    rate = hf_config.get('resid_pdrop' if name == 'gpt2' else 'hidden_dropout_prob', 0.1)
    config = dataclasses.replace(config, dropout_rate=float(rate))
  tokenizer = family_tokenizers.load_tokenizer(tokenizer_path or checkpoint_path, name)
  return params, families.from_tokenizer(config, tokenizer), name, tokenizer
