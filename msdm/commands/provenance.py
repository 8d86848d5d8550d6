"""``msdm provenance FILE_OR_DIR``: print and verify the provenance of generated images (see :mod:`msdm.provenance`).

Exit status 0 when everything checks out, 1 when a file is modified, missing, extra or has no record, or when a
generated folder is incomplete (a run that did not finish) or mixed (images of another run's settings).
"""

NAME = "provenance"
HELP = "print and verify the provenance (PNG records + provenance.json SHA-256 manifest) of generated images"


def add_arguments(parser):
    parser.add_argument("path", help="a PNG written by msdm, or an output folder with provenance.json")
    parser.add_argument("--json", action="store_true", help="print the records and findings as JSON")
    parser.add_argument("--records", action="store_true", help="for a folder, also print every image's record")


def _fmt_record(rec: dict) -> str:
    order = ["synthetic", "prompt", "prompts", "model", "revision", "seed", "sampler", "steps", "guidance_scale",
             "guidance_convention", "msdm_version"]
    keys = [k for k in order if k in rec] + sorted(k for k in rec if k not in order)
    return "\n".join(f"  {k:20s} {rec[k]}" for k in keys)


def run(args) -> int:
    import json
    from pathlib import Path

    from msdm.errors import PathNotFoundError
    from msdm.provenance import read_manifest, verify

    path = Path(args.path)
    if not path.exists():
        raise PathNotFoundError(f"{path}: no such file or folder ({path.absolute()})", path)
    rep = verify(path)
    if args.json:
        print(json.dumps({"path": str(path), "ok": rep.ok, "checked": rep.checked,
                          "findings": [f.__dict__ for f in rep.findings], "records": rep.records}, indent=2))
        return 0 if rep.ok else 1
    if path.is_file():
        rec = rep.records.get(path.name)
        print(f"{path}:")
        print(_fmt_record(rec) if rec else "  (no msdm provenance record)")
    else:
        man = read_manifest(path) or {}
        if man.get("generation"):
            print(f"{path}: generated with")
            print(_fmt_record(man["generation"]))
        if args.records:
            for name, rec in sorted(rep.records.items()):
                print(f"{name}:")
                print(_fmt_record(rec))
    for f in rep.findings:
        print(f"FAIL {f}")
    print(f"{'OK' if rep.ok else 'FAILED'}: {rep.checked} file(s) checked, {len(rep.findings)} problem(s)")
    return 0 if rep.ok else 1
