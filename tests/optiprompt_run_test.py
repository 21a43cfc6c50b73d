"""OptiPrompt's LAMA protocol through `prompt_recycling.train` / `eval` on a BERT-like checkpoint.

The end-to-end test saves a small random-init RoBERTa with transformers
(`save_pretrained`, the real roberta-base tokenizer files beside it), trains a
prompt on a real LAMA relation with runs/optiprompt_lama.gin and scores it with
runs/optiprompt_lama_eval.gin (the train command; then the eval command's flags,
run in this process: eval's command line is tested in entry_points_test, and a
second interpreter would only add its start-up); P@1 is then recomputed here
with transformers' PyTorch model, its inputs built from the tokenizer and the
raw .jsonl files (not from `optiprompt.py`) and the learned vectors written
into the input embeddings. The optimizer is checked against transformers'
AdamW(correct_bias=False) update written out in numpy under transformers'
own warm-up schedule.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, entry_point_arguments, shared_path

from prompt_recycling import optiprompt_run
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling.models import encoder
from prompt_recycling.models import family as families

RELATION = 'P140'  # Religion: dev 64 of 88 rows 'Islam', a skew the fixture's model leans on.
VOCAB_FILE = 'common_vocab_cased_be_ro_al.txt'


def test_adamw_equals_transformers_adamw_without_bias_correction():
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  total, lr, eps, b1, b2 = 20, 3e-3, 1e-6, 0.9, 0.999
  # transformers' scheduler, stepped after each update as the scripts do.
  param = torch.nn.Parameter(torch.zeros(1))
  sgd = torch.optim.SGD([param], lr=lr)
  scheduler = transformers.get_linear_schedule_with_warmup(sgd, int(0.1 * total), total)
  rates = []
  for _ in range(total):
    rates.append(sgd.param_groups[0]['lr'])
    sgd.step()
    scheduler.step()
  # transformers 3.0.2 AdamW.step with correct_bias=False, weight_decay=0, in numpy.
  rng = np.random.default_rng(0)
  grads = rng.normal(size=(total, 5, 8)).astype(np.float32)
  p = rng.normal(size=(5, 8)).astype(np.float32)
  m, v, ref = np.zeros_like(p), np.zeros_like(p), [p]
  for g, rate in zip(grads, rates):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    ref.append(ref[-1] - rate * m / (np.sqrt(v) + eps))
  tx = optiprompt_run.adamw(total_steps=total)
  params = {'prompt': p}
  state = tx.init(params)
  for step, g in enumerate(grads):
    updates, state = tx.update({'prompt': g}, state, params)
    params = {'prompt': params['prompt'] + updates['prompt']}
    np.testing.assert_allclose(params['prompt'], ref[step + 1], rtol=1e-5, atol=1e-7)
  assert rates[0] == 0.0 and max(rates) == pytest.approx(lr)  # The first update does nothing.


def test_epoch_batches_file_order_padded_last_batch_and_resume():
  # RoBERTa-like queries: <s> subject [V]x5 <mask> </s>.
  examples = [{'inputs': [0, 5 + i, 3, 3, 3, 3, 3, 50264, 2], 'targets': [100 + i],
               'prompt_positions': [2, 3, 4, 5, 6]} for i in range(11)]
  family = families.MaskedLM(encoder.EncoderConfig(vocab_size=50265, pad_id=1), mask_id=50264)
  convert = optiprompt_run.converter(family)
  lengths = optiprompt_run.feature_lengths(examples)
  assert lengths == {'inputs': 9, 'targets': 1}
  stream = optiprompt_run.epoch_batches(examples, 4, lengths, convert)
  got = [next(stream) for _ in range(7)]  # 3 batches an epoch: 4, 4, 3 (+ 1 padded row).
  assert optiprompt_run.steps_per_epoch(len(examples), 4) == 3
  order = [[int(t) for t in b['decoder_target_tokens'][:, 7] if t] for b in got]
  assert order == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 109, 110]] * 2 + [
      [100, 101, 102, 103]]
  assert got[2]['decoder_loss_weights'].sum() == 3  # The padding row weighs nothing.
  np.testing.assert_array_equal(got[2]['prompt_positions'][3], [0, 1, 2, 3, 4])
  resumed = optiprompt_run.epoch_batches(examples, 4, lengths, convert, start_step=5)
  for want in got[5:]:
    have = next(resumed)
    for key in want:
      np.testing.assert_array_equal(have[key], want[key])


def test_task_name_selects_the_relation_and_a_seqio_name_is_refused():
  assert optiprompt_run.relation_of('optiprompt_P17') == 'P17'
  with pytest.raises(ValueError, match="name it 'optiprompt_<relation>'"):
    optiprompt_run.relation_of('lama_trex_P17')


# --- End to end ---------------------------------------------------------------

def _facts(split, words):
  return _facts_of(RELATION, split, words)


def _facts_of(relation, split, words):
  """Distinct (subject, object) pairs with the object in `words`, in file order (OptiPrompt)."""
  seen, out = set(), []
  path = shared_path('lama', 'trex_original', relation, f'{split}.jsonl')
  for line in path.read_text(encoding='utf-8').splitlines():
    row = json.loads(line)
    fact = (row['sub'], row['obj'])
    if fact not in seen and fact[1] in words:
      seen.add(fact)
      out.append(fact)
  return out


class _Reference:
  """transformers' RobertaForMaskedLM scoring '<s> X [V1..V5] <mask> Ġ. </s>' one fact at a time."""

  def __init__(self, model_dir):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.tok = transformers.RobertaTokenizer.from_pretrained(model_dir)
    self.model = transformers.RobertaForMaskedLM.from_pretrained(model_dir).eval()
    words = [w.strip() for w in shared_path('lama', 'common_vocabs', VOCAB_FILE).read_text(
        encoding='utf-8').splitlines() if w.strip()]
    self.words = set(words)
    ids = [self.tok.convert_tokens_to_ids(self.tok.tokenize(' ' + w)) for w in words]
    self.candidates = np.asarray([i[0] for i in ids if len(i) == 1
                                  and i[0] != self.tok.unk_token_id])

  def target_logits(self, facts, prompt):
    """[facts, vocab] logits at <mask>, the prompt rows written over the [V] slots' embeddings."""
    tok, out = self.tok, []
    for subject, _ in facts:
      text = tok.convert_tokens_to_ids(tok.tokenize(subject.strip()))
      ids = ([tok.bos_token_id] + text + [tok.unk_token_id] * 5 + [tok.mask_token_id]
             + tok.convert_tokens_to_ids(tok.tokenize(' .')) + [tok.eos_token_id])
      with self.torch.no_grad():
        embeds = self.model.roberta.embeddings.word_embeddings(self.torch.tensor([ids]))
        if prompt is not None:
          embeds[0, 1 + len(text):6 + len(text)] = self.torch.tensor(prompt)
        logits = self.model(inputs_embeds=embeds).logits[0, 6 + len(text)]
      out.append(logits.numpy())
    return np.stack(out)

  def precision(self, facts, prompt):
    logits = self.target_logits(facts, prompt)
    best = self.candidates[np.argmax(logits[:, self.candidates], axis=1)]
    labels = [self.tok.convert_tokens_to_ids(self.tok.tokenize(' ' + o))[0] for _, o in facts]
    return 100.0 * np.mean(best == np.asarray(labels)), len(facts)


