"""Argument checks, done where arguments are parsed, with messages that name the value and the fix.

One table (:data:`RULES`) says what a value of a given *name* must be (``lr`` > 0, ``batch_size`` >= 1, ``eta`` >= 0,
``guidance_scale`` finite, ...). It serves every entry point:

* ``msdm COMMAND`` options: the argparse ``type=`` functions below (:func:`positive_int`, :func:`finite_float`, ...)
  reject ``--num-images 0`` or ``--guidance-scale nan`` while the command line is parsed, and ``msdm`` prints
  ``msdm COMMAND: error: argument --num-images: ...`` in one line, exit 2 (:mod:`msdm.cli`);
* ``msdm fit | validate | test | predict``: :func:`check_init_args` runs over the config's ``model`` and ``data``
  arguments before anything is built (``lightning_modules.cli``), so ``--data.init_args.batch_size=0`` is one line,
  not a DataLoader traceback 90 lines deep;
* Python callers (a notebook): :func:`check_value` raises :class:`~msdm.errors.InputError` with the same words.

A rule only applies to the names it lists; anything else passes through to the component, which owns its meaning.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from msdm.errors import InputError


@dataclass(frozen=True)
class Rule:
    kind: type          # int or float
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    low_open: bool = False  # the lower bound itself is refused (lr > 0)
    fix: str = ""       # what to give instead

    def describe(self) -> str:
        what = "a whole number" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        return what


POSITIVE_INT = Rule(int, 1)
NON_NEGATIVE_INT = Rule(int, 0)
FINITE = Rule(float)
NON_NEGATIVE = Rule(float, 0.0)
POSITIVE = Rule(float, 0.0, low_open=True)
UNIT = Rule(float, 0.0, 1.0)

# What a value of each name must be, wherever it is given (config key, option --name-with-dashes, keyword).
RULES: dict[str, Rule] = {
    "lr": Rule(float, 0.0, low_open=True, fix="e.g. 1e-4"),
    "learning_rate": Rule(float, 0.0, low_open=True, fix="e.g. 1e-4"),
    "batch_size": Rule(int, 1, fix="e.g. 8"),
    "val_batch_size": POSITIVE_INT,
    "num_images": POSITIVE_INT,
    "num_images_per_prompt": POSITIVE_INT,
    "num_inference_steps": Rule(int, 1, fix="e.g. 20 for dpm++sde, 150 for ddim"),
    "steps": Rule(int, 1, fix="e.g. 20 for dpm++sde, 150 for ddim"),
    "max_length": POSITIVE_INT,
    "image_size": POSITIVE_INT,
    "resolution": POSITIVE_INT,
    "num_workers": NON_NEGATIVE_INT,
    "lr_warmup_steps": NON_NEGATIVE_INT,
    "guidance_scale": Rule(float, fix="e.g. 4.5; 1 = no guidance"),
    "eta": Rule(float, 0.0, 1.0, fix="0 = deterministic DDIM, 1 = the reference"),
    "cfg_dropout": UNIT,
    "weight_decay": NON_NEGATIVE,
    "ema_decay": Rule(float, 0.0, 1.0, low_open=True),
    "kl_weight": NON_NEGATIVE,
    "ssim_weight": NON_NEGATIVE,
    "lpips_weight": NON_NEGATIVE,
}


def _problem(rule: Rule, value) -> str | None:
    """Why ``value`` breaks ``rule`` (None when it does not)."""
    if isinstance(value, bool):
        return f"must be {rule.describe()}, got {value!r}"
    if rule.kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            return f"must be {rule.describe()}, got {value!r}"
    elif not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"must be {rule.describe()}, got {value!r}"
    if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
        return f"must be {rule.describe()}, got {value!r}"
    if rule.high is not None and value > rule.high:
        return f"must be {rule.describe()}, got {value!r}"
    return None


def check_value(name: str, value, where: str | None = None, rule: Rule | None = None):
    """Return ``value`` if it satisfies the rule of ``name`` (or ``rule``); else raise a one-line InputError
    naming ``where`` (default ``name``), the value and the fix. ``None`` always passes (= the default)."""
    rule = rule or RULES.get(name)
    if rule is None or value is None:
        return value
    why = _problem(rule, value)
    if why:
        raise InputError(f"{where or name} {why}" + (f" ({rule.fix})" if rule.fix else ""))
    return value


def check_init_args(section: str, init_args) -> None:
    """Check every argument of a component's config (``model.init_args`` ...) that :data:`RULES` knows."""
    items = init_args.items() if hasattr(init_args, "items") else vars(init_args).items()
    for name, value in items:
        if name in RULES and value is not None:
            check_value(name, value, where=f"{section}.{name}")


# ------------------------------------------------------------------ argparse types (msdm COMMAND --option)
def _arg_type(rule: Rule, name: str):
    def parse(text: str):
        try:
            value = rule.kind(float(text)) if rule.kind is int and str(text).strip().endswith(".0") else rule.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text!r}") from None
        why = _problem(rule, value)
        if why:
            raise argparse.ArgumentTypeError(why + (f" ({rule.fix})" if rule.fix else ""))
        return value

    parse.__name__ = name  # argparse names the type in its own messages
    return parse


def arg_type(name: str):
    """The argparse ``type=`` for an option named like a :data:`RULES` entry (``arg_type("batch_size")``)."""
    return _arg_type(RULES[name], name)


positive_int = _arg_type(POSITIVE_INT, "positive_int")
non_negative_int = _arg_type(NON_NEGATIVE_INT, "non_negative_int")
finite_float = _arg_type(FINITE, "finite_float")
non_negative_float = _arg_type(NON_NEGATIVE, "non_negative_float")
positive_float = _arg_type(POSITIVE, "positive_float")


def check_device(device: str | None, option: str = "--device") -> None:
    """A CUDA device asked for on a machine without one is a one-line error, not a CUDA traceback."""
    if not device:
        return
    name = str(device).split(":")[0].lower()
    if name in ("cuda", "gpu"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"{option} {device}: no CUDA GPU is visible here (torch.cuda.is_available() is False): "
                             "use cpu (or auto), or check CUDA_VISIBLE_DEVICES and the driver")
        index = str(device).split(":")[1] if ":" in str(device) else None
        if index is not None and index.isdigit() and int(index) >= torch.cuda.device_count():
            raise InputError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif name == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise InputError(f"{option} {device}: MPS is not available here: use cpu")
