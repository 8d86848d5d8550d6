"""The ratings store: SQLite in WAL mode, one transaction per answer, so nothing given is ever lost.

Every answer the page sends is validated against the study and committed before the page is told it is saved
(``synchronous=FULL``: a committed answer survives a crash of the server or the machine). ``answers`` holds the
current value of each (rater, prompt, item, aspect); ``events`` keeps every change in order, an audit trail of how
a rating was reached. A database belongs to one study (``meta.study_id``): the server refuses to mix studies.

**Raters and their links.** A rater exists once the study's owner gives them a link (:meth:`RatingStore.issue_link`,
``msdm annotate raters STUDY NAME``): a random 256-bit token of which only the SHA-256 is stored (``tokens``), so a
copy of the database does not let anyone rate as someone else. The server maps a request's token to its rater and
serves and accepts only that rater's answers. The database file (and SQLite's ``-wal``/``-shm`` beside it, which
SQLite creates with the database's mode) is readable by its owner only (0600): it holds every rater's answers.

Answer vocabulary (``prompt`` is the 0-based study index, :data:`~msdm.annotate.study.GLOBAL` for the last page):

* scores: ``item`` = a letter, ``aspect`` = an aspect id, ``value`` 0–10;
* per-prompt rank: ``item`` = a letter or ``"real"``, ``aspect = "rank"``, ``value`` 1…K+1 (1 = best);
* Global Preference: ``prompt = GLOBAL``, ``item`` = a letter of the global page, ``aspect = "global_rank"``,
  ``value`` 1…K.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import threading
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from msdm.annotate.study import ASPECT_IDS, GLOBAL, REAL, SCORE_RANGE

RANK = "rank"
GLOBAL_RANK = "global_rank"
RATER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_COMMENT = 4000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
    rater TEXT PRIMARY KEY, created_at TEXT NOT NULL, user_agent TEXT
);
CREATE TABLE IF NOT EXISTS answers (
    rater TEXT NOT NULL, prompt INTEGER NOT NULL, item TEXT NOT NULL, aspect TEXT NOT NULL,
    value INTEGER NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (rater, prompt, item, aspect)
);
CREATE TABLE IF NOT EXISTS comments (
    rater TEXT NOT NULL, prompt INTEGER NOT NULL, text TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (rater, prompt)
);
CREATE TABLE IF NOT EXISTS tokens (
    rater TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rater TEXT NOT NULL, prompt INTEGER NOT NULL, item TEXT NOT NULL,
    aspect TEXT NOT NULL, value TEXT, at TEXT NOT NULL
);
"""


