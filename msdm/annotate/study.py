"""``msdm annotate build``: a blinded expert-rating study from generated folders, real images and a prompt file.

The protocol is Prompt to Polyp §5.1.1–5.1.2: 40 prompts, 20 original (even study indices) and 20 rephrased (odd
indices), each the partner of the one before it; for each prompt the real reference images first, then the outputs
of the anonymised models "A", "B", "C", 10 images each; six aspect scores 0–10 per model set; a per-prompt rank
1…K+1 of the K models *and the real images*; at the end a Global Preference ranking of the models.

A study folder::

    study.json        public: prompts, image lists, aspects, letters, and key_sha256 (a commitment to the key)
    key.json          SEALED (mode 0600): which model is behind each letter, per prompt; never served
    images/p01/real/01.png, images/p01/A/01.png, …, images/global/A/01.png
    ratings.sqlite    written by ``msdm annotate serve`` (never served)

**Blinding.** The model → letter mapping is drawn per prompt (``mapping="per-prompt"``), so neither the position on
the page nor a letter carries over between prompts; the Global Preference page shows one panel per model (images
of a few prompts) under its own random letters. Every image is *re-encoded* into the study without metadata: the
provenance chunks of generated PNGs (:mod:`msdm.provenance`) name the model, and real images may carry EXIF —
neither may reach the rater. The study's file names say nothing either. The key holds the source files and their
SHA-256, so the report can trace every study image back to its provenance.

**Sealed key.** ``key.json`` holds a random salt; ``study.json`` holds its SHA-256. The report refuses a key that does
not match, so a key edited after the ratings were collected is detected. ``key_path`` can put the key outside the
study folder (recommended when the study folder is copied to a rating workstation).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from msdm.errors import UserError
from msdm.io import atomic_directory, atomic_file
from msdm.prompts import challenge_filename, declares_pairs, read_prompts

STUDY_FORMAT = "msdm-annotate-study/1"
KEY_FORMAT = "msdm-annotate-key/1"
STUDY_FILE = "study.json"
KEY_FILE = "key.json"
RATINGS_FILE = "ratings.sqlite"
REAL = "real"  # the item name of the real reference images in the per-prompt rank
GLOBAL = -1  # the prompt index under which Global Preference answers are stored
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SCORE_RANGE = (0, 10)

# The six aspects of Prompt to Polyp §5.1.2 (Figure 5), with the question a rater sees.
ASPECTS = [
    {"id": "clinical_realism", "label": "Clinical Realism",
     "help": "Do these images look like real endoscopic images (anatomy, mucosa, lighting, artefacts)?"},
    {"id": "prompt_faithfulness", "label": "Prompt Faithfulness",
     "help": "Do the images show what the prompt asks for (finding, number, size, colour, instrument)?"},
    {"id": "detectability", "label": "Detectability of Abnormality",
     "help": "Is the abnormality asked for clearly visible and identifiable (or clearly absent when none is asked for)?"},
    {"id": "color_contrast", "label": "Color and Contrast",
     "help": "Are colour and contrast plausible for the modality?"},
    {"id": "diversity", "label": "Intra-set Diversity",
     "help": "Do the images of this set differ from one another as real cases would (not near-copies)?"},
    {"id": "clinical_confidence", "label": "Confidence of Use (Clinical)",
     "help": "Would you be confident using images like these clinically (e.g. for training or education)?"},
]
ASPECT_IDS = [a["id"] for a in ASPECTS]


class StudyError(UserError, ValueError):
    """A study cannot be built or read as asked (the message says what to change)."""


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


def parse_model_arg(text: str) -> tuple[str, Path]:
    """``NAME=FOLDER`` (or just ``FOLDER``, named after the folder)."""
    name, sep, folder = text.partition("=")
    if not sep:
        name, folder = Path(text).name, text
    if not name or not folder:
        raise StudyError(f"--model expects NAME=FOLDER, got {text!r}")
    return name, Path(folder)


def read_generated_prompts(folder: Path) -> dict[int, str] | None:
    """``prompts.json`` that ``msdm generate`` writes (``{"1": prompt, ...}``), or ``None``."""
    p = folder / "prompts.json"
    if not p.is_file():
        return None
    obj = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(obj, dict) and all(str(k).isdigit() for k in obj):
        return {int(k): str(v) for k, v in obj.items()}
    return {k + 1: s for k, s in enumerate(read_prompts(p))}


def read_real_mapping(path: str | os.PathLike) -> dict[str, list[str]]:
    """The challenge's real mapping ``{"prompt id": [real image id, ...]}`` (1-based prompt ids, as in file names)."""
    obj = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(obj, dict):
        raise StudyError(f"{path}: the real mapping must be a JSON object {{prompt id: [image ids]}}")
    return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in obj.items()}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _find_generated(folder: Path, prompt_id: int, image_id: int) -> Path | None:
    for ext in ("png", "jpg", "jpeg", "webp"):
        p = folder / challenge_filename(prompt_id, image_id, ext)
        if p.is_file():
            return p
    return None


