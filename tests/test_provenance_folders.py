"""A generated folder is OK only when it is complete and unmixed: images of another run (another sampler, seed or
prompt list) next to the folder's own, or a folder a killed run left half-written, are findings of
``msdm provenance`` (exit 1), not "OK"."""

import json

import numpy as np

from msdm.cli import main
from msdm.prompts import challenge_filename
from msdm.provenance import folder_status, make_record, save_png, update_manifest, verify

PROMPTS = ["Generate an image containing a polyp.", "Generate an image with no polyps."]
SEED_RULE = "image k (0-based, prompt-major) uses seed + k"
INFO = {"model": "MSDM (pipe)", "revision": "abc", "sampler": "dpm++sde", "steps": 20, "guidance_scale": 4.5,
        "eta": 1.0, "dtype": "fp32", "resolution": 16, "seed_rule": SEED_RULE}


def _write(folder, prompts=PROMPTS, num_images=3, seed=0, info=INFO, only=None):
    """What a generator writes: challenge-layout PNGs with records, prompts.json, a merged manifest."""
    folder.mkdir(exist_ok=True)
    entries = {}
    for p, text in enumerate(prompts):
        for i in range(num_images):
            k = p * num_images + i
            if only is not None and k not in only:
                continue
            img = np.random.default_rng(seed + k + 100 * (info["sampler"] == "ddim")).integers(0, 255, (16, 16, 3),
                                                                                              dtype=np.uint8)
            rec = make_record(text, seed + k, info, prompt_index=p + 1, image_index=i + 1)
            entries[challenge_filename(p + 1, i + 1)] = save_png(img, folder / challenge_filename(p + 1, i + 1), rec)
    (folder / "prompts.json").write_text(json.dumps({str(k + 1): t for k, t in enumerate(prompts)}))
    entries["prompts.json"] = None
    generation = {**info, "seed": seed, "num_images_per_prompt": num_images, "num_prompts": len(prompts),
                  "synthetic": True}
    update_manifest(folder, entries, generation=generation)  # merges, as every earlier msdm generate did


def test_a_complete_folder_of_one_run_is_ok(tmp_path):
    _write(tmp_path / "gen")
    status = folder_status(tmp_path / "gen")
    assert status.complete is True and status.expected == status.present == 6 and not status.mixed
    assert verify(tmp_path / "gen").ok


def test_two_runs_into_one_folder_are_mixed(tmp_path):
    """The issue's probe: a rerun with another model/sampler (here 4 images per prompt, DDIM) into a used folder;
    old images stay and the merged manifest lists them all."""
    _write(tmp_path / "gen", num_images=4, info={**INFO, "sampler": "ddim", "steps": 150})
    _write(tmp_path / "gen", num_images=3)  # the second run: 3 per prompt, dpm++sde
    rep = verify(tmp_path / "gen")
    mixed = {f.path: f.detail for f in rep.findings if f.kind == "mixed"}
    # every image the first run left (3 of 4 per prompt were overwritten; 1 per prompt remains) is named
    assert set(mixed) == {challenge_filename(1, 4), challenge_filename(2, 4)}
    assert "sampler 'ddim' (folder: 'dpm++sde')" in mixed[challenge_filename(1, 4)]
    assert not rep.ok
    # another seed or another prompt list is mixing too
    _write(tmp_path / "seeds", seed=0)
    _write(tmp_path / "seeds", seed=50, only={0, 1})
    status = folder_status(tmp_path / "seeds")
    assert set(status.mixed) == {challenge_filename(1, 3), challenge_filename(2, 1), challenge_filename(2, 2),
                                 challenge_filename(2, 3)} and "seed 2 (the folder's rule gives 52)" in \
        status.mixed[challenge_filename(1, 3)]


def test_a_half_written_folder_is_incomplete(tmp_path, capsys):
    _write(tmp_path / "gen", only={0, 1})  # a killed run: 2 of 6 images (as if its manifest had been written)
    status = folder_status(tmp_path / "gen")
    assert status.complete is False and status.present == 2 and "2 of 6 images present" in status.notes[0]
    assert main(["provenance", str(tmp_path / "gen")]) == 1
    out = capsys.readouterr().out
    assert "incomplete" in out and "2 of 6 images present" in out and "FAILED" in out
    # the writer's own completion marker says so as well (a run that died before any manifest)
    from msdm.io import claim_output_dir

    claim_output_dir(tmp_path / "killed", writer="msdm generate")
    save_png(np.zeros((16, 16, 3), np.uint8), tmp_path / "killed" / challenge_filename(1, 1),
             make_record(PROMPTS[0], 0, INFO))
    rep = verify(tmp_path / "killed")
    assert any(f.kind == "incomplete" and "has not finished" in f.detail for f in rep.findings)


def test_provenance_of_a_missing_path_is_one_line_exit_2(tmp_path, capsys):
    assert main(["provenance", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msdm provenance: error:") and "nope" in err[0]
