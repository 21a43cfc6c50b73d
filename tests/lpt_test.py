"""Late prompt tuning: the authors' generators (golden), the real training loop, where gradients
stop, instance dependence, files."""
import csv
import pathlib

import flax
import flax.linen
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from conftest import shared_path
from prompt_recycling import data
from prompt_recycling import lpt
from prompt_recycling import partitioning
from prompt_recycling import prompts
from prompt_recycling import trainer
from prompt_recycling.models import t5

# The brief's tiny T5 1.1: 4 encoder layers, so the default layer k = 2 has layers on both sides.
CONFIG = t5.T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                     num_encoder_layers=4, num_decoder_layers=2)
LENGTHS = {'inputs': 32, 'targets': 4}
BATCH = 8
PROMPT_LENGTH = 5
TRAIN_STEPS = 40


@pytest.fixture(scope='module')
def frozen():
  """Random-init T5 parameters as host numpy arrays."""
  return jax.device_get(trainer.random_frozen(t5.T5(CONFIG), jax.random.key(0), None))


@pytest.fixture(scope='module')
def sst2_examples():
  """The first 32 real SST-2 training sentences, tokenized as T5's 'sst2 sentence: ...' task."""
  try:
    from prompt_recycling import vocabulary  # pylint: disable=g-import-not-at-top
    encode = vocabulary.get_vocabulary(str(shared_path('t5', 'sentencepiece.model'))).encode
  except ImportError:  # Before the vocabulary module lands: SentencePiece itself.
    import sentencepiece  # pylint: disable=g-import-not-at-top
    encode = sentencepiece.SentencePieceProcessor(
        model_file=str(shared_path('t5', 'sentencepiece.model'))).encode
  examples = []
  with shared_path('sst2', 'train.tsv').open() as f:
    for row in csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE):
      label = ['negative', 'positive'][int(row['label'])]
      examples.append({'inputs': list(encode(f'sst2 sentence: {row["sentence"]}')) + [1],
                       'targets': list(encode(label)) + [1]})
      if len(examples) == 32:
        return examples
  return examples


class MemoryWriter:
  """Collects the loop's scalars (clu's MetricWriter interface)."""

  def __init__(self):
    self.losses = []

  def write_scalars(self, step, scalars):
    del step
    if 'loss' in scalars:
      self.losses.append(float(scalars['loss']))

  def flush(self):
    pass

  def close(self):
    pass


@pytest.fixture(scope='module')
def trained(frozen, sst2_examples, tmp_path_factory):
  """40 steps of LPT (generator with dropout, k = 2) through `trainer.train` on real SST-2."""
  model_dir = tmp_path_factory.mktemp('lpt_run')
  before = jax.tree.map(np.copy, frozen)
  method = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG, dropout_rate=0.1)
  writer = MemoryWriter()

  def make_batches(start):
    stream = data.shuffled_epochs(sst2_examples, seed=0, start=start * BATCH)
    return data.batches(stream, BATCH, LENGTHS)

  state = trainer.train(
      model=t5.T5(CONFIG), frozen=frozen, method=method,
      tx=lpt.adamw(learning_rate=1e-2, total_steps=None),
      mesh=partitioning.make_mesh(1, jax.devices()[:1]), make_batches=make_batches,
      total_steps=TRAIN_STEPS, model_dir=str(model_dir), run_info={'test': 'lpt'},
      batch_size=BATCH, save_every=TRAIN_STEPS, log_every=1, progress=False, writer=writer)
  return {'state': state, 'losses': writer.losses, 'before': before, 'model_dir': model_dir,
          'method': method}


def test_training_lowers_the_loss_and_leaves_the_frozen_model_bit_identical(trained, frozen):
  losses = trained['losses']
  assert len(losses) == TRAIN_STEPS
  # A random frozen T5 caps what any prompt can do (its near-uniform output layer
  # keeps the loss near ln(32128) = 10.4); 40 steps take off about 0.7 nats.
  assert np.mean(losses[-8:]) < losses[0] - 0.4, losses
  jax.tree.map(np.testing.assert_array_equal, trained['before'], frozen)
  params = trained['state'].params
  shapes = jax.tree.map(np.shape, jax.device_get(params))
  assert shapes == {'down': {'kernel': (16, 128), 'bias': (128,)},
                    'up': {'kernel': (128, PROMPT_LENGTH * 16), 'bias': (PROMPT_LENGTH * 16,)}}


