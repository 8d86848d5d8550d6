"""``msdm paraphrase``: fact-checked paraphrases for a prompt list (Prompt to Polyp §4.3).

    msdm paraphrase --prompts prompt-gt.csv --n 10 --out-json paraphrases.json --out-csv paraphrases.csv
    msdm paraphrase --prompts prompts.txt --model Qwen/Qwen2.5-1.5B-Instruct --n 20 --out-json para.json

Without ``--model`` the offline, deterministic rule-based paraphraser for the MEDVQA-GI prompt grammar is used.
Every paraphrase is checked against its prompt (numbers, sizes, instruments, findings, colours, locations, negation);
violators are dropped and counted. Outputs are written atomically: a JSON map ``{prompt: [paraphrase, ...]}`` and/or
the reference CSV ``Filename,Prompt,Paraphrase`` (one paraphrase per row), both readable by the DataModules'
``paraphrases=`` argument.
"""

from __future__ import annotations

NAME = "paraphrase"
HELP = "generate fact-checked paraphrases of prompts (rule-based offline, or any transformers LM with --model)"


def add_arguments(parser) -> None:
    parser.add_argument("--prompts", required=True,
                        help="prompt list: .txt (one per line), prompt-gt.csv (Prompt;Filename), a CSV with a "
                             "prompt/caption column, or a JSON list")
    parser.add_argument("--n", type=int, default=5, help="paraphrases to keep per prompt (default 5)")
    parser.add_argument("--model", default=None,
                        help="hub id or local folder of a transformers language model (default: rule-based)")
    parser.add_argument("--out-json", default=None, help="write {prompt: [paraphrase, ...]} here")
    parser.add_argument("--out-csv", default=None, help="write the reference CSV Filename,Prompt,Paraphrase here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="device for --model (default: cuda if available)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--oversample", type=int, default=2,
                        help="LM candidates per kept paraphrase (violators are dropped, so ask for more)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom model code (off by default)")
    parser.add_argument("--show-dropped", type=int, default=5, help="print this many dropped examples")


def read_prompt_list(path: str) -> tuple[list[str], dict[str, list[str]]]:
    """``(prompts, {prompt: [filenames]})`` from a .txt / .csv / .json prompt list."""
    import json
    from pathlib import Path

    from msdm.data.captions import read_table
    from msdm.errors import InputError, PathNotFoundError

    p = Path(path)
    if not p.is_file():
        raise PathNotFoundError(f"--prompts {p} not found", p)
    filenames: dict[str, list[str]] = {}
    if p.suffix.lower() == ".txt":
        return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()], filenames
    if p.suffix.lower() == ".json":
        data = json.loads(p.read_text(encoding="utf-8"))
        return ([str(x) for x in data] if isinstance(data, list) else list(map(str, data))), filenames
    rows, cols = read_table(p)
    col = next((c for c in ("Prompt", "prompt", "caption", "Caption", "text") if c in cols), None)
    if col is None:
        raise InputError(f"{p}: no prompt column (Prompt, prompt, caption, text); it has {cols}")
    fcol = next((c for c in ("Filename", "filename", "file_name", "image") if c in cols), None)
    prompts = []
    for r in rows:
        q = (r.get(col) or "").strip()
        if q:
            prompts.append(q)
            if fcol and r.get(fcol):
                filenames.setdefault(q, []).append(str(r[fcol]).strip())
    return prompts, filenames


def run(args) -> int:
    import time

    from msdm.data.paraphrase import generate_paraphrases, write_paraphrases_csv, write_paraphrases_json

    prompts, filenames = read_prompt_list(args.prompts)
    unique = list(dict.fromkeys(prompts))
    if not args.out_json and not args.out_csv:
        args.out_json = "paraphrases.json"
    t0 = time.perf_counter()
    if args.model:
        from msdm.data.paraphrase_llm import LLMParaphraser

        paraphraser = LLMParaphraser(
            args.model, oversample=args.oversample, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_p=args.top_p, seed=args.seed, device=args.device,
            batch_size=args.batch_size, trust_remote_code=args.trust_remote_code,
        )
        what = f"language model {args.model}"
    else:
        from msdm.data.paraphrase_rules import RuleParaphraser

        paraphraser = RuleParaphraser(seed=args.seed)
        what = "rule-based paraphraser"
    mapping, report = generate_paraphrases(unique, paraphraser, args.n, max_examples=max(args.show_dropped, 0))
    secs = time.perf_counter() - t0
    print(f"{what}: {len(unique)} unique prompts ({len(prompts)} rows), asked for {args.n} each, {secs:.1f} s")
    print(f"kept {report.kept} paraphrases for {len(mapping)}/{len(unique)} prompts; "
          f"dropped {report.dropped} that changed a fact; {report.duplicates} duplicates; {report.empty} empty")
    for prompt, q, violations in report.dropped_examples[: args.show_dropped]:
        print(f"  dropped {q!r}\n    for {prompt!r}: {'; '.join(violations)}")
    if args.out_json:
        write_paraphrases_json(args.out_json, mapping)
        print(f"wrote {args.out_json}")
    if args.out_csv:
        rows = write_paraphrases_csv(args.out_csv, mapping, filenames or None)
        print(f"wrote {args.out_csv} ({rows} rows)")
    if report.kept == 0:
        print("no paraphrase kept: check the model (an instruction-tuned model is needed) or use the rule-based default")
        return 1
    return 0
