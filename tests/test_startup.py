"""Commands a user types first start without the heavy libraries (issue 23: ``msdm --help``, ``msdm presets`` and
every ``msdm COMMAND --help`` within 3 s on 2 cores; the measured times are bench/startup.py's, in
docs/benchmarks.md). What is checked here is the cause, not a time: no torch, diffusers, transformers or Lightning in
``sys.modules`` after the command ran in a fresh interpreter."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "lightning")

CODE = """
import contextlib, io, json, sys
from msdm.cli import build_parser, main
commands = json.loads(sys.argv[1])
if commands == ["EVERY"]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = [[name, "--help"] for name in sub.choices if name not in ("fit", "validate", "test", "predict")]
for argv in commands:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY_NAMES))))
""".replace("HEAVY_NAMES", repr(HEAVY))


@pytest.mark.parametrize("commands", [[["--help"]], [["presets"]], [["evaluate", "--help"]], ["EVERY"]],
                         ids=["help", "presets", "evaluate-help", "every-command-help"])
def test_first_commands_do_not_import_the_heavy_libraries(commands):
    r = subprocess.run([sys.executable, "-c", CODE, json.dumps(commands)], capture_output=True, text=True, cwd=ROOT,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [], r.stdout


def test_the_sampler_table_keeps_the_reference_step_count():
    from msdm.diffusion import REFERENCE_STEPS
    from msdm.generators import samplers

    assert samplers.REFERENCE_STEPS == REFERENCE_STEPS == samplers.default_steps("ddim")


def test_dtype_table_without_torch_at_import():
    import torch

    from msdm.dtypes import DTYPE_CHOICES, DTYPES, parse_dtype

    assert [parse_dtype(c) for c in DTYPE_CHOICES] == [torch.float32, torch.bfloat16, torch.float16]
    assert DTYPES["bfloat16"] is torch.bfloat16 and parse_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_dtype("int3")