def test_checkpoint_export_reloads_and_evaluates_identically(trained, frozen, sst2_examples,
                                                             tmp_path):
  path = tmp_path / 'generator.npz'
  assert lpt.export_checkpoint_params(str(trained['model_dir']), str(path)) == TRAIN_STEPS
  params = jax.device_get(trained['state'].params)
  jax.tree.map(np.testing.assert_array_equal, lpt.load_params(str(path)), params)

  mesh = partitioning.make_mesh(1, jax.devices()[:1])
  batch = partitioning.shard_batch(data.to_batch(sst2_examples[:BATCH], LENGTHS), mesh)
  steps = trainer.Steps(t5.T5(CONFIG), trained['method'], None, mesh)
  frozen_on_mesh = steps.put_frozen(frozen)
  in_memory = steps.eval(trainer.put_on_mesh(params, steps.params_shardings), frozen_on_mesh, batch)
  # What eval.py / infer.py do with PROMPT_FILE = the .npz: the method loads it at init.
  reloaded_method = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG, init_file=str(path))
  reload_steps = trainer.Steps(t5.T5(CONFIG), reloaded_method, None, mesh)
  reloaded = reload_steps.init_params(jax.random.key(7), frozen_on_mesh)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(reloaded), params)
  from_file = reload_steps.eval(reloaded, frozen_on_mesh, batch)
  assert float(from_file['cross_ent_sum']) == float(in_memory['cross_ent_sum'])
  # Greedy decoding (KV cache) runs the same hook: the tokens are those the full model
  # predicts teacher-forced, with the generator read from the file, and those in memory.
  predicted = np.asarray(reload_steps.predict(reloaded, frozen_on_mesh, batch, 3))
  np.testing.assert_array_equal(predicted, np.asarray(steps.predict(
      trainer.put_on_mesh(params, steps.params_shardings), frozen_on_mesh, batch, 3)))
  encoder_args = reloaded_method.encoder_args(jax.device_get(reloaded), BATCH)
  enc = data.to_batch(sst2_examples[:BATCH], LENGTHS)['encoder_input_tokens']

  def teacher_forced_greedy(**hook):
    forward = jax.jit(lambda dec: t5.T5(CONFIG).apply({'params': frozen}, enc, dec, **hook))
    tokens = np.zeros((BATCH, 3), np.int32)
    for step in range(3):
      decoder_inputs = np.concatenate([np.zeros((BATCH, 1), np.int32), tokens[:, :-1]], axis=1)
      tokens[:, step] = np.asarray(forward(decoder_inputs))[:, step].argmax(-1)
    ended = np.cumsum(tokens == 1, axis=1) - (tokens == 1) > 0  # Strictly after an EOS: padding.
    return np.where(ended, 0, tokens)

  np.testing.assert_array_equal(predicted, teacher_forced_greedy(**encoder_args))
  # Without the late prompt the model decodes something else: the hook is really used.
  assert (teacher_forced_greedy() != predicted).any()


GOLDEN = pathlib.Path(__file__).parent / 'testdata' / 'fidelity' / 'lpt_generators.npz'


@pytest.mark.parametrize('kind', lpt.GENERATORS)
def test_generators_match_the_authors_pytorch_modules(kind):
  """Same weights, same hidden states (rows of 7, 5 and 2 valid tokens, P = 3): same prompts."""
  golden = np.load(GOLDEN)
  params = {name: {'kernel': golden[f'{kind}_{name}_kernel'], 'bias': golden[f'{kind}_{name}_bias']}
            for name in ('down', 'up')}
  generator = lpt.PromptGenerator(3, kind, bottleneck=4)
  prompt = generator.apply({'params': params}, golden['hidden'], golden['mask'])
  np.testing.assert_allclose(prompt, golden[f'{kind}_prompt'], rtol=1e-5, atol=1e-6)
  # Padding beyond the valid tokens changes nothing (the pooling reads valid tokens only).
  padded = generator.apply({'params': params}, np.pad(golden['hidden'], ((0, 0), (0, 4), (0, 0)),
                                                      constant_values=9.0),
                           np.pad(golden['mask'], ((0, 0), (0, 4))))
  np.testing.assert_allclose(padded, prompt, rtol=1e-6, atol=1e-6)