@pytest.fixture(scope='module')
def roberta_dir(tmp_path_factory):
  """A 1-layer RoBERTa of width 16 over the real 50,265-id vocabulary, saved as a user would.

  Weights N(0, 1) rather than 0.02, so that logits differ between facts, and
  the MLM bias of 'ĠIslam' raised to the median of its gap below the best
  candidate on the dev facts: about half of them are predicted 'Islam', so
  P@1 is neither 0 nor constant and moves with the prompt.
  """
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  tokenizer_dir = shared_path('tokenizers', 'roberta-base')
  out = tmp_path_factory.mktemp('roberta_tiny')
  torch.manual_seed(0)
  config = transformers.RobertaConfig(
      vocab_size=50265, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=32, max_position_embeddings=64, type_vocab_size=1, pad_token_id=1,
      bos_token_id=0, eos_token_id=2, initializer_range=1.0)
  transformers.RobertaForMaskedLM(config).save_pretrained(out)
  for name in ('vocab.json', 'merges.txt'):
    shutil.copy(tokenizer_dir / name, out / name)
  ref = _Reference(str(out))
  logits = ref.target_logits(_facts('dev', ref.words), None)
  islam = ref.tok.convert_tokens_to_ids('ĠIslam')
  others = ref.candidates[ref.candidates != islam]
  gap = logits[:, others].max(axis=1) - logits[:, islam]
  model = transformers.RobertaForMaskedLM.from_pretrained(out)
  with torch.no_grad():
    model.lm_head.bias[islam] += float(np.median(gap))
  model.save_pretrained(out)
  return out


