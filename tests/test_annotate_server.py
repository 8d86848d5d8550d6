"""``msdm annotate serve`` over real HTTP: only study images are served (key, database, traversal refused),
answers are validated and committed to SQLite at once, a restarted server resumes a rater."""

import http.client
import json
import sqlite3
import subprocess
import sys
import time

import pytest

from msdm.annotate.server import StudyServer
from msdm.annotate.store import AnswerError, RatingStore
from msdm.annotate.study import ASPECT_IDS, KEY_FILE, RATINGS_FILE, build_study, load_study
from msdm.annotate.testing import write_study_inputs


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, kvasir_dir):
    root = tmp_path_factory.mktemp("annotate")
    inp = write_study_inputs(root / "inputs", kvasir_dir / "images", num_pairs=2, size=32)
    return build_study(root / "study", inp["models"], inp["real"], paired=True, real_mapping=inp["real_mapping"], num_prompts=4,
                       global_images=2, seed=0)


@pytest.fixture
def server(study_dir, tmp_path):
    srv = StudyServer(study_dir, port=0, db_path=tmp_path / "ratings.sqlite")
    srv.start_in_thread()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method, path, body=None, headers=None):
    """A raw request: http.client sends the path exactly as given (no normalisation of ``..`` or escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=hdrs)
    r = conn.getresponse()
    out = r.status, r.read(), dict(r.getheaders())
    conn.close()
    return out


TRAVERSALS = [
    "/key.json", "/" + RATINGS_FILE, "/study.json", "/images/../key.json", "/images/%2e%2e/key.json",
    "/images/%2E%2E%2Fkey.json", "/images/..%2fkey.json", "/images/p01/../../key.json", "/images/p01/%2e%2e/%2e%2e/key.json",
    "/images/%252e%252e/key.json", "/images/..%5ckey.json", "/images/p01/A/..%2f..%2f..%2fkey.json",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/images//etc/passwd", "/images/%2fetc%2fpasswd", "/../key.json",
    "/images/p01/A/01.png%00.json", "/assets/../key.json", "/assets/%2e%2e/study.json", "/images/./p01/A/01.png",
    "/images/p01/A/01.png/..", "/images/p01",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_key_database_and_traversal_are_refused(server, study_dir, path):
    key_text = (study_dir / KEY_FILE).read_bytes()
    for method in ("GET", "HEAD"):
        status, body, _ = request(server, method, path)
        assert status in (403, 404), (path, status)
        assert b"salt" not in body and b"sharp" not in body and key_text[:40] not in body


def test_serves_the_page_and_only_listed_images(server, study_dir):
    status, body, headers = request(server, "GET", "/")
    assert status == 200 and b"annotate.js" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    for asset in ("/assets/annotate.js", "/assets/annotate.css"):
        assert request(server, "GET", asset)[0] == 200
    status, body, _ = request(server, "GET", "/api/study")
    study = json.loads(body)
    assert status == 200 and "key_sha256" not in study and b"sharp" not in body and b"blurry" not in body
    rel = study["prompts"][0]["sets"]["B"][3]
    status, body, headers = request(server, "GET", "/" + rel)
    assert status == 200 and headers["Content-Type"] == "image/png" and body == (study_dir / rel).read_bytes()
    assert request(server, "GET", "/" + rel.replace("/B/", "/%42/"))[0] == 200  # escapes decode once, then match
    assert request(server, "GET", "/images/p01/A/99.png")[0] == 404


def test_host_header_and_content_type_are_checked(server):
    assert request(server, "GET", "/api/study", headers={"Host": "evil.example:80"})[0] == 421  # DNS rebinding
    assert request(server, "GET", "/api/study", headers={"Host": f"localhost:{server.port}"})[0] == 200
    status, _, _ = request(server, "POST", "/api/rater", body=b'{"rater": "x"}', headers={"Content-Type": "text/plain"})
    assert status == 415  # a cross-site form post cannot write ratings


def test_answers_are_validated_and_committed(server, tmp_path):
    assert request(server, "POST", "/api/rater", {"rater": "dr.who"})[0] == 200
    ok = {"rater": "dr.who", "prompt": 0, "item": "A", "aspect": "clinical_realism", "value": 7}
    status, body, _ = request(server, "POST", "/api/answer", ok)
    assert status == 200 and json.loads(body)["saved"] is True
    # committed: another connection (another process could be a crashed server's successor) sees it at once
    with sqlite3.connect(tmp_path / "ratings.sqlite") as db:
        assert db.execute("SELECT value FROM answers WHERE rater='dr.who'").fetchall() == [(7,)]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for bad in ({"value": 11}, {"value": -1}, {"value": 7.5}, {"value": True}, {"item": "real"}, {"item": "D"},
                {"prompt": 4}, {"prompt": -1}, {"aspect": "beauty"}, {"aspect": "rank", "value": 5},
                {"aspect": "global_rank", "value": 1}, {"rater": "../x"}, {"rater": ""}):
        status, body, _ = request(server, "POST", "/api/answer", {**ok, **bad})
        assert status == 400, bad
    assert request(server, "POST", "/api/answer", {**ok, "item": "real", "aspect": "rank", "value": 4})[0] == 200
    assert request(server, "POST", "/api/answer", {**ok, "prompt": -1, "aspect": "global_rank", "value": 3})[0] == 200
    assert request(server, "POST", "/api/answer", b"[1, 2]")[0] == 400
    assert request(server, "POST", "/api/answer", b"not json")[0] == 400
    assert request(server, "POST", "/api/comment", {"rater": "dr.who", "prompt": 0, "text": "A looks odd"})[0] == 200
    status, body, _ = request(server, "GET", "/api/rater/dr.who")
    state = json.loads(body)
    assert {(a["item"], a["aspect"], a["value"]) for a in state["answers"]} == {
        ("A", "clinical_realism", 7), ("real", "rank", 4), ("A", "global_rank", 3)}
    assert state["comments"] == {"0": "A looks odd"} and state["progress"]["next"] == 0


def _rate_prompt(srv, rater, k, letters=("A", "B", "C")):
    for letter in letters:
        for a in ASPECT_IDS:
            assert request(srv, "POST", "/api/answer", {"rater": rater, "prompt": k, "item": letter, "aspect": a,
                                                        "value": 5})[0] == 200
    for rank, item in enumerate(["real", *letters], start=1):
        request(srv, "POST", "/api/answer", {"rater": rater, "prompt": k, "item": item, "aspect": "rank", "value": rank})


def test_progress_and_resume_after_restart(study_dir, tmp_path):
    db = tmp_path / "ratings.sqlite"
    srv = StudyServer(study_dir, port=0, db_path=db)
    srv.start_in_thread()
    _rate_prompt(srv, "r1", 0)
    # a duplicate rank leaves the prompt incomplete
    _rate_prompt(srv, "r1", 1)
    request(srv, "POST", "/api/answer", {"rater": "r1", "prompt": 1, "item": "A", "aspect": "rank", "value": 1})
    srv.shutdown()
    srv.server_close()

    srv = StudyServer(study_dir, port=0, db_path=db)  # a new process would see the same file
    srv.start_in_thread()
    try:
        state = json.loads(request(srv, "GET", "/api/rater/r1")[1])
        assert state["progress"]["complete"] == [0] and state["progress"]["next"] == 1
        _rate_prompt(srv, "r1", 1)
        for k in (2, 3):
            _rate_prompt(srv, "r1", k)
        assert json.loads(request(srv, "GET", "/api/rater/r1")[1])["progress"]["next"] == "global"
        for rank, letter in enumerate(["C", "A", "B"], start=1):
            request(srv, "POST", "/api/answer", {"rater": "r1", "prompt": -1, "item": letter, "aspect": "global_rank",
                                                 "value": rank})
        assert json.loads(request(srv, "GET", "/api/rater/r1")[1])["progress"]["next"] == "done"
        assert json.loads(request(srv, "GET", "/api/rater/r2")[1])["progress"]["next"] == 0
    finally:
        srv.shutdown()
        srv.server_close()


def test_database_belongs_to_one_study(study_dir, tmp_path):
    other = dict(load_study(study_dir), id="another-study")
    RatingStore(tmp_path / "db.sqlite", other)
    with pytest.raises(AnswerError, match="another-study"):
        RatingStore(tmp_path / "db.sqlite", load_study(study_dir))


def test_serve_command_binds_loopback(study_dir, tmp_path):
    import shutil

    study = tmp_path / "study"
    shutil.copytree(study_dir, study)
    proc = subprocess.Popen([sys.executable, "-m", "msdm", "annotate", "serve", str(study), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.time() + 120
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if "open http://" in line:
                url = line.split("open ", 1)[1].split()[0]
        assert url and url.startswith("http://127.0.0.1:")
        host, port = url[len("http://"):].rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/api/study")
        assert conn.getresponse().status == 200
        assert (study / RATINGS_FILE).exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