def test_generator_init_is_pytorch_linear_default():
  """Kernels and biases U(+-1/sqrt(fan_in)), as torch.nn.Linear (std bound / sqrt(3))."""
  params = lpt.PromptGenerator(PROMPT_LENGTH, bottleneck=128).init(
      jax.random.key(0), jnp.zeros((1, 1, 256)), jnp.ones((1, 1), bool))['params']
  params = flax.linen.unbox(params)
  for name, fan_in in (('down', 256), ('up', 128)):
    bound = 1 / np.sqrt(fan_in)
    for leaf in ('kernel', 'bias'):
      x = np.asarray(params[name][leaf])
      assert np.abs(x).max() <= bound and np.abs(x).max() > 0.9 * bound, (name, leaf)
    np.testing.assert_allclose(np.asarray(params[name]['kernel']).std(), bound / np.sqrt(3),
                               rtol=0.05)


def test_generator_reads_the_next_layers_frozen_norm(frozen, sst2_examples):
  """T5 1.1 is pre-LN: the generator sees layer k's pre-attention norm of the stream, by default."""
  model = t5.T5(CONFIG)
  k = CONFIG.num_encoder_layers // 2
  tokens = data.to_batch(sst2_examples[:2], LENGTHS)['encoder_input_tokens']
  scaled = jax.tree.map(np.array, frozen)
  scaled['encoder'][f'layers_{k}']['pre_attention_layer_norm']['scale'] *= 3.0
  params = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG).init(jax.random.key(1), frozen)

  def prompts_for(normalize):
    method = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG, normalize_input=normalize)
    return jax.jit(lambda f: lpt.late_prompts(method, model, f, params, tokens))

  for normalize, changes in ((True, True), (False, False)):
    fn = prompts_for(normalize)
    assert (np.abs(np.asarray(fn(frozen)) - np.asarray(fn(scaled))).max() > 1e-3) == changes

  @jax.jit
  def arriving(f):
    """The hidden states and mask arriving at layer k."""
    seen = {}

    def capture(hidden, mask):
      seen['hidden'], seen['mask'] = hidden, mask
      return hidden, mask
    model.apply({'params': f}, tokens, hook=capture, hook_layer=k, method=t5.T5.encode)
    return seen['hidden'], seen['mask']

  # Recomputed by hand: those states RMS-normalised with layer k's scale, then the generator.
  hidden, mask = arriving(scaled)
  h = np.asarray(hidden, np.float64)
  h = h / np.sqrt(np.mean(h ** 2, -1, keepdims=True) + CONFIG.layer_norm_epsilon)
  h = h * scaled['encoder'][f'layers_{k}']['pre_attention_layer_norm']['scale']
  expected = lpt.PromptGenerator(PROMPT_LENGTH).apply({'params': params}, h.astype(np.float32), mask)
  np.testing.assert_allclose(prompts_for(True)(scaled), expected, rtol=1e-4, atol=1e-5)


def _prompt_sum_grad(frozen, method, params, tokens, weights):
  """d sum(weights * late prompt) / d frozen parameters."""
  def f(frozen):
    return jnp.sum(weights * lpt.late_prompts(method, t5.T5(CONFIG), frozen, params, tokens))
  return jax.jit(jax.grad(f))(frozen)


def _without_stop_gradient(method, hook_layer):
  """The same generator, but reading the hidden states with their gradient (the control)."""
  generator = lpt.PromptGenerator(PROMPT_LENGTH)  # Raw states (no norm): the control.

  def encoder_args(params, batch_size):
    del batch_size
    hook = lambda h, m: lpt.insert(generator.apply({'params': params}, h, m), h, m)
    return {'hook': hook, 'hook_layer': hook_layer}
  return method._replace(encoder_args=encoder_args)


