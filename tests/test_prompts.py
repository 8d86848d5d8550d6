"""Prompt files: a byte-order mark is not part of a prompt, blank lines are handled and reported (prompts are
numbered in order, not by line), a folder gets its own message, and JSON that is not prompts is refused."""

import json

import pytest

from msdm.errors import InputError, PathNotFoundError
from msdm.prompts import read_prompt_file, read_prompts


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path):
    for name, text in (("p.txt", "a polyp\nno polyp\n"), ("p.json", json.dumps(["a polyp", "no polyp"])),
                       ("p.csv", "prompt\na polyp\nno polyp\n")):
        (tmp_path / name).write_bytes("\ufeff".encode() + text.encode())  # what Notepad writes
        assert read_prompts(tmp_path / name) == ["a polyp", "no polyp"], name


def test_blank_and_comment_lines_are_skipped_and_said(tmp_path):
    (tmp_path / "p.txt").write_text("# header\na polyp\n\nno polyp\n   \nan instrument\n")
    pf = read_prompt_file(tmp_path / "p.txt")
    assert pf.prompts == ["a polyp", "no polyp", "an instrument"]
    assert pf.skipped_lines == [1, 3, 5]
    note = pf.numbering_note()
    assert "3 blank or # line(s) skipped (line 1, 3, 5)" in note and "not by line number" in note
    (tmp_path / "q.txt").write_text("a polyp\nno polyp\n")
    assert read_prompt_file(tmp_path / "q.txt").numbering_note() == ""


def test_a_folder_is_not_reported_missing(tmp_path):
    with pytest.raises(InputError, match="is a folder: give a .txt"):
        read_prompts(tmp_path)
    (tmp_path / "prompts.json").write_text(json.dumps({"1": "a polyp"}))
    with pytest.raises(InputError, match="prompts are in .*prompts.json"):
        read_prompts(tmp_path)
    with pytest.raises(PathNotFoundError, match="does not exist"):
        read_prompts(tmp_path / "nope.txt")


@pytest.mark.parametrize("obj", [{"a": 1}, [1, 2], {"qa": {"p1": ["ok", 3]}}, {"a": None}, "just a string", 7,
                                 {"qa": {"p1": {"deeper": "x"}}}])
def test_json_that_is_not_prompts_is_refused(tmp_path, obj):
    (tmp_path / "p.json").write_text(json.dumps(obj))
    with pytest.raises(InputError) as e:
        read_prompts(tmp_path / "p.json")
    assert str(tmp_path / "p.json") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("obj, want", [
    (["a", "b"], ["a", "b"]),
    ({"1": "a", "2": "b"}, ["a", "b"]),  # a generated folder's prompts.json
    ({"qa1": {"pair1": ["a", "a2"]}, "qa2": {"pair1": ["b", "b2"]}}, ["a", "a2", "b", "b2"]),  # the challenge's
])
def test_the_prompt_json_forms(tmp_path, obj, want):
    (tmp_path / "p.json").write_text(json.dumps(obj))
    assert read_prompts(tmp_path / "p.json") == want
