"""The released lm100k Base prompts mrpc.npy and rte.npy, through the project's own loader and task.

They were tuned on T5 1.1 lm100k Base (`../shared/data/pretrained_prompts/t5_1_1_lm100k_base`,
README: MRPC 89.7 F1 / 85.3 accuracy, RTE 68.6 accuracy). That checkpoint is not here, so their
accuracy cannot be measured (REPRODUCTION.md). What can be: each loads through
`models/t5_1_1_lm100k_base_prompt.gin` + `prompts/from_file.gin` into a prompt-tuning run on a
model of Base's width (768; one encoder and one decoder layer, random init: cheap, and the prompt
meets the same embedding shapes), the taskless GLUE task it was trained for formats the inputs,
and greedy decoding goes through the task's postprocessor and metrics. GLUE RTE's examples are
the real RTE validation rows (local as SuperGLUE's release: same sentence pairs and labels);
MRPC has no local release, so its two pairs are written here.
"""
import gin
import jax
import numpy as np
import pytest

from conftest import shared_path
from prompt_recycling import evaluation
from prompt_recycling import gin_setup
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import train as train_lib
from prompt_recycling import trainer
from prompt_recycling.models import t5

tf = pytest.importorskip('tensorflow')
pytest.importorskip('seqio')
import tasks  # pylint: disable=g-import-not-at-top

MRPC_ROWS = [  # GLUE MRPC's fields; label 1 = equivalent.
    {'sentence1': 'The company said profits rose 5 percent in the third quarter.',
     'sentence2': 'Third-quarter profits were up 5 percent, the company said.', 'label': 1,
     'idx': 0},
    {'sentence1': 'The senator arrived in Boston on Monday.',
     'sentence2': 'Shares of the bank fell sharply after the report.', 'label': 0, 'idx': 1},
]


def _rte_rows(n):
  """The first `n` real RTE validation rows, rekeyed to GLUE RTE's fields (0 = entailment)."""
  import json  # pylint: disable=g-import-not-at-top
  lines = shared_path('superglue', 'RTE', 'val.jsonl').read_text().splitlines()[:n]
  return [{'sentence1': r['premise'], 'sentence2': r['hypothesis'],
           'label': ['entailment', 'not_entailment'].index(r['label']), 'idx': r['idx']}
          for r in map(json.loads, lines)]


@gin.configurable('released_prompt_run')
def _run(model_config, prompt_method):
  return model_config, prompt_method


def _base_width_run(prompt_file):
  """(T5Config, PromptMethod) from the lm100k Base model file and `prompts/from_file.gin`."""
  gin.clear_config()
  try:
    gin_setup.parse(['gin_configs/models/t5_1_1_lm100k_base_prompt.gin',
                     'gin_configs/prompts/from_file.gin'],
                    [f"PROMPT_FILE = '{prompt_file}'",
                     't5.T5Config.num_encoder_layers = 1', 't5.T5Config.num_decoder_layers = 1',
                     "t5.T5Config.dtype = 'float32'",  # bfloat16 matmuls are slow on CPUs.
                     'released_prompt_run.model_config = %MODEL_CONFIG',
                     'released_prompt_run.prompt_method = %PROMPT_METHOD'])
    return _run()  # pylint: disable=no-value-for-parameter
  finally:
    gin.clear_config()


def _examples(task, rows):
  """`rows` (the task's source fields) through the task's own preprocessors, tokenized."""
  ds = tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in rows[0]})
  ds = task.preprocess_postcache(task.preprocess_precache(ds), sequence_length=None)
  return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()}
          for ex in ds.as_numpy_iterator()]


@pytest.fixture(scope='module')
def vocab():
  tasks.set_vocabulary(str(shared_path('t5', 'sentencepiece.model')))
  yield tasks.VOCABULARY
  tasks.set_vocabulary(None)


@pytest.mark.parametrize('name,task_name,rows', [
    ('mrpc', 'glue_mrpc_v2_taskless', MRPC_ROWS),
    ('rte', 'glue_rte_v2_taskless', None),
])
def test_released_prompt_loads_and_decodes_through_its_task(name, task_name, rows, vocab):
  path = shared_path('pretrained_prompts', 't5_1_1_lm100k_base', f'{name}.npy')
  released = np.load(path)
  assert released.shape == (100, 768)
  config, method = _base_width_run(path)
  assert config.emb_dim == 768 and config.vocab_size == 32128
  steps = trainer.Steps(t5.T5(config), method, None, partitioning.make_mesh(1))
  frozen = steps.put_frozen(train_lib.load_frozen(None, config, seed=0))
  params = steps.init_params(jax.random.key(0), frozen)
  np.testing.assert_array_equal(np.asarray(params['prompt']), released)  # The file, unchanged.

  task = tasks.get_task(task_name)
  examples = _examples(task, rows or _rte_rows(4))
  # The taskless format the prompts were trained on: no task-name token first.
  assert all(ex['inputs_pretokenized'].startswith('sentence1: ') for ex in examples)
  lengths = evaluation.eval_lengths(examples, {'inputs': 512, 'targets': 8}, task_name)
  decoded = evaluation.greedy_predict(steps, params, frozen, examples, batch_size=8,
                                      feature_lengths=lengths)
  assert len(decoded) == len(examples)
  assert all(len(d) <= lengths['targets'] for d in decoded)
  predictions = [task.postprocess_fn(vocab.decode([int(t) for t in d]), example=ex,
                                     is_target=False) for d, ex in zip(decoded, examples)]
  assert set(predictions) <= {-1, 0, 1}  # A class id, or -1 for an output that is no label.
  metrics = evaluation.evaluate(
      steps, params, frozen, examples, mode='decode', batch_size=8, feature_lengths=lengths,
      decode=lambda ids: vocab.decode([int(t) for t in ids]), metric_fns=task.metric_fns,
      postprocess=task.postprocess_fn)
  expected = {'mrpc': {'f1', 'accuracy'}, 'rte': {'accuracy'}}[name]
  assert set(metrics) == expected | {'num_examples'} and metrics['num_examples'] == len(examples)
  assert all(0.0 <= metrics[k] <= 100.0 for k in expected)


def test_a_released_prompt_on_another_width_is_refused():
  path = shared_path('pretrained_prompts', 't5_1_1_lm100k_base', 'rte.npy')
  with pytest.raises(ValueError, match=r'rte\.npy holds an array of shape \(100, 768\), but this '
                     r'model needs \[prompt_length, embed\] = \(100, 512\)'):
    prompts.from_file(str(path))(jax.random.key(0), None, (100, 512))