def test_late_prompt_gets_no_gradient_from_below_the_insertion_layer(frozen, sst2_examples):
  k = CONFIG.num_encoder_layers // 2
  method = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG)
  params = method.init(jax.random.key(1), frozen)
  tokens = data.to_batch(sst2_examples[:4], LENGTHS)['encoder_input_tokens']
  weights = jax.random.normal(jax.random.key(2), (4, PROMPT_LENGTH, CONFIG.emb_dim))
  below = ['token_embedder', 'encoder/relpos_bias'] + [f'encoder/layers_{i}' for i in range(k)]

  def norms(grads):
    """Summed |gradient| per top-level module or per encoder/decoder layer."""
    out = {}
    for name, g in flax.traverse_util.flatten_dict(grads, sep='/').items():
      parts = name.split('/')
      group = '/'.join(parts[:2]) if parts[0] in ('encoder', 'decoder') else parts[0]
      out[group] = out.get(group, 0.0) + float(jnp.sum(jnp.abs(g)))
    return out

  # LPT: the prompt (and so the generator's whole gradient path) is exactly
  # independent of the input embeddings and of every parameter below layer k.
  lpt_norms = norms(_prompt_sum_grad(frozen, method, params, tokens, weights))
  assert all(v == 0.0 for v in lpt_norms.values()), lpt_norms
  # Control: without the stop_gradient the same prompt depends on exactly those.
  control = norms(_prompt_sum_grad(frozen, _without_stop_gradient(method, k), params, tokens,
                                   weights))
  assert all(control[b] > 0 for b in below), control
  assert all(control[f'encoder/layers_{i}'] == 0 for i in range(k, CONFIG.num_encoder_layers))


def _count_dots(jaxpr) -> int:
  """dot_general equations in a jaxpr, sub-jaxprs (pjit, custom_jvp, ...) included."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == 'dot_general'
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if hasattr(sub, 'consts') and hasattr(sub, 'jaxpr'):
          count += _count_dots(sub.jaxpr)
        elif hasattr(sub, 'eqns'):
          count += _count_dots(sub)
  return count


def _backward_dots(loss_fn, args) -> int:
  """dot_generals of the backward pass of `loss_fn` at `args`, traced only (never run).

  The traced forward-and-backward holds the forward once, so the backward's
  count is the difference.
  """
  both = jax.make_jaxpr(lambda a: jax.vjp(loss_fn, a)[1](jnp.ones((), jnp.float32)))(args)
  return _count_dots(both.jaxpr) - _count_dots(jax.make_jaxpr(loss_fn)(args).jaxpr)


def test_backward_pass_covers_exactly_the_layers_from_the_insertion_layer_up(frozen, sst2_examples):
  """JAX never computes the backward pass of layers below k (the paper's training-cost saving)."""
  model = t5.T5(CONFIG)
  batch = data.to_batch(sst2_examples[:2], LENGTHS)
  num_layers = CONFIG.num_encoder_layers

  def backward_dots(hook_layer):
    method = lpt.late_prompt_tuning(PROMPT_LENGTH, hook_layer, model_config=CONFIG)

    def loss(params):
      logits = model.apply({'params': frozen}, batch['encoder_input_tokens'],
                           batch['decoder_input_tokens'], **method.encoder_args(params, 2))
      return trainer.cross_entropy(logits, batch['decoder_target_tokens'],
                                   batch['decoder_loss_weights'])[0]
    return _backward_dots(loss, jax.eval_shape(method.init, jax.random.key(1), frozen))

  # One encoder layer's backward with respect to its input (no weight gradients).
  layer = t5.EncoderLayer(CONFIG)
  bias = jnp.zeros((1, CONFIG.num_heads, 8, 8))
  per_layer = _backward_dots(
      lambda x: jnp.sum(layer.apply({'params': frozen['encoder']['layers_0']}, x, bias, True)),
      jax.ShapeDtypeStruct((2, 8, CONFIG.emb_dim), jnp.float32))
  assert per_layer > 0

  counts = {k: backward_dots(k) for k in range(num_layers + 1)}
  for k, count in counts.items():
    assert count == counts[num_layers] + (num_layers - k) * per_layer, (counts, per_layer)


def test_prompts_depend_on_the_instance_and_only_on_it(frozen, sst2_examples):
  model = t5.T5(CONFIG)
  method = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG)
  params = method.init(jax.random.key(1), frozen)
  late_prompts = jax.jit(lambda tokens: lpt.late_prompts(method, model, frozen, params, tokens))
  examples = sst2_examples[:4] + sst2_examples[:1]  # Row 4 repeats row 0.
  tokens = data.to_batch(examples, LENGTHS)['encoder_input_tokens']
  prompt = np.asarray(late_prompts(tokens))
  assert prompt.shape == (5, PROMPT_LENGTH, CONFIG.emb_dim)
  for i in range(4):
    for j in range(i):
      assert np.max(np.abs(prompt[i] - prompt[j])) > 1e-3, (i, j)
  np.testing.assert_allclose(prompt[4], prompt[0], rtol=0, atol=1e-6)
  # Reordering the batch reorders the prompts; nothing leaks between rows.
  order = np.array([3, 1, 4, 0, 2])
  np.testing.assert_allclose(late_prompts(tokens[order]), prompt[order], rtol=0, atol=1e-6)
  # Pooling sees valid tokens only: more padding leaves the prompt unchanged.
  padded = np.pad(tokens, ((0, 0), (0, 16)))
  np.testing.assert_allclose(late_prompts(padded), prompt, rtol=0, atol=1e-5)

  static = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG, static=True)
  static_params = static.init(jax.random.key(1), frozen)
  shared = jax.jit(lambda tokens: lpt.late_prompts(static, model, frozen, static_params, tokens))(
      tokens)
  np.testing.assert_array_equal(shared, np.broadcast_to(static_params['prompt'], shared.shape))