class AnswerError(ValueError):
    """An answer the study does not allow (unknown prompt, item, aspect, or a value out of range)."""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _private_file(path: Path) -> None:
    """Create ``path`` as an empty 0600 file if missing; tighten an existing one (and its WAL files) to 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists() and p.stat().st_mode & 0o077:
            os.chmod(p, 0o600)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RatingStore:
    """Answers of one study in ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike, study: dict):
        self.path = Path(path)
        self.study = study
        self.num_prompts = len(study["prompts"])
        self.letters = list(study["letters"])
        self.global_letters = list(study["global"]["sets"])
        self._lock = threading.Lock()  # one writer at a time (SQLite would serialise anyway; this avoids BUSY)
        _private_file(self.path)  # before SQLite opens it: SQLite creates files 0644 and copies that mode to the WAL
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'study_id'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('study_id', ?)", (study["id"],))
            elif row[0] != study["id"]:
                raise AnswerError(f"{self.path} holds the ratings of study {row[0]}, not of {study['id']}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        db.isolation_level = "DEFERRED"  # `with db:` = one transaction, committed on exit
        return db

    # ------------------------------------------------------------------ validation
    @staticmethod
    def check_rater(rater) -> str:
        if not isinstance(rater, str) or not RATER_RE.match(rater):
            raise AnswerError("a rater id is 1-64 letters, digits, '.', '_', '-', '@' and starts with a letter or digit")
        return rater

    def check(self, prompt, item, aspect, value) -> tuple[int, str, str, int]:
        if isinstance(value, bool) or not isinstance(value, int) or isinstance(prompt, bool) or not isinstance(prompt, int):
            raise AnswerError("prompt and value must be integers")
        if aspect == GLOBAL_RANK:
            if prompt != GLOBAL or item not in self.global_letters or not 1 <= value <= len(self.global_letters):
                raise AnswerError(f"global rank: item in {self.global_letters}, value 1..{len(self.global_letters)}")
            return prompt, item, aspect, value
        if not 0 <= prompt < self.num_prompts:
            raise AnswerError(f"prompt must be 0..{self.num_prompts - 1}")
        if aspect == RANK:
            items = self.letters + [REAL]
            if item not in items or not 1 <= value <= len(items):
                raise AnswerError(f"rank: item in {items}, value 1..{len(items)}")
        elif aspect in ASPECT_IDS:
            lo, hi = SCORE_RANGE
            if item not in self.letters or not lo <= value <= hi:
                raise AnswerError(f"score: item in {self.letters}, value {lo}..{hi}")
        else:
            raise AnswerError(f"unknown aspect {aspect!r}")
        return prompt, item, aspect, value

    # ------------------------------------------------------------------ writes
    def add_rater(self, rater: str, user_agent: str | None = None) -> None:
        self.check_rater(rater)
        with self._lock, closing(self._connect()) as db, db:
            db.execute("INSERT OR IGNORE INTO raters VALUES (?, ?, ?)", (rater, _now(), (user_agent or "")[:300]))

    def issue_link(self, rater: str, reissue: bool = False) -> str:
        """A new secret token for ``rater`` (created if new); only its hash is kept, so it is shown once.

        A rater who already has a token keeps it unless ``reissue`` (which revokes the old link)."""
        self.check_rater(rater)
        token = secrets.token_urlsafe(32)
        with self._lock, closing(self._connect()) as db, db:
            if not reissue and db.execute("SELECT 1 FROM tokens WHERE rater = ?", (rater,)).fetchone():
                raise AnswerError(f"rater {rater!r} already has a link (reissue it to revoke the old one)")
            db.execute("INSERT OR IGNORE INTO raters VALUES (?, ?, '')", (rater, _now()))
            db.execute("INSERT INTO tokens VALUES (?, ?, ?) ON CONFLICT (rater) DO UPDATE SET "
                       "token_sha256 = excluded.token_sha256, created_at = excluded.created_at",
                       (rater, _token_hash(token), _now()))
        return token

    def rater_for_token(self, token) -> str | None:
        """The rater a token belongs to, or None (also for anything that is not a plausible token)."""
        if not isinstance(token, str) or not 20 <= len(token) <= 128:
            return None
        with closing(self._connect()) as db:
            row = db.execute("SELECT rater FROM tokens WHERE token_sha256 = ?", (_token_hash(token),)).fetchone()
        return row[0] if row else None

    def linked_raters(self) -> list[str]:
        with closing(self._connect()) as db:
            return [r[0] for r in db.execute("SELECT rater FROM tokens ORDER BY created_at, rater")]

    def save(self, rater: str, prompt: int, item: str, aspect: str, value: int) -> None:
        """Validate and commit one answer (the current value and an event)."""
        self.check_rater(rater)
        prompt, item, aspect, value = self.check(prompt, item, aspect, value)
        now = _now()
        with self._lock, closing(self._connect()) as db, db:
            db.execute("INSERT OR IGNORE INTO raters VALUES (?, ?, '')", (rater, now))
            db.execute(
                "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rater, prompt, item, aspect) "
                "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (rater, prompt, item, aspect, value, now),
            )
            db.execute("INSERT INTO events (rater, prompt, item, aspect, value, at) VALUES (?, ?, ?, ?, ?, ?)",
                       (rater, prompt, item, aspect, str(value), now))

    def save_comment(self, rater: str, prompt: int, text: str) -> None:
        self.check_rater(rater)
        if isinstance(prompt, bool) or not isinstance(prompt, int) or not (0 <= prompt < self.num_prompts
                                                                          or prompt == GLOBAL):
            raise AnswerError("comment: unknown prompt")
        if not isinstance(text, str) or len(text) > MAX_COMMENT:
            raise AnswerError(f"a comment is a string of at most {MAX_COMMENT} characters")
        now = _now()
        with self._lock, closing(self._connect()) as db, db:
            db.execute("INSERT OR IGNORE INTO raters VALUES (?, ?, '')", (rater, now))
            db.execute("INSERT INTO comments VALUES (?, ?, ?, ?) ON CONFLICT (rater, prompt) "
                       "DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at", (rater, prompt, text, now))
            db.execute("INSERT INTO events (rater, prompt, item, aspect, value, at) VALUES (?, ?, '', 'comment', ?, ?)",
                       (rater, prompt, text, now))

    # ------------------------------------------------------------------ reads
    def answers(self, rater: str | None = None) -> list[dict]:
        q = "SELECT rater, prompt, item, aspect, value, updated_at FROM answers"
        args: tuple = ()
        if rater is not None:
            q, args = q + " WHERE rater = ?", (rater,)
        with closing(self._connect()) as db:
            rows = db.execute(q + " ORDER BY rater, prompt, item, aspect", args).fetchall()
        return [dict(zip(("rater", "prompt", "item", "aspect", "value", "updated_at"), r)) for r in rows]

    def comments(self, rater: str | None = None) -> list[dict]:
        q = "SELECT rater, prompt, text FROM comments" + (" WHERE rater = ?" if rater else "")
        with closing(self._connect()) as db:
            rows = db.execute(q + " ORDER BY rater, prompt", (rater,) if rater else ()).fetchall()
        return [dict(zip(("rater", "prompt", "text"), r)) for r in rows]

    def raters(self) -> list[str]:
        with closing(self._connect()) as db:
            return [r[0] for r in db.execute("SELECT rater FROM raters ORDER BY created_at, rater")]

    def progress(self, rater: str) -> dict:
        """``{"complete": [study indices], "global_complete", "next": index | "global" | "done", "total"}``."""
        return progress_from_answers(self.study, self.answers(rater))


def prompt_complete(study: dict, values: dict[tuple[int, str, str], int], k: int) -> bool:
    """All six scores of every set and a rank of every item, each rank used once."""
    letters = study["letters"]
    if any((k, letter, a) not in values for letter in letters for a in ASPECT_IDS):
        return False
    ranks = [values.get((k, item, RANK)) for item in letters + [REAL]]
    return None not in ranks and len(set(ranks)) == len(ranks)


def global_complete(study: dict, values: dict[tuple[int, str, str], int]) -> bool:
    ranks = [values.get((GLOBAL, letter, GLOBAL_RANK)) for letter in study["global"]["sets"]]
    return None not in ranks and len(set(ranks)) == len(ranks)


def progress_from_answers(study: dict, answers: list[dict]) -> dict:
    values = {(a["prompt"], a["item"], a["aspect"]): a["value"] for a in answers}
    n = len(study["prompts"])
    complete = [k for k in range(n) if prompt_complete(study, values, k)]
    done_global = global_complete(study, values)
    nxt: int | str = next((k for k in range(n) if k not in set(complete)), "global" if not done_global else "done")
    return {"complete": complete, "global_complete": done_global, "next": nxt, "total": n}
