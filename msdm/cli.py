"""The ``msdm`` console script.

``msdm fit | validate | test | predict`` is LightningCLI (subclass mode for model and data, ``cli.yaml`` as the
default config). Every other word is a command module in :mod:`msdm.commands` (generate, export, quickstart,
presets, evaluate, report, ...). Lightning is imported only on the Lightning path, so the core stays importable
without it.

Two things every command shares, so no command implements them:

* **Errors a user can act on** (:mod:`msdm.errors`: a path that does not exist, an unreadable file, missing weights,
  ...) are printed as ``msdm COMMAND: error: <message>`` — one or two lines naming the file and the fix — with exit
  status 2. ``--debug`` (or ``MSDM_DEBUG=1``) re-raises them with the full traceback. Anything else is a bug and
  keeps its traceback.
* **Progress bars** (:mod:`msdm.progress`) on long work; ``--quiet`` turns them off.

Bad options are refused while the command line is parsed (:mod:`msdm.validation`), also in one line: argparse's
own ``error()`` would print the whole usage first (a dozen lines for ``msdm generate``). A full disk, a read-only
or forbidden output folder are the user's to fix too (:func:`msdm.errors.environment_error`): one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _command_modules():
    import msdm.commands as pkg

    mods = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"msdm.commands.{info.name}")
        if all(hasattr(mod, a) for a in ("NAME", "HELP", "add_arguments", "run")):
            mods[mod.NAME] = mod
    return mods


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with an error in one line that names the command and where its options are listed."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (options: {self.prog} --help)\n")


def _common_flags(parser: argparse.ArgumentParser, default) -> None:
    """``--quiet`` and ``--debug``, accepted before or after the command name (``default=SUPPRESS`` on the
    sub-parsers, so a flag given before the command is not reset by the sub-parser's default)."""
    parser.add_argument("--quiet", action="store_true", default=default, help="no progress bars")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of input errors (also MSDM_DEBUG=1)")


def _nested_common_flags(parser: argparse.ArgumentParser) -> None:
    """The common flags also after a command's own sub-command (``msdm annotate report ... --quiet``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                _common_flags(sp, default=argparse.SUPPRESS)
                _nested_common_flags(sp)


def build_parser() -> argparse.ArgumentParser:
    from msdm import __version__

    parser = ArgumentParser(
        prog="msdm",
        description="Medical text-to-image diffusion. Lightning commands: "
        + ", ".join(LIGHTNING_SUBCOMMANDS)
        + " (see `msdm fit --help`).",
    )
    parser.add_argument("--version", action="version", version=f"msdm {__version__}")
    _common_flags(parser, default=False)
    common = ArgumentParser(add_help=False)
    _common_flags(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LIGHTNING_SUBCOMMANDS:
        sub.add_parser(name, help=f"LightningCLI `{name}` (msdm {name} --help for its options)", add_help=False)
    for name, mod in _command_modules().items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, parents=[common])
        mod.add_arguments(p)
        _nested_common_flags(p)
        p.set_defaults(_run=mod.run)
    return parser


def _cpu_thread_policy() -> None:
    """Let idle OpenMP threads spin only briefly before they sleep (unless the user chose a policy).

    Must run before torch is imported (libgomp reads it once). libgomp's default spin (300 000 iterations) lets
    waiting intra-op threads steal the cores they wait for on a busy machine (a laptop, a shared CI runner: a VAE step
    of the quickstart took 5.6 s there); ``OMP_WAIT_POLICY=PASSIVE`` fixed that but put every thread to sleep between
    the many small ops of a CPU training step, which on an idle 2-core machine made the quickstart's U-Net step 1.7x
    slower (224 vs 137 ms). A bounded spin of 20 000 iterations keeps the idle speed (142 ms) and spins ~15x less
    than the default under load. ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set by the user wins. GPU runs are
    unaffected.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "20000")


def format_user_error(command: str | None, error: BaseException) -> str:
    """``msdm COMMAND: error: <message>`` (the message says what to change; see :mod:`msdm.errors`)."""
    return f"msdm{' ' + command if command else ''}: error: {str(error).strip() or type(error).__name__}"


def main(argv: list[str] | None = None) -> int:
    from msdm.errors import UserError, debug_requested, environment_error

    argv = list(sys.argv[1:] if argv is None else argv)
    _cpu_thread_policy()
    state = {"debug": debug_requested(), "command": None}
    try:
        return _dispatch(argv, state)
    except Exception as e:
        user = _user_error(e, UserError) or environment_error(e)
        if user is None or state["debug"]:
            raise
        print(format_user_error(state["command"], user), file=sys.stderr)
        return 2


def _user_error(error: BaseException, family: type) -> BaseException | None:
    """``error`` if it is one of ours, else the first of ours it was raised from (jsonargparse wraps the errors of a
    LightningModule's ``__init__`` into a ValueError ``from`` the original)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, family):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _dispatch(argv: list[str], state: dict) -> int:
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        from lightning_modules.cli import run_lightning_cli  # the one place msdm reaches up: the console script

        state["command"] = argv[0]
        if "--debug" in argv:  # ours, not LightningCLI's
            argv = [a for a in argv if a != "--debug"]
            state["debug"] = True
        run_lightning_cli(argv)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    state["command"] = getattr(args, "command", None)
    state["debug"] = state["debug"] or bool(getattr(args, "debug", False))
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0 if not argv else 2
    from msdm import progress

    with progress.enabled(progress.is_enabled() and not getattr(args, "quiet", False)):
        rc = args._run(args)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