def _run(module, *flags):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3'}
  env.pop('XLA_FLAGS', None)  # One device, as a plain user run.
  result = subprocess.run([sys.executable, '-m', f'prompt_recycling.{module}', *flags], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_train_command_then_eval_p_at_1_equals_transformers(roberta_dir, tmp_path):
  model_dir = tmp_path / 'run'
  common = ['--gin_file=gin_configs/models/hf/roberta_base.gin',
            f"--gin.ROBERTA_BASE_DIR='{roberta_dir}'",
            f"--gin.MIXTURE_OR_TASK_NAME='optiprompt_{RELATION}'",
            f"--gin.LAMA_DIR='{shared_path('lama')}'"]
  _run('train', *common, '--gin_file=gin_configs/runs/optiprompt_lama.gin',
       f"--gin.MODEL_DIR='{model_dir}'", '--gin.TRAIN_EPOCHS=1',
       '--gin.optiprompt_run.adamw.learning_rate=0.1', '--gin.train.progress=False')
  ref = _Reference(str(roberta_dir))
  train_facts, dev_facts = _facts('train', ref.words), _facts('dev', ref.words)
  per_epoch = -(-len(train_facts) // 16)
  every = per_epoch // 3
  exports = sorted(int(p.name.split('_')[1]) for p in (model_dir / 'numpy_checkpoints').iterdir())
  assert exports == sorted({*range(every, per_epoch + 1, every), per_epoch})  # 3 dev evaluations.
  best = json.loads((model_dir / 'best.json').read_text())
  assert best['step'] in exports and best['metrics']['num_examples'] == len(dev_facts)
  prompt = np.load(model_dir / 'best_prompt.npy')
  np.testing.assert_array_equal(
      prompt, np.load(model_dir / 'numpy_checkpoints' / f"checkpoint_{best['step']}" / 'prompt.npy'))
  assert prompt.shape == (5, 16)
  # The dev P@1 that chose the prompt, recomputed.
  dev_p1, _ = ref.precision(dev_facts, prompt)
  assert best['value'] == pytest.approx(dev_p1, abs=1e-9)
  assert 0 < best['value'] < 100

  from prompt_recycling import eval as eval_lib  # pylint: disable=g-import-not-at-top
  line = eval_lib.evaluate(**entry_point_arguments(
      'eval', [*common, '--gin_file=gin_configs/runs/optiprompt_lama_eval.gin',
               f"--gin.PROMPT_FILE='{model_dir / 'best_prompt.npy'}'"]))
  test_p1, n = ref.precision(_facts('test', ref.words), prompt)
  assert (line['split'], line['num_examples']) == ('test', n)
  assert line['p@1'] == pytest.approx(test_p1, abs=1e-9)
  assert 0 < line['p@1'] < 100
  # The prompt is what is scored: without it (the [V] slots left as <unk>) P@1 differs.
  assert ref.precision(_facts('test', ref.words), None)[0] != pytest.approx(test_p1)


def test_gpt2_queries_score_as_transformers_next_token(tmp_path):
  """GPT-2's path (soft [V]s and the manual template cut at [Y]): target logits = transformers'."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=50257, n_embd=8, n_layer=1, n_head=2, n_positions=64, initializer_range=1.0))
  model.save_pretrained(tmp_path)
  for name in ('vocab.json', 'merges.txt'):
    shutil.copy(shared_path('tokenizers', 'gpt2') / name, tmp_path / name)
  model.eval()
  frozen, family, name, tokenizer = optiprompt_run.load_model(str(tmp_path))
  assert name == 'gpt2' and family.config.dropout_rate == 0.0
  lama = shared_path('lama')
  vocab = optiprompt_run.read_common_vocab(str(lama), VOCAB_FILE)
  template = '[X] is the capital of [Y] .'  # relations.jsonl's P1376.
  prompt = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
  for vectors, manual in ((5, None), (0, template)):
    rel = optiprompt_run.load_relation(str(lama), 'P1376', name, tokenizer, vocab, ('dev',),
                                       vectors, manual)
    examples = rel.splits['dev'][:12]
    batch = optiprompt_run.converter(family, vectors)(examples, rel.lengths)
    args = {'prefix': jnp.broadcast_to(prompt, (len(examples), 5, 8))} if vectors else {}
    logits = np.asarray(family.logits(frozen, batch, args))
    at = batch['decoder_loss_weights'].argmax(axis=1)
    ours = logits[np.arange(len(examples)), at]
    for i, (subject, obj) in enumerate(_facts_of('P1376', 'dev', set(vocab))[:12]):
      text = template.split('[Y]')[0].replace('[X]', subject).rstrip() if manual else subject
      ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
      with torch.no_grad():
        embeds = model.transformer.wte(torch.tensor([ids + [0] * vectors]))
        if vectors:
          embeds[0, len(ids):] = torch.tensor(prompt)
        theirs = model(inputs_embeds=embeds).logits[0, -1].numpy()
      np.testing.assert_allclose(ours[i], theirs, rtol=1e-4, atol=1e-4)
      assert batch['decoder_target_tokens'][i, at[i]] == tokenizer.convert_tokens_to_ids(
          tokenizer.tokenize(' ' + obj))[0]
    # `precision` on the 8-device mesh (conftest), over these facts' objects as candidates,
    # batches of 8 (the second padded), counts what the logits above say.
    labels = batch['decoder_target_tokens'][np.arange(len(examples)), at]
    candidates = np.unique(labels)
    expected = np.mean(candidates[ours[:, candidates].argmax(axis=1)] == labels) * 100
    method = prompts.prompt_tuning(5) if vectors else prompts.no_prompt()
    steps = trainer.Steps(family, method, None, partitioning.make_mesh())
    got = optiprompt_run.precision(
        optiprompt_run.correct_fn(family, method), steps, {'prompt': prompt} if vectors else {},
        steps.put_frozen(frozen), examples, candidates, batch_size=8, lengths=rel.lengths,
        num_vectors=vectors)
    assert got == {'p@1': pytest.approx(expected), 'num_examples': 12}
    assert 0 < expected < 100, expected


def test_manual_template_queries(tmp_path):
  """The discrete baseline's inputs: [MASK] at [Y]; RoBERTa's '<mask>' takes the space before it."""
  pytest.importorskip('transformers')
  from prompt_recycling import family_tokenizers  # pylint: disable=g-import-not-at-top
  from prompt_recycling import optiprompt  # pylint: disable=g-import-not-at-top
  fact = optiprompt.Fact('Ankara', 'Turkey')
  template = '[X] is the capital of [Y] .'
  roberta = family_tokenizers.load_tokenizer(str(shared_path('tokenizers', 'roberta-base')),
                                             'roberta')
  v = json.loads((shared_path('tokenizers', 'roberta-base') / 'vocab.json').read_text())
  query = optiprompt.build_manual_query(fact, template, 'roberta', roberta)
  assert query.tokens == [v['<s>'], v['An'], v['k'], v['ara'], v['Ġis'], v['Ġthe'], v['Ġcapital'],
                          v['Ġof'], v['<mask>'], v['Ġ.'], v['</s>']]
  assert (query.prompt_positions, query.target_position) == ([], 8)
  assert query.label == v['ĠTurkey']
  gpt2 = family_tokenizers.load_tokenizer(str(shared_path('tokenizers', 'gpt2')), 'gpt2')
  v = json.loads((shared_path('tokenizers', 'gpt2') / 'vocab.json').read_text())
  query = optiprompt.build_manual_query(fact, template, 'gpt2', gpt2)
  assert query.tokens == [v['An'], v['k'], v['ara'], v['Ġis'], v['Ġthe'], v['Ġcapital'], v['Ġof']]
  assert query.target_position == 6  # 'Ġof' predicts the object; ' .' is cut (GPT-2 reads left).
  pieces = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'Ankara', 'is', 'the', 'capital', 'of',
            '.', 'Turkey']
  (tmp_path / 'vocab.txt').write_text('\n'.join(pieces) + '\n')
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'do_lower_case': False}))
  bert = family_tokenizers.load_tokenizer(str(tmp_path), 'bert')
  query = optiprompt.build_manual_query(fact, template, 'bert', bert)
  assert query.tokens == [2, 5, 6, 7, 8, 9, 4, 10, 3] and query.target_position == 6
  with pytest.raises(ValueError, match='needs both'):
    optiprompt.build_manual_query(fact, '[X] is nice .', 'bert', bert)