def select_prompt_ids(available: list[int], num_prompts: int, paired: bool, select: str,
                      rng: random.Random, prompt_ids: list[int] | None = None) -> list[int]:
    """Prompt ids (1-based, as in file names) in study order.

    Paired (the challenge layout: prompts (1, 2), (3, 4), … are (original, rephrased)): whole pairs are chosen and
    kept adjacent, so the original lands on an even study index and its rephrasing on the next, odd one.
    """
    avail = sorted(set(available))
    if prompt_ids:
        ids = [int(p) for p in prompt_ids]
        missing = [p for p in ids if p not in avail]
        if missing:
            raise StudyError(f"prompt ids {missing} are not among the prompts ({len(avail)} available)")
        if paired:
            for k in range(0, len(ids), 2):
                if k + 1 >= len(ids) or ids[k] % 2 != 1 or ids[k + 1] != ids[k] + 1:
                    raise StudyError(f"paired study: --prompt-ids must list (original, rephrased) pairs like 1,2,5,6;"
                                     f" got {ids} (leave out --paired for a study without pairs)")
        return ids
    if select not in ("random", "first"):
        raise StudyError(f"select must be 'random' or 'first', got {select!r}")
    if paired:
        if num_prompts % 2:
            raise StudyError(f"a paired study needs an even number of prompts, got {num_prompts}")
        pairs = [(p, p + 1) for p in avail if p % 2 == 1 and p + 1 in avail]
        if len(pairs) < num_prompts // 2:
            raise StudyError(f"{num_prompts} prompts = {num_prompts // 2} (original, rephrased) pairs asked, "
                             f"only {len(pairs)} complete pairs available")
        chosen = pairs[: num_prompts // 2] if select == "first" else sorted(rng.sample(pairs, num_prompts // 2))
        return [p for pair in chosen for p in pair]
    if len(avail) < num_prompts:
        raise StudyError(f"{num_prompts} prompts asked, only {len(avail)} available")
    return avail[:num_prompts] if select == "first" else sorted(rng.sample(avail, num_prompts))


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------


def _copy_stripped(src: Path, dst: Path) -> None:
    """Re-encode ``src`` as a metadata-free RGB PNG (no text chunks, EXIF, ICC profile): pixels only."""
    with Image.open(src) as im:
        arr = np.asarray(im.convert("RGB"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(dst, format="PNG")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_study(
    out: str | os.PathLike,
    models: dict[str, str | os.PathLike],
    real_dir: str | os.PathLike,
    prompts_file: str | os.PathLike | None = None,
    real_mapping: str | os.PathLike | dict | None = None,
    num_prompts: int = 40,
    num_images: int = 10,
    num_real: int = 10,
    paired: bool | None = None,
    select: str = "random",
    prompt_ids: list[int] | None = None,
    mapping: str = "per-prompt",
    global_images: int = 10,
    seed: int | None = None,
    title: str = "Expert evaluation of synthetic medical images",
    key_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Build a study folder (see the module docstring); returns its path.

    ``models``: ``{name: folder in the challenge layout}`` (``prompt0001_img0001.png``…). ``prompts_file``: the
    prompts the folders were generated from (default: the first folder's ``prompts.json``). ``real_mapping``:
    ``{"prompt id": [real ids]}``; a rephrased prompt without an entry uses its original's (as the challenge
    does); without a mapping every prompt gets ``num_real`` real images drawn at random. ``seed`` makes the build
    reproducible — and the key recomputable by whoever knows it: leave it ``None`` for a real study.

    ``paired``: prompts (1, 2), (3, 4), … are (original, rephrased) pairs, kept adjacent. ``None`` (default): only
    when the prompt file itself declares pairs (the challenge JSON ``{qa: {pair: [A, B]}}``); a plain list (.txt,
    .csv, a JSON list, a folder's prompts.json) is paired only with ``paired=True`` (``--paired``).
    """
    out = Path(out)
    if not models:
        raise StudyError("at least one --model NAME=FOLDER is needed")
    if len(models) > len(LETTERS) - 1:
        raise StudyError(f"at most {len(LETTERS) - 1} models")
    if mapping not in ("per-prompt", "per-study"):
        raise StudyError(f"mapping must be 'per-prompt' or 'per-study', got {mapping!r}")
    if num_images < 1 or num_real < 1:
        raise StudyError("num_images and num_real must be at least 1")
    if out.exists():
        if (out / RATINGS_FILE).exists():
            raise StudyError(f"{out} holds ratings ({RATINGS_FILE}): refusing to overwrite it; build elsewhere")
        if not overwrite:
            raise StudyError(f"{out} exists (pass --overwrite to replace it)")
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    model_dirs = {name: Path(folder) for name, folder in models.items()}
    for name, folder in model_dirs.items():
        if not folder.is_dir():
            raise StudyError(f"model {name!r}: {folder} is not a folder")
    real_dir = Path(real_dir)
    if not real_dir.is_dir():
        raise StudyError(f"real images: {real_dir} is not a folder")

    # -- prompts: the file, or the generated folders' prompts.json, which must agree with it
    if paired is None:  # never pair a plain list silently
        paired = prompts_file is not None and declares_pairs(prompts_file)
    if prompts_file is not None:
        texts = {k + 1: s for k, s in enumerate(read_prompts(prompts_file))}
    else:
        first = next(iter(model_dirs.values()))
        texts = read_generated_prompts(first)
        if texts is None:
            raise StudyError(f"no --prompts file and no prompts.json in {first}")
    for name, folder in model_dirs.items():
        gen = read_generated_prompts(folder)
        if gen is not None:
            bad = [p for p, s in gen.items() if p in texts and texts[p] != s]
            if bad:
                raise StudyError(f"model {name!r}: {folder}/prompts.json disagrees with the prompts for ids {bad[:5]}"
                                 " — were these images generated from another prompt file?")
    available = [p for p in texts if all(_find_generated(d, p, num_images) for d in model_dirs.values())]
    try:
        ids = select_prompt_ids(available if not prompt_ids else list(texts), num_prompts, paired, select, rng,
                                prompt_ids)
    except StudyError as e:
        lacking = [(n, p) for p in texts for n, d in model_dirs.items() if not _find_generated(d, p, num_images)]
        if not lacking:
            raise
        n, p = lacking[0]
        raise StudyError(f"{e}; {len({p for _, p in lacking})} of {len(texts)} prompts lack {num_images} images in "
                         f"some model folder (model {n!r} lacks {challenge_filename(p, num_images)})") from None

    # -- generated files: num_images per prompt and model, all present
    gen_files: dict[str, dict[int, list[Path]]] = {}
    for name, folder in model_dirs.items():
        gen_files[name] = {}
        for p in ids:
            files = [_find_generated(folder, p, i) for i in range(1, num_images + 1)]
            if any(f is None for f in files):
                missing = [challenge_filename(p, i + 1) for i, f in enumerate(files) if f is None]
                raise StudyError(f"model {name!r}: {folder} lacks {missing[:3]} (need {num_images} images per prompt)")
            gen_files[name][p] = files

    # -- real reference images
    reals = list_images(real_dir)
    if not reals:
        raise StudyError(f"no images in {real_dir}")
    by_id = {**{r.stem: r for r in reals}, **{r.name: r for r in reals}}
    rmap = read_real_mapping(real_mapping) if isinstance(real_mapping, (str, os.PathLike)) else real_mapping
    real_files: dict[int, list[Path]] = {}
    for p in ids:
        if rmap is not None:
            entry = rmap.get(str(p))
            if entry is None and paired and p % 2 == 0:
                entry = rmap.get(str(p - 1))  # the challenge compares a rephrased prompt with its original's images
            if not entry:
                raise StudyError(f"the real mapping has no images for prompt {p}")
            missing = [r for r in entry if r not in by_id]
            if missing:
                raise StudyError(f"prompt {p}: real image ids {missing[:5]} not found in {real_dir}")
            files = [by_id[r] for r in entry]
            if len(files) > num_real:
                files = [files[i] for i in sorted(rng.sample(range(len(files)), num_real))]
        else:
            files = [reals[i] for i in sorted(rng.sample(range(len(reals)), min(num_real, len(reals))))]
        real_files[p] = files

    # -- letters: per prompt (or one mapping for the study), and one for the Global Preference page
    names = list(model_dirs)
    letters = list(LETTERS[: len(names)])

    def draw() -> dict[str, str]:
        perm = names[:]
        rng.shuffle(perm)
        return dict(zip(letters, perm))

    study_mapping = draw()
    per_prompt = [draw() if mapping == "per-prompt" else dict(study_mapping) for _ in ids]
    global_letters = draw() if mapping == "per-prompt" else dict(study_mapping)
    n_global = min(global_images, len(ids))
    global_prompts = sorted({int(round(x)) for x in np.linspace(0, len(ids) - 1, n_global)}) if n_global else []

    width = max(2, len(str(len(ids))))
    study_id = uuid.UUID(int=rng.getrandbits(128)).hex

    with atomic_directory(out, overwrite=True, private=[KEY_FILE] if key_path is None else []) as tmp:
        prompts_public, prompts_key = [], []
        for k, p in enumerate(ids):
            folder = f"images/p{k + 1:0{width}d}"
            real_rel = []
            for j, src in enumerate(real_files[p]):
                rel = f"{folder}/{REAL}/{j + 1:02d}.png"
                _copy_stripped(src, tmp / rel)
                real_rel.append(rel)
            sets, sources = {}, {}
            for letter, name in per_prompt[k].items():
                rels = []
                for j, src in enumerate(gen_files[name][p]):
                    rel = f"{folder}/{letter}/{j + 1:02d}.png"
                    _copy_stripped(src, tmp / rel)
                    rels.append(rel)
                sets[letter] = rels
                sources[letter] = [{"file": str(s.resolve()), "sha256": _sha256(s)} for s in gen_files[name][p]]
            kind = ("original" if k % 2 == 0 else "rephrased") if paired else "prompt"
            partner = (k + 1 if k % 2 == 0 else k - 1) if paired else None
            prompts_public.append({"index": k, "number": k + 1, "text": texts[p], "kind": kind, "pair": partner,
                                   "source_prompt": p, "real": real_rel, "sets": sets})
            prompts_key.append({"index": k, "source_prompt": p, "letters": per_prompt[k], "sources": sources,
                                "real_sources": [{"file": str(s.resolve()), "sha256": _sha256(s)}
                                                 for s in real_files[p]]})
        global_sets = {}
        for letter, name in global_letters.items():
            rels = []
            for j, k in enumerate(global_prompts):
                src = gen_files[name][ids[k]][j % num_images]
                rel = f"images/global/{letter}/{j + 1:02d}.png"
                _copy_stripped(src, tmp / rel)
                rels.append(rel)
            global_sets[letter] = rels

        key = {
            "format": KEY_FORMAT, "study_id": study_id, "salt": secrets.token_hex(16),
            "models": {n: {"source": str(d.resolve())} for n, d in model_dirs.items()},
            "mapping": mapping, "prompts": prompts_key,
            "global": {"letters": global_letters, "prompts": global_prompts},
        }
        key_bytes = (json.dumps(key, indent=2, ensure_ascii=False) + "\n").encode()
        study = {
            "format": STUDY_FORMAT, "id": study_id, "title": title,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "letters": letters, "real_item": REAL, "aspects": ASPECTS, "score_range": list(SCORE_RANGE),
            "paired": paired, "num_images": num_images, "prompts": prompts_public,
            "global": {"sets": global_sets, "prompts": global_prompts},
            "key_sha256": hashlib.sha256(key_bytes).hexdigest(),
        }
        (tmp / STUDY_FILE).write_text(json.dumps(study, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if key_path is None:
            (tmp / KEY_FILE).write_bytes(key_bytes)  # sealed: 0600 (atomic_directory's private=)
    if key_path is not None:
        with atomic_file(key_path, permissions=0o600) as f:
            f.write(key_bytes)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Read
# ----------------------------------------------------------------------------------------------------------------


def load_study(folder: str | os.PathLike) -> dict:
    p = Path(folder) / STUDY_FILE
    if not p.is_file():
        raise StudyError(f"{folder} is not a study folder (no {STUDY_FILE}); build one with `msdm annotate build`")
    study = json.loads(p.read_text(encoding="utf-8"))
    if study.get("format") != STUDY_FORMAT:
        raise StudyError(f"{p}: unknown format {study.get('format')!r}")
    return study


def load_key(study: dict, path: str | os.PathLike) -> dict:
    """Read the key and check it against the study's commitment (``key_sha256``) before anything is unblinded."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != study["key_sha256"]:
        raise StudyError(f"{path} does not match the study's key_sha256: it is not this study's key, or it was "
                         "edited after the study was built")
    key = json.loads(data)
    if key.get("study_id") != study["id"]:
        raise StudyError(f"{path} belongs to study {key.get('study_id')}, not {study['id']}")
    return key


def public_image_paths(study: dict) -> set[str]:
    """Every image path the page may request (relative to the study folder)."""
    paths = set()
    for pr in study["prompts"]:
        paths.update(pr["real"])
        for rels in pr["sets"].values():
            paths.update(rels)
    for rels in study["global"]["sets"].values():
        paths.update(rels)
    return paths