def test_generator_dropout_only_when_the_step_has_a_dropout_rng(frozen, sst2_examples):
  model = t5.T5(CONFIG)
  method = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG, dropout_rate=0.5)
  params = method.init(jax.random.key(1), frozen)
  tokens = data.to_batch(sst2_examples[:2], LENGTHS)['encoder_input_tokens']
  args = method.encoder_args(params, 2)

  def inserted(rng):
    """The prompt the hook inserts in a (dropout-enabled when rng is given) encoder call."""
    captured = {}

    def hook(hidden, mask):
      new_hidden, new_mask = args['hook'](hidden, mask)
      captured['prompt'] = new_hidden[:, :PROMPT_LENGTH]
      return new_hidden, new_mask

    @jax.jit
    def run(rng):
      kwargs = {'enable_dropout': True, 'rngs': {'dropout': rng}} if rng is not None else {}
      model.apply({'params': frozen}, tokens, hook=hook, hook_layer=args['hook_layer'],
                  method=t5.T5.encode, **kwargs)
      return captured['prompt']
    return np.asarray(run(rng))

  deterministic = np.asarray(jax.jit(
      lambda: lpt.late_prompts(method, model, frozen, params, tokens))())
  np.testing.assert_array_equal(inserted(None), deterministic)  # Eval, score, predict.
  a, b = inserted(jax.random.key(3)), inserted(jax.random.key(4))
  assert 0.3 < np.mean(a == 0) < 0.7 and np.mean(a != b) > 0.3  # A fresh mask per step.
  kept = a != 0
  np.testing.assert_allclose(a[kept], 2 * deterministic[kept], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('layer', [-1, 5], ids=['negative', 'past_the_last'])
def test_insertion_layer_outside_the_encoder_is_an_error(layer, frozen):
  with pytest.raises(ValueError, match=rf'insertion layer {layer} is outside \[0, 4\] for a '
                                       r'4-layer encoder'):
    lpt.late_prompt_tuning(PROMPT_LENGTH, layer, model_config=CONFIG)
  method = lpt.late_prompt_tuning(PROMPT_LENGTH, layer)  # Without the config: caught at init.
  with pytest.raises(ValueError, match=rf'layer {layer} is outside \[0, 4\] for a 4-layer'):
    method.init(jax.random.key(0), frozen)
  with pytest.raises(ValueError, match='needs hook_layer or model_config'):
    lpt.late_prompt_tuning(PROMPT_LENGTH)
  # Both ends are valid: before the first layer and after the last.
  for k in (0, 4):
    assert lpt.late_prompt_tuning(1, k, model_config=CONFIG).encoder_args({}, 1)['hook_layer'] == k
  assert lpt.late_prompt_tuning(1, model_config=CONFIG).encoder_args({}, 1)['hook_layer'] == 2


def test_params_file_round_trips_exactly_and_wrong_shapes_are_refused(frozen, tmp_path):
  method = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG)
  params = jax.device_get(method.init(jax.random.key(1), frozen))
  params = jax.tree.map(lambda x: (x + np.random.default_rng(0).normal(size=x.shape)).astype(np.float32), params)
  path = tmp_path / 'sub' / 'generator.npz'
  lpt.save_params(params, str(path))
  with np.load(path) as f:
    assert sorted(f.files) == ['down/bias', 'down/kernel', 'up/bias', 'up/kernel']
  loaded = lpt.load_params(str(path))
  jax.tree.map(np.testing.assert_array_equal, loaded, params)  # Exact, dtype kept.
  from_file = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG, init_file=str(path))
  jax.tree.map(np.testing.assert_array_equal, from_file.init(jax.random.key(9), frozen), loaded)

  longer = lpt.late_prompt_tuning(PROMPT_LENGTH + 1, model_config=CONFIG, init_file=str(path))
  with pytest.raises(ValueError, match=r"generator.npz holds .*'up/kernel': \(128, 80\).*need.*"
                                       r"'up/kernel': \(128, 96\)"):
    longer.init(jax.random.key(0), frozen)
  np.savez(tmp_path / 'nan.npz', **{'down/kernel': np.full((2, 2), np.nan)})
  with pytest.raises(ValueError, match='NaN'):
    lpt.load_params(str(tmp_path / 'nan.npz'))

  # A static late prompt also loads from a prompt-tuning style .npy.
  prompt = np.random.default_rng(1).normal(size=(PROMPT_LENGTH, CONFIG.emb_dim)).astype(np.float32)
  prompts.save_prompt(prompt, str(tmp_path / 'prompt.npy'))
  static = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG, static=True,
                                  init_file=str(tmp_path / 'prompt.npy'))
  np.testing.assert_array_equal(static.init(jax.random.key(0), frozen)['prompt'], prompt)


