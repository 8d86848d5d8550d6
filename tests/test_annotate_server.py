"""``msdm annotate serve`` over real HTTP: only study images are served (key, database, traversal refused),
answers are validated and committed to SQLite at once, a restarted server resumes a rater, each rater reaches
only their own answers through their secret link, and the database is readable by its owner only."""

import http.client
import json
import os
import sqlite3
import stat
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


def sign_in(srv, rater, reissue=False) -> dict:
    """Give ``rater`` a link, open it as a browser would, and return the cookie header the server set."""
    token = srv.store.issue_link(rater, reissue=reissue)
    status, _, headers = request(srv, "GET", f"/r/{token}", auth=False)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return {"Cookie": cookie.split(";")[0]}


def request(srv, method, path, body=None, headers=None, auth=True):
    """A raw request: http.client sends the path exactly as given (no normalisation of ``..`` or escapes).
    ``auth``: send the cookie of the default rater ``dr.who`` (signed in on first use)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    hdrs = dict(headers or {})
    if auth and "Cookie" not in hdrs:
        if not hasattr(srv, "test_cookie"):
            srv.test_cookie = {}
            srv.test_cookie = sign_in(srv, "dr.who", reissue=True)
        hdrs.update(srv.test_cookie)
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
    status, _, _ = request(server, "POST", "/api/answer", body=b'{"prompt": 0}', headers={"Content-Type": "text/plain"})
    assert status == 415  # a cross-site form post cannot write ratings


def test_answers_are_validated_and_committed(server, tmp_path):
    ok = {"rater": "dr.who", "prompt": 0, "item": "A", "aspect": "clinical_realism", "value": 7}
    status, body, _ = request(server, "POST", "/api/answer", ok)
    assert status == 200 and json.loads(body)["saved"] is True
    # committed: another connection (another process could be a crashed server's successor) sees it at once
    with sqlite3.connect(tmp_path / "ratings.sqlite") as db:
        assert db.execute("SELECT value FROM answers WHERE rater='dr.who'").fetchall() == [(7,)]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for bad in ({"value": 11}, {"value": -1}, {"value": 7.5}, {"value": True}, {"item": "real"}, {"item": "D"},
                {"prompt": 4}, {"prompt": -1}, {"aspect": "beauty"}, {"aspect": "rank", "value": 5},
                {"aspect": "global_rank", "value": 1}):
        status, body, _ = request(server, "POST", "/api/answer", {**ok, **bad})
        assert status == 400, bad
    for other in ("../x", "", "r2"):  # the rater is the link's, whatever the body says
        assert request(server, "POST", "/api/answer", {**ok, "rater": other})[0] == 403
    assert request(server, "POST", "/api/answer", {**ok, "item": "real", "aspect": "rank", "value": 4})[0] == 200
    assert request(server, "POST", "/api/answer", {**ok, "prompt": -1, "aspect": "global_rank", "value": 3})[0] == 200
    assert request(server, "POST", "/api/answer", b"[1, 2]")[0] == 400
    assert request(server, "POST", "/api/answer", b"not json")[0] == 400
    assert request(server, "POST", "/api/comment", {"rater": "dr.who", "prompt": 0, "text": "A looks odd"})[0] == 200
    status, body, _ = request(server, "GET", "/api/me")
    state = json.loads(body)
    assert state["rater"] == "dr.who"
    assert {(a["item"], a["aspect"], a["value"]) for a in state["answers"]} == {
        ("A", "clinical_realism", 7), ("real", "rank", 4), ("A", "global_rank", 3)}
    assert state["comments"] == {"0": "A looks odd"} and state["progress"]["next"] == 0


def _rate_prompt(srv, cookie, k, letters=("A", "B", "C")):
    for letter in letters:
        for a in ASPECT_IDS:
            assert request(srv, "POST", "/api/answer", {"prompt": k, "item": letter, "aspect": a, "value": 5},
                           headers=cookie)[0] == 200
    for rank, item in enumerate(["real", *letters], start=1):
        request(srv, "POST", "/api/answer", {"prompt": k, "item": item, "aspect": "rank", "value": rank},
                headers=cookie)


def test_progress_and_resume_after_restart(study_dir, tmp_path):
    db = tmp_path / "ratings.sqlite"
    srv = StudyServer(study_dir, port=0, db_path=db)
    srv.start_in_thread()
    r1 = sign_in(srv, "r1")
    _rate_prompt(srv, r1, 0)
    # a duplicate rank leaves the prompt incomplete
    _rate_prompt(srv, r1, 1)
    request(srv, "POST", "/api/answer", {"prompt": 1, "item": "A", "aspect": "rank", "value": 1}, headers=r1)
    srv.shutdown()
    srv.server_close()

    srv = StudyServer(study_dir, port=0, db_path=db)  # a new process would see the same file
    srv.start_in_thread()
    try:  # the cookie (the link) still works after the restart
        state = json.loads(request(srv, "GET", "/api/me", headers=r1)[1])
        assert state["progress"]["complete"] == [0] and state["progress"]["next"] == 1
        _rate_prompt(srv, r1, 1)
        for k in (2, 3):
            _rate_prompt(srv, r1, k)
        assert json.loads(request(srv, "GET", "/api/me", headers=r1)[1])["progress"]["next"] == "global"
        for rank, letter in enumerate(["C", "A", "B"], start=1):
            request(srv, "POST", "/api/answer", {"prompt": -1, "item": letter, "aspect": "global_rank", "value": rank},
                    headers=r1)
        assert json.loads(request(srv, "GET", "/api/me", headers=r1)[1])["progress"]["next"] == "done"
        assert json.loads(request(srv, "GET", "/api/me", headers=sign_in(srv, "r2"))[1])["progress"]["next"] == 0
    finally:
        srv.shutdown()
        srv.server_close()


def test_each_rater_reaches_only_their_own_answers(server, study_dir):
    alice, bob = sign_in(server, "alice"), sign_in(server, "bob")
    answer = {"prompt": 0, "item": "A", "aspect": "clinical_realism", "value": 9}
    assert request(server, "POST", "/api/answer", answer, headers=alice)[0] == 200
    assert request(server, "POST", "/api/comment", {"prompt": 0, "text": "alice's note"}, headers=alice)[0] == 200
    # bob sees only his own (empty) state, and cannot write as alice, neither by naming her nor by old routes
    state = json.loads(request(server, "GET", "/api/me", headers=bob)[1])
    assert state["rater"] == "bob" and state["answers"] == [] and state["comments"] == {}
    assert request(server, "POST", "/api/answer", {**answer, "rater": "alice", "value": 0}, headers=bob)[0] == 403
    assert request(server, "POST", "/api/comment", {"rater": "alice", "prompt": 0, "text": "x"}, headers=bob)[0] == 403
    assert request(server, "GET", "/api/rater/alice", headers=bob)[0] == 404
    assert request(server, "POST", "/api/rater", {"rater": "alice"}, headers=bob)[0] == 404
    mine = json.loads(request(server, "GET", "/api/me", headers=alice)[1])
    assert [a["value"] for a in mine["answers"]] == [9] and mine["comments"] == {"0": "alice's note"}
    # without a link nothing of the study is served, and nothing is accepted
    rel = json.loads(request(server, "GET", "/api/study", headers=alice)[1])["prompts"][0]["sets"]["A"][0]
    for path in ("/api/study", "/api/me", "/" + rel):
        assert request(server, "GET", path, auth=False)[0] == 401
    assert request(server, "POST", "/api/answer", {**answer, "rater": "alice"}, auth=False)[0] == 401
    forged = {"Cookie": f"{server.cookie_name}={'x' * 43}"}
    assert request(server, "GET", "/api/me", headers=forged)[0] == 401
    assert request(server, "GET", "/r/" + "x" * 43, auth=False)[0] == 403
    assert request(server, "GET", "/", auth=False)[0] == 200  # the page itself (it asks for the link)
    # a reissued link revokes the old one
    new_alice = sign_in(server, "alice", reissue=True)
    assert request(server, "GET", "/api/me", headers=alice)[0] == 401
    assert json.loads(request(server, "GET", "/api/me", headers=new_alice)[1])["answers"][0]["value"] == 9
    with pytest.raises(AnswerError, match="already has a link"):
        server.store.issue_link("bob")
    # only hashes are stored: the database does not give a link away
    with sqlite3.connect(server.store.path) as db:
        stored = [r[0] for r in db.execute("SELECT token_sha256 FROM tokens")]
    assert all(len(h) == 64 for h in stored) and new_alice["Cookie"].split("=", 1)[1] not in stored


def test_ratings_database_is_private(server):
    request(server, "POST", "/api/answer", {"prompt": 0, "item": "A", "aspect": "clinical_realism", "value": 1})
    path = server.store.path
    db = server.store._connect()  # while a connection is open, SQLite's -wal and -shm files exist beside it
    try:
        db.execute("SELECT count(*) FROM answers").fetchall()
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            assert p.exists() and stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    finally:
        db.close()
    os.chmod(path, 0o644)  # a database from an older msdm is tightened when opened
    RatingStore(path, server.study)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_raters_command_prints_links_that_sign_in(study_dir, tmp_path):
    import shutil

    study = tmp_path / "study"
    shutil.copytree(study_dir, study)
    out = subprocess.run([sys.executable, "-m", "msdm", "annotate", "raters", str(study), "alice", "bob",
                          "--url", "http://127.0.0.1:9/"], capture_output=True, text=True, check=True).stdout
    links = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
    assert set(links) == {"alice", "bob"} and links["alice"] != links["bob"]
    again = subprocess.run([sys.executable, "-m", "msdm", "annotate", "raters", str(study), "alice"],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "--reissue" in again.stderr and "Traceback" not in again.stderr
    srv = StudyServer(study, port=0)
    srv.start_in_thread()
    try:
        token = links["alice"].rsplit("/r/", 1)[1]
        status, _, headers = request(srv, "GET", f"/r/{token}", auth=False)
        cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}
        assert json.loads(request(srv, "GET", "/api/me", headers=cookie)[1])["rater"] == "alice"
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
            if "http://" in line:
                url = "http://" + line.split("http://", 1)[1].split()[0]
        assert url and url.startswith("http://127.0.0.1:")
        host, port = url[len("http://"):].rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        assert (study / RATINGS_FILE).exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
