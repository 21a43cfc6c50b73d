"""Late prompt tuning in its paper's setting (RoBERTa, GPT-2) through `python -m prompt_recycling.train`.

The gin files of the authors' RoBERTa-large run (models/roberta_large_lpt.gin +
runs/lpt_finetune_roberta.gin) drive the real entry point on a random-init
RoBERTa at a tiny size, written by transformers' `save_pretrained` with the
real tokenizer files (no download); only the sizes, LPT_LAYER, the learning
rate and the run length are overridden. Real SST-2 text goes through the
authors' template and the loss falls. The re-tokenisation of both families
(`train.family_example`) is checked against the authors' recipes spelt out
with the tokenizers here; the GPT-2 files parse in documented_gin_test.
"""
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, entry_point_arguments, shared_path
from prompt_recycling import train
from prompt_recycling.models import encoder
from prompt_recycling.models import family as families
from prompt_recycling.models import gpt2

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

# roberta-large's file at a tiny size: gin bindings over its sizes (config.json must agree).
SIZES = ['encoder.EncoderConfig.emb_dim=16', 'encoder.EncoderConfig.num_heads=2',
         'encoder.EncoderConfig.head_dim=8', 'encoder.EncoderConfig.mlp_dim=32',
         'encoder.EncoderConfig.num_layers=2', 'encoder.EncoderConfig.max_positions=130']


def _save_tiny_roberta(path):
  """A random-init RoBERTa MLM with the real vocabulary, written as a user's local HF directory."""
  torch.manual_seed(0)
  model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
      vocab_size=50265, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
      intermediate_size=32, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
      layer_norm_eps=1e-5, initializer_range=0.5))
  model.save_pretrained(path)
  for name in ('vocab.json', 'merges.txt'):  # roberta-large's tokenizer files are roberta-base's.
    shutil.copy(shared_path('tokenizers', 'roberta-base', name), path / name)


def _losses(log_text):
  """The training loss of every logged step ('[step] cross_ent_loss=..., loss=..., ...')."""
  return [float(x) for x in re.findall(r'\] cross_ent_loss=.*?\bloss=([0-9.eE+-]+)', log_text)]


