"""The MODEL_DIR of a run: train-state checkpoints, numpy prompt exports, identity.

Layout (t5x- and prompt-tuning-compatible where they define one):

  MODEL_DIR/run_info.json                 what this run trains (model config, prompt method)
  MODEL_DIR/config.gin                    the operative gin config (written by the entry point)
  MODEL_DIR/checkpoints/<step>/           orbax: train state + data position, written atomically
  MODEL_DIR/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt
                                          the prompt-tuning repo's export name, read by recyclers
  MODEL_DIR/numpy_checkpoints/checkpoint_<step>/prompt.npy
  MODEL_DIR/numpy_checkpoints/checkpoint_<step>/params.npz  (other prompt methods, e.g. LPT)
  MODEL_DIR/best.json                     best eval metric so far and its step
"""
import dataclasses
import json
import pathlib
import threading
from typing import Any, Dict, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from prompt_recycling import prompts

PROMPT_EXPORT_NAME = 'encoder.prompt.prompt.prompt'


class RunMismatchError(ValueError):
  """MODEL_DIR holds a run of a different model or prompt method."""


def _jsonable(value: Any) -> Any:
  """Tuples -> lists, config dataclasses -> dicts of their fields, the rest as `str`."""
  def default(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
      return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return str(obj)
  return json.loads(json.dumps(value, default=default))


def _field_defaults(config: Any) -> Dict[str, Any]:
  """A config dataclass's fields that have a default, as JSON values."""
  out = {}
  for field in dataclasses.fields(config):
    if field.default is not dataclasses.MISSING:
      out[field.name] = field.default
    elif field.default_factory is not dataclasses.MISSING:  # pytype: disable=attribute-error
      out[field.name] = field.default_factory()  # pytype: disable=attribute-error
  return _jsonable(out)


def _differences(found: Dict[str, Any], requested: Dict[str, Any],
                 defaults: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
  """{name: (found, requested)} of what differs; configs compared field by field.

  For an entry that is a config dataclass (`defaults` holds its field
  defaults), a field the recorded run lacks counts as equal when the request
  leaves it at its default (the field was added to the config since that run
  started, and at its default it does not change the model), and a recorded
  field the config no longer has is not compared.
  """
  diff = {}
  for key in sorted(set(found) | set(requested)):
    f, r = found.get(key), requested.get(key)
    if key in defaults and isinstance(f, dict) and isinstance(r, dict):
      for name in sorted(r):
        if name not in f:
          if name not in defaults[key] or r[name] != defaults[key][name]:
            diff[f'{key}.{name}'] = ('<absent>', r[name])
        elif f[name] != r[name]:
          diff[f'{key}.{name}'] = (f[name], r[name])
    elif f != r:
      diff[key] = (f, r)
  return diff


def claim(model_dir: str, run_info: Dict[str, Any]) -> None:
  """Records what this run trains, or refuses a MODEL_DIR that holds another run.

  Resuming into a directory written by a different model (another size, a
  different prompt length) would silently mix two runs, so it is an error.
  Config dataclasses in `run_info` (`T5Config`, ...) are recorded as dicts of
  their fields and compared field by field (`_differences`), so a field added
  to a config later does not make an existing MODEL_DIR "another run".
  """
  path = pathlib.Path(model_dir) / 'run_info.json'
  defaults = {k: _field_defaults(v) for k, v in run_info.items()
              if dataclasses.is_dataclass(v) and not isinstance(v, type)}
  run_info = _jsonable(run_info)
  if path.exists():
    found = json.loads(path.read_text())
    diff = _differences(found, run_info, defaults)
    if diff:
      raise RunMismatchError(
          f'{model_dir} already holds a different run (see {path}); refusing to overwrite it. '
          f'Differences (found, requested): {diff}. Use a new MODEL_DIR.')
    return
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run_info, indent=2, sort_keys=True))


def checkpoint_manager(model_dir: str, *, keep: Optional[int] = 3) -> ocp.CheckpointManager:
  """Orbax manager over MODEL_DIR/checkpoints keeping the newest `keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(pathlib.Path(model_dir).absolute() / 'checkpoints', options=options)


# Orbax numbers a save's cross-layer signals by one process-wide "current
# operation id" (orbax 0.12: `OperationIdGenerator`), so two managers saving at
# once in threads of one process (prompts tuned side by side: the demo, the
# protocol) can wait on each other's keys until the 300 s timeout. One save at
# a time per process; the saves are small next to the training between them.
_SAVE_LOCK = threading.Lock()


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_position: int) -> None:
  """Saves the train state and where the data stream stands; waits until durable.

  Thread-safe: saves from several threads of a process run one at a time.
  """
  with _SAVE_LOCK:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({'step': int(step), 'data_position': int(data_position)})))
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: Optional[int] = None):
  """Restores (state, meta) at `step` (default: latest), shaped and sharded as `abstract_state`.

  Returns:
    (state, meta) or (None, None) when there is no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None, None
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


def export_prompt(model_dir: str, step: int, params: Any) -> Optional[pathlib.Path]:
  """Exports the trained parameters as numpy under numpy_checkpoints/checkpoint_<step>/.

  A single prompt matrix goes to `prompt.npy` and the prompt-tuning repo's
  `encoder.prompt.prompt.prompt`; any other tree of a prompt method (a late
  prompt generator) to `params.npz`. A model's own parameters (pretraining)
  are exported by their entry point as T5X instead. Returns the file written.
  """
  if jax.process_index() != 0 or not params or 'token_embedder' in params:
    return None
  directory = pathlib.Path(model_dir) / 'numpy_checkpoints' / f'checkpoint_{step}'
  if set(params) == {'prompt'}:
    prompt = np.asarray(jax.device_get(params['prompt']))
    prompts.save_prompt(prompt, directory / PROMPT_EXPORT_NAME)
    prompts.save_prompt(prompt, directory / 'prompt.npy')
    return directory / 'prompt.npy'
  prompts.save_params(params, directory / 'params.npz')
  return directory / 'params.npz'


def record_best(model_dir: str, step: int, metrics: Dict[str, float], metric: str,
                higher_is_better: bool = True) -> bool:
  """Updates MODEL_DIR/best.json if `metrics[metric]` beats it; returns whether it did."""
  if metric not in metrics:
    return False
  path = pathlib.Path(model_dir) / 'best.json'
  best = json.loads(path.read_text()) if path.exists() else None
  value = float(metrics[metric])
  better = best is None or (value > best['value'] if higher_is_better else value < best['value'])
  if better and jax.process_index() == 0:
    path.write_text(json.dumps({'metric': metric, 'value': value, 'step': int(step),
                                'metrics': {k: float(v) for k, v in metrics.items()}}, indent=2))
  return better