def test_generator_is_replicated_on_a_sharded_mesh():
  mesh = partitioning.make_mesh(2)  # 4 x 2 over the 8 forced host devices.
  for static in (False, True):
    method = lpt.late_prompt_tuning(PROMPT_LENGTH, model_config=CONFIG, static=static)
    steps = trainer.Steps(t5.T5(CONFIG), method, None, mesh)
    shardings = jax.tree.leaves(steps.params_shardings)
    assert shardings and all(s.is_fully_replicated for s in shardings)


def test_adamw_schedule_warms_up_then_decays_and_skips_biases():
  tx = lpt.adamw(learning_rate=1.0, weight_decay=0.5, warmup_fraction=0.1, total_steps=100,
                 max_grad_norm=None)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  moves = []
  for _ in range(100):  # Zero gradients: only weight decay moves the parameters.
    updates, state = tx.update(zeros, state, params)
    moves.append(float(-updates['kernel'][0, 0]))
    assert float(updates['bias'][0]) == 0.0
  lrs = np.asarray(moves) / 0.5
  np.testing.assert_allclose(lrs[:10], np.arange(10) / 10, atol=1e-6)  # Warm-up from 0.
  np.testing.assert_allclose(lrs[10:], (100 - np.arange(10, 100)) / 90, atol=1e-6)


@pytest.mark.parametrize('size,layers', [('tiny', 2), ('small', 8), ('base', 12), ('large', 24),
                                         ('xl', 24), ('xxl', 24)])
def test_gin_files_build_the_method_at_the_middle_layer(size, layers):
  from prompt_recycling import gin_setup  # pylint: disable=g-import-not-at-top,unused-import
  gin.clear_config()
  try:
    gin.add_config_file_search_path(str(REPO))
    # `train` is registered only by the entry point, so its bindings are skipped here.
    gin.parse_config_files_and_bindings(
        [str(REPO / f'gin_configs/models/t5_1_1_{size}_lpt.gin'),
         str(REPO / 'gin_configs/runs/lpt_finetune.gin')],
        ["MODEL_DIR = '/tmp/unused'", "MIXTURE_OR_TASK_NAME = 'glue_sst2_v2'",
         'INITIAL_CHECKPOINT_PATH = None'], skip_unknown=True)
    method = gin.get_configurable('lpt.late_prompt_tuning')()
    assert method.encoder_args({}, 1)['hook_layer'] == layers // 2
    tx = gin.get_configurable('lpt.adamw')()
    assert gin.query_parameter('lpt.adamw.learning_rate') == 1e-3
    tx.init({'kernel': jnp.ones((2, 2))})
  finally:
    gin.clear_config()