def test_roberta_paper_setting_trains_through_the_entry_point(tmp_path, restore_task_settings):
  """60 steps of batch 8 on real SST-2 text; the mean loss of the last 10 steps is clearly lower.

  The random model is drawn with weights of std 0.5 (transformers' initializer_range; default
  0.02): at 0.02 its logits are near-uniform and no prompt moves them in a few steps. About
  30 CPU-seconds (54 to 77 s wall on the shared 2 cores), mostly start-up (TensorFlow for
  SeqIO) and compiling.
  """
  if importlib.util.find_spec('seqio') is None:  # The command reads the task (not imported here).
    pytest.skip('seqio is not installed: the train command reads SeqIO tasks.')
  checkpoint = tmp_path / 'hf'
  _save_tiny_roberta(checkpoint)
  model_dir = tmp_path / 'run'
  flags = ['--gin_file=gin_configs/models/roberta_large_lpt.gin',
           '--gin_file=gin_configs/runs/lpt_finetune_roberta.gin',
           f"--gin.MODEL_DIR='{model_dir}'", "--gin.MIXTURE_OR_TASK_NAME='glue_sst2_v2'",
           f"--gin.INITIAL_CHECKPOINT_PATH='{checkpoint}'",
           *[f'--gin.{b}' for b in SIZES], '--gin.LPT_LAYER=1',
           '--gin.TRAIN_STEPS=60', '--gin.BATCH_SIZE=8', "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 1}",
           '--gin.lpt.adamw.learning_rate=3e-2', '--gin.train.save_every=60',
           '--gin.train.log_every=1', '--gin.train.eval_examples=32',
           f"--gin.train.vocabulary_path='{shared_path('t5', 'sentencepiece.model')}'",
           f"--gin.train.data_dir='{shared_path()}'", "--gin.train.train_split='validation'"]
  # Fully optimised XLA (conftest sets -O0 for the test run): 60 steps of 50,265-way logits
  # gain more than the extra compiling costs (measured 47 -> 41 CPU-s, cold cache).
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3',
         'JAX_DISABLE_MOST_OPTIMIZATIONS': '0'}
  env.pop('XLA_FLAGS', None)
  result = subprocess.run([sys.executable, '-m', 'prompt_recycling.train', *flags], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = _losses((model_dir / 'log.txt').read_text())
  assert len(losses) == 60, losses
  # Measured: 11.50 -> 10.24 (-O0: 10.43; a batch's loss varies by about 0.5 with its labels).
  assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5, losses
  # The run file evaluates as the authors do (every 100 steps and at the end): rank
  # classification of ' terrible' / ' great' at <mask>, here on 32 validation sentences.
  assert re.search(r'\[60\] .*accuracy=', (model_dir / 'log.txt').read_text())
  exported = np.load(model_dir / 'numpy_checkpoints' / 'checkpoint_60' / 'params.npz')
  assert exported['up/kernel'].shape == (128, 5 * 16)  # NPG: 128 -> 5 prompt vectors of 16.
  # The eval command's gin files and flags score the exported late prompt on the same 32
  # sentences with the same template: the accuracy training logged at its last step. (Run in
  # this process, its start-up spared: eval's command line is tested in entry_points_test.)
  logged = float(re.search(r'\[60\] .*?accuracy=([0-9.]+)',
                           (model_dir / 'log.txt').read_text()).group(1))
  eval_flags = ['--gin_file=gin_configs/models/roberta_large_lpt.gin',
                '--gin_file=gin_configs/runs/prompt_eval.gin',
                "--gin.MIXTURE_OR_TASK_NAME='glue_sst2_v2'",
                f"--gin.INITIAL_CHECKPOINT_PATH='{checkpoint}'",
                *[f'--gin.{b}' for b in SIZES], '--gin.LPT_LAYER=1', '--gin.BATCH_SIZE=8',
                f"--gin.PROMPT_FILE='{model_dir / 'numpy_checkpoints' / 'checkpoint_60' / 'params.npz'}'",
                "--gin.EVAL_MODE='rank'", '--gin.evaluate.max_examples=32',
                "--gin.evaluate.template='{sentence} . It was {label} .'",
                f'--gin.evaluate.label_words={LABEL_WORDS}',
                f"--gin.evaluate.vocabulary_path='{shared_path('t5', 'sentencepiece.model')}'",
                f"--gin.evaluate.data_dir='{shared_path()}'"]
  from prompt_recycling import eval as eval_lib  # pylint: disable=g-import-not-at-top
  scored = eval_lib.evaluate(**entry_point_arguments('eval', eval_flags))
  assert scored['num_examples'] == 32 and scored['accuracy'] == pytest.approx(logged, abs=1e-3)


def _tokenizer(kind):
  if kind == 'roberta':
    return transformers.RobertaTokenizer.from_pretrained(str(shared_path('tokenizers', 'roberta-base')))
  return transformers.GPT2Tokenizer.from_pretrained(str(shared_path('tokenizers', 'gpt2')))


EXAMPLE = {'inputs_pretokenized': 'sst2 sentence: a gorgeous , witty , seductive movie . ',
           'targets_pretokenized': 'positive'}
LABEL_WORDS = {'negative': 'terrible', 'positive': 'great'}


def test_roberta_example_is_the_authors_masked_template():
  """encoder-only/data/process.py: tokenizer('{text_a} . It was <mask> .'), label id of ' great'."""
  tok = _tokenizer('roberta')
  family = families.MaskedLM(encoder.EncoderConfig(), mask_id=tok.mask_token_id, eos_id=2)
  ex = train.family_example(EXAMPLE, tok, family, '{sentence} . It was {label} .', LABEL_WORDS)
  expected = tok('a gorgeous , witty , seductive movie . . It was <mask> .')['input_ids']
  assert ex['inputs'] == expected
  assert ex['inputs'][0] == tok.bos_token_id and ex['inputs'][-1] == tok.eos_token_id
  assert ex['targets'] == [tok.convert_tokens_to_ids('\u0120great')]


def test_gpt2_example_is_the_authors_generative_format():
  """decoder-only: [bos] + ids(text) + ids(' It was') | ids(' great .') + [eos], tokenised apart."""
  tok = _tokenizer('gpt2')
  family = families.CausalLM(gpt2.GPT2Config(), eos_id=tok.eos_token_id)
  ex = train.family_example(EXAMPLE, tok, family, '{sentence} It was {label} .', LABEL_WORDS)
  text = tok('a gorgeous , witty , seductive movie .')['input_ids']
  desc = tok(' It was great .')['input_ids']
  assert ex['inputs'] + ex['targets'] == [tok.bos_token_id] + text + desc + [tok.eos_token_id]
  assert tok.decode(ex['targets']) == ' great .<|endoftext|>'


def test_bad_templates_and_label_words_are_refused():
  tok = _tokenizer('roberta')
  family = families.MaskedLM(encoder.EncoderConfig(), mask_id=tok.mask_token_id, eos_id=2)
  with pytest.raises(ValueError, match='must hold {label} once'):
    train.family_example(EXAMPLE, tok, family, '{sentence}', LABEL_WORDS)
  with pytest.raises(ValueError, match=r"no field\(s\) \['premise'\]"):
    train.family_example(EXAMPLE, tok, family, '{premise} {label}', LABEL_WORDS)
  with pytest.raises(ValueError, match='has no entry in train.label_words'):
    train.family_example(EXAMPLE, tok, family, '{sentence} {label}', {'negative': 'bad'})
  with pytest.raises(ValueError, match='is 4 tokens'):
    train.family_example(EXAMPLE, tok, family, '{sentence} {label}', {'positive': 'uncharismatic'})


def test_a_checkpoint_of_other_sizes_than_model_config_is_refused(tmp_path):
  _save_tiny_roberta(tmp_path)
  config = encoder.EncoderConfig(vocab_size=50265, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                                 num_layers=24, max_positions=130, type_vocab_size=1, pad_id=1,
                                 positions_from_padding=True, layer_norm_epsilon=1e-5,
                                 dropout_rate=0.1)
  with pytest.raises(ValueError, match=r"config.json does not describe MODEL_CONFIG: "
                                       r"\{'num_layers': \(2, 24\)\}"):
    train.load_model(str(tmp_path), config, seed=0)
  params, family = train.load_model(str(tmp_path), dataclasses.replace(config, num_layers=2), 0)
  assert isinstance(family, families.MaskedLM) and family.config.dropout_rate == 0.1
  assert family.mask_id == 50264 and params['token_embedder']['embedding'].shape == (50265, 16)


def _evaluate_family_dir(checkpoint, template, targets):
  """(metrics, the evaluated examples): SST-2 validation's seeded 24 sentences ranked through the
  evaluator a BERT-like / GPT-2 run uses (`evaluation.task_evaluator` with the run's re-tokeniser
  and `train.family_label_ids`), no prompt."""
  if importlib.util.find_spec('seqio') is None:
    pytest.skip('seqio is not installed: the evaluator reads the SeqIO task.')
  from prompt_recycling import data, evaluation, family_checkpoints, family_tokenizers  # pylint: disable=g-import-not-at-top
  from prompt_recycling import partitioning, prompts, trainer  # pylint: disable=g-import-not-at-top
  data.configure_tasks(str(shared_path('t5', 'sentencepiece.model')), str(shared_path()))
  params, family = family_checkpoints.load_model(str(checkpoint))
  tok = family_tokenizers.load_any(str(checkpoint))
  evaluate_fn = evaluation.task_evaluator(
      'glue_sst2_v2', split='validation', feature_lengths={'inputs': 64, 'targets': targets},
      mode='rank', batch_size=8, max_examples=24,
      convert=lambda ex: train.family_example(ex, tok, family, template, LABEL_WORDS),
      encode_label=train.family_label_ids(tok, family, template, LABEL_WORDS))
  steps = trainer.Steps(family, prompts.no_prompt(), None, partitioning.make_mesh(1))
  examples = data.sample(data.seqio_examples('glue_sst2_v2', 'validation', None, shuffle=False,
                                             per_host=False), 24)
  return evaluate_fn(steps, {}, steps.put_frozen(params), 0), examples


def _assert_metrics_of(metrics, scores, gold):
  """`metrics` are those of the independent `scores` [24, 2] ('terrible', 'great') and `gold`."""
  from tasks import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  expected = metrics_lib.rank_classification_metrics(scores, gold)
  assert metrics['num_examples'] == 24
  assert metrics['accuracy'] == pytest.approx(100 * np.mean(scores.argmax(1) == gold))
  for name in ('auc-roc', 'auc-pr'):
    assert metrics[name] == pytest.approx(expected[name], abs=1e-3), name
  assert 0 < np.mean(scores.argmax(1)) < 1, 'both labels predicted: the check can fail'


def test_roberta_evaluation_ranks_the_label_words_as_transformers_scores_them(tmp_path):
  """Evaluation during a RoBERTa run (`evaluation.task_evaluator` with the run's re-tokeniser and
  `train.family_label_ids`) gives the metrics of transformers' own masked-LM log-probabilities of
  ' terrible' / ' great' at <mask>, on 24 real SST-2 validation sentences (accuracy, F1 and the
  score-based AUCs, so every example's two scores count, not only its argmax)."""
  checkpoint = tmp_path / 'hf'
  _save_tiny_roberta(checkpoint)
  metrics, examples = _evaluate_family_dir(checkpoint, '{sentence} . It was {label} .', targets=1)

  # Independently: the same sentences through transformers' RobertaForMaskedLM.
  model = transformers.RobertaForMaskedLM.from_pretrained(str(checkpoint)).eval()
  torch_tok = _tokenizer('roberta')
  label_ids = [torch_tok.convert_tokens_to_ids('\u0120' + w) for w in ('terrible', 'great')]
  scores, gold = [], []
  for ex in examples:
    sentence = ex['inputs_pretokenized'].split('sst2 sentence: ', 1)[1].strip()
    ids = torch_tok(f'{sentence} . It was <mask> .', return_tensors='pt')['input_ids']
    with torch.no_grad():
      logits = model(ids).logits[0, int((ids[0] == torch_tok.mask_token_id).nonzero()[0, 0])]
    scores.append(torch.log_softmax(logits.double(), -1)[label_ids].numpy())
    gold.append(['negative', 'positive'].index(ex['targets_pretokenized']))
  _assert_metrics_of(metrics, np.stack(scores), gold)


def test_gpt2_evaluation_refuses_a_template_with_fields_after_the_label():
  tok = _tokenizer('gpt2')
  family = families.CausalLM(gpt2.GPT2Config(), eos_id=tok.eos_token_id)
  with pytest.raises(ValueError, match='fields after'):
    train.family_label_ids(tok, family, '{sentence1} ? {label} , {sentence2}', None)
  label_ids = train.family_label_ids(tok, family, '{sentence} It was {label} .', LABEL_WORDS)
  assert tok.decode(label_ids('positive')) == ' great .<|endoftext|>'


def test_gpt2_evaluation_ranks_the_label_descriptions_as_transformers_scores_them(tmp_path):
  """The GPT-2 side of the test above: ' terrible .' / ' great .' + end-of-text scored as the
  continuation of [bos] + the sentence + ' It was' (the authors' generative format), against
  transformers' GPT2LMHeadModel summed log-probabilities on 24 real SST-2 sentences."""
  checkpoint = tmp_path / 'hf'
  torch.manual_seed(0)
  transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=50257, n_embd=16, n_layer=2, n_head=2, n_positions=160,
      initializer_range=0.5)).save_pretrained(checkpoint)
  for name in ('vocab.json', 'merges.txt'):
    shutil.copy(shared_path('tokenizers', 'gpt2', name), checkpoint / name)
  metrics, examples = _evaluate_family_dir(checkpoint, '{sentence} It was {label} .', targets=4)

  model = transformers.GPT2LMHeadModel.from_pretrained(str(checkpoint)).eval()
  torch_tok = _tokenizer('gpt2')
  endings = [torch_tok(f' {w} .')['input_ids'] + [torch_tok.eos_token_id]
             for w in ('terrible', 'great')]
  scores, gold = [], []
  for ex in examples:
    sentence = ex['inputs_pretokenized'].split('sst2 sentence: ', 1)[1].strip()
    context = [torch_tok.bos_token_id] + torch_tok(f'{sentence} It was')['input_ids']
    row = []
    for ending in endings:
      ids = torch.tensor([context + ending])
      with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].double(), -1)
      row.append(sum(float(log_probs[len(context) - 1 + i, t]) for i, t in enumerate(ending)))
    scores.append(row)
    gold.append(['negative', 'positive'].index(ex['targets_pretokenized']))
  _assert_metrics_of(metrics, np.asarray(scores), gold)
