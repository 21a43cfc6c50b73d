"""What every command does around its `main`: a quiet terminal, and user mistakes as one line.

* The terminal shows progress bars, results, warnings and errors. INFO lines
  (orbax's checkpoint chatter, the trainer's metrics) go to the run's log file
  (`log_to`), not the screen; absl's `--verbosity=0` (or `-v 0`) brings them
  back to the terminal.
* A user mistake (a missing path, a prompt of the wrong shape, an unknown task
  or recycler, malformed JSON, ...: the library raises ValueError, KeyError or
  OSError with a message naming the file, the shape or the choices) prints one
  line, `error: ...`, and exits with status 2. `--traceback` shows the full
  Python traceback instead. Any other exception is a bug and keeps its
  traceback.
"""
import logging
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging as absl_logging

_TRACEBACK = flags.DEFINE_bool('traceback', False,
                               "Show an error's full Python traceback, not one line.")

USER_ERRORS = (ValueError, KeyError, OSError)
EXIT_USER_ERROR = 2


def _quiet_terminal() -> None:
  """Terminal at WARNING unless --verbosity/-v was given; loggers still pass INFO to files."""
  if flags.FLAGS['verbosity'].present:
    return
  absl_logging.get_absl_handler().setLevel(logging.WARNING)
  absl_logging.set_verbosity(logging.INFO)  # Reaches `log_to`'s file handler.


def log_to(path: str) -> None:
  """Also writes every INFO+ log line of this process to `path` (appending)."""
  import pathlib  # pylint: disable=g-import-not-at-top
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  handler = logging.FileHandler(path)
  handler.setLevel(logging.INFO)
  handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  logging.getLogger().addHandler(handler)


def one_line(error: BaseException) -> str:
  """`error: <message>` on one line (KeyError's quotes dropped)."""
  message = error.args[0] if isinstance(error, KeyError) and error.args else error
  text = ' '.join(str(message).split()) or type(error).__name__
  return f'error: {text} (--traceback for details)'


def run(main: Callable[[Sequence[str]], None], argv: Optional[Sequence[str]] = None) -> None:
  """`app.run(main)` with a quiet terminal and one-line user errors (module docstring)."""
  def wrapped(args):
    _quiet_terminal()
    try:
      main(args)
    except USER_ERRORS as error:
      if _TRACEBACK.value:
        raise
      print(one_line(error), file=sys.stderr)
      sys.exit(EXIT_USER_ERROR)
  app.run(wrapped, argv=argv)
