"""``msdm annotate serve``: the rating page, on Python's standard-library HTTP server.

**Why the standard library** (``http.server.ThreadingHTTPServer`` + ``sqlite3``) and not Flask/FastAPI: the page
is one static HTML/JS/CSS file and five JSON routes, used by a handful of raters on one machine. The standard
library is the best-kept stack there is (maintained and security-patched with CPython), adds no dependency to pin
or audit, and a clinician's laptop can run the study from a plain ``pip install msdm``. The caveat Python's docs
give for ``http.server`` — it is not hardened for the open internet — is met by what this server does *not* do:
it binds to 127.0.0.1 by default, never maps a URL onto the file system (images are served from an allow-list
built from ``study.json``, then checked to resolve inside ``images/``), answers only requests whose ``Host`` is
the address it serves (DNS rebinding), accepts only ``application/json`` POSTs (no cross-site form posts), and
sends a strict Content-Security-Policy. The key file, the ratings database and anything outside the study's
``images/`` folder are unreachable by construction.

**Each rater sees and writes only their own answers.** A rater is given a secret link ``/r/<token>``
(``msdm annotate raters STUDY NAME``; :meth:`~msdm.annotate.store.RatingStore.issue_link`). Opening it sets an
``HttpOnly``, ``SameSite=Strict`` cookie holding the token and redirects to the page; every API route and image
then needs that cookie, and the rater is the token's, never a name the client sends (a body naming another rater is
refused). There is no route that lists raters or reads another rater's answers.

Routes: ``GET /`` (the page), ``GET /assets/annotate.{js,css}``, ``GET /r/<token>`` (sign in), and with the
cookie: ``GET /api/study``, ``GET /api/me``, ``POST /api/answer`` ``{"prompt", "item", "aspect", "value"}``,
``POST /api/comment`` ``{"prompt", "text"}``, ``GET /images/...``.
"""

from __future__ import annotations

import json
import posixpath
import re
import socket
import sys
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from msdm.annotate.store import AnswerError, RatingStore
from msdm.annotate.study import RATINGS_FILE, load_study, public_image_paths

MAX_BODY = 64 * 1024
ASSETS = {"/": ("annotate.html", "text/html; charset=utf-8"),
          "/assets/annotate.js": ("annotate.js", "text/javascript; charset=utf-8"),
          "/assets/annotate.css": ("annotate.css", "text/css; charset=utf-8")}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
SIGN_IN = "/r/"


def _asset(name: str) -> bytes:
    return resources.files("msdm").joinpath("assets", name).read_bytes()


class StudyServer(ThreadingHTTPServer):
    """An HTTP server bound to one study folder (see the module docstring)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, study_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, db_path=None,
                 verbose: bool = False):
        self.study_dir = Path(study_dir).resolve()
        self.study = load_study(self.study_dir)
        self.images_root = (self.study_dir / "images").resolve()
        self.allowed = public_image_paths(self.study)
        self.store = RatingStore(db_path or self.study_dir / RATINGS_FILE, self.study)
        self.verbose = verbose
        # What the page may see of study.json: everything but the key commitment (useless to a rater).
        self.public = {k: v for k, v in self.study.items() if k != "key_sha256"}
        # One cookie name per study: cookies are shared by every port of a host, so two studies served side by
        # side on one machine must not read each other's token.
        self.cookie_name = f"msdm_rater_{self.study['id'][:16]}"
        self.assets = {path: (_asset(name), ctype) for path, (name, ctype) in ASSETS.items()}
        self._conns: set = set()
        self._conn_lock = threading.Lock()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        self.host = host
        # Host-header check against DNS rebinding (a web page that resolves its own name to 127.0.0.1 would
        # otherwise reach this server from the rater's browser). Bound to a LAN address, the names the machine
        # is reached by are unknown, so the check is off there (the start-up warning says so).
        self.allowed_hosts = ({f"{n}:{self.port}" for n in ("127.0.0.1", "localhost", "[::1]")}
                              if host in LOOPBACK else None)

    # Keep-alive connections outlive serve_forever(): track them so that closing the server really closes it
    # (as a crash would), instead of leaving handler threads answering on open connections.
    def get_request(self):
        sock, addr = super().get_request()
        with self._conn_lock:
            self._conns.add(sock)
        return sock, addr

    def shutdown_request(self, request):
        with self._conn_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def server_close(self):
        with self._conn_lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        super().server_close()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}/"

    def link(self, token: str) -> str:
        """The personal link of the rater with ``token``."""
        return f"{self.url}r/{token}"

    def start_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="msdm-annotate", daemon=True)
        t.start()
        return t


class Handler(BaseHTTPRequestHandler):
    server: StudyServer
    server_version = "msdm-annotate"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # ------------------------------------------------------------------ plumbing
    def log_message(self, fmt, *args):  # quiet unless asked: raters' answers are not log material
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} - {fmt % args}\n")

    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _error(self, status: HTTPStatus, message: str | None = None) -> None:
        if self.command == "POST":
            self.close_connection = True  # the body may be unread: do not reuse the connection
        self._json(status, {"error": message or status.phrase})

    def _host_ok(self) -> bool:
        if self.server.allowed_hosts is None:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        return host in self.server.allowed_hosts

    # ------------------------------------------------------------------ GET
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if not self._host_ok():
            return self._error(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header")
        raw = urlsplit(self.path).path
        path = unquote(raw)
        if path in self.server.assets:
            body, ctype = self.server.assets[path]
            return self._send(HTTPStatus.OK, body, ctype)
        if path.startswith(SIGN_IN):
            return self._sign_in(path[len(SIGN_IN):])
        if path not in ("/api/study", "/api/me") and not path.startswith("/images/"):
            return self._error(HTTPStatus.NOT_FOUND)
        rater = self._rater()
        if rater is None:
            return self._error(HTTPStatus.UNAUTHORIZED, "open the personal link you were given to rate")
        if path == "/api/study":
            return self._json(HTTPStatus.OK, self.server.public)
        if path == "/api/me":
            return self._rater_state(rater)
        return self._image(path)

    # ------------------------------------------------------------------ who is asking
    def _token(self) -> str | None:
        try:
            jar = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            return None
        morsel = jar.get(self.server.cookie_name)
        return morsel.value if morsel is not None else None

    def _rater(self) -> str | None:
        """The rater of the request's token (cookie), or None: the rater is never taken from what the client says."""
        return self.server.store.rater_for_token(self._token())

    def _sign_in(self, token: str) -> None:
        if not TOKEN_RE.match(token) or self.server.store.rater_for_token(token) is None:
            return self._error(HTTPStatus.FORBIDDEN, "this link is not valid (ask for a new one)")
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", "/")
        # HttpOnly: the page's script never holds the token; SameSite=Strict: no other site can send it.
        self.send_header("Set-Cookie", f"{self.server.cookie_name}={token}; Path=/; HttpOnly; SameSite=Strict; "
                                       "Max-Age=31536000")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _image(self, path: str) -> None:
        rel = path[1:]  # "images/p01/A/01.png"
        parts = rel.split("/")
        if "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts) or posixpath.normpath(rel) != rel:
            return self._error(HTTPStatus.FORBIDDEN, "path refused")
        if rel not in self.server.allowed:  # an allow-list: the key, the database, other files are never listed
            return self._error(HTTPStatus.NOT_FOUND)
        full = (self.server.study_dir / rel).resolve()
        if not full.is_relative_to(self.server.images_root) or not full.is_file():  # symlinks out of the study
            return self._error(HTTPStatus.FORBIDDEN, "path refused")
        self._send(HTTPStatus.OK, full.read_bytes(), "image/png", cache=True)

    def _rater_state(self, rater: str) -> None:
        store = self.server.store
        self._json(HTTPStatus.OK, {
            "rater": rater,
            "answers": [{k: a[k] for k in ("prompt", "item", "aspect", "value")} for a in store.answers(rater)],
            "comments": {str(c["prompt"]): c["text"] for c in store.comments(rater)},
            "progress": store.progress(rater),
        })

    # ------------------------------------------------------------------ POST
    def do_POST(self):
        if not self._host_ok():
            return self._error(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header")
        path = urlsplit(self.path).path
        if path not in ("/api/answer", "/api/comment"):
            return self._error(HTTPStatus.NOT_FOUND)
        rater = self._rater()
        if rater is None:
            return self._error(HTTPStatus.UNAUTHORIZED, "open the personal link you were given to rate")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":  # also keeps cross-site "simple" form posts out (they need a preflight)
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            return self._error(HTTPStatus.BAD_REQUEST, "missing or oversized body")
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "the body is not a JSON object")
        if body.get("rater", rater) != rater:  # one rater may not write another's answers
            return self._error(HTTPStatus.FORBIDDEN, "an answer can only be given for the rater of this link")
        store = self.server.store
        try:
            if path == "/api/answer":
                store.save(rater, body.get("prompt"), body.get("item"), body.get("aspect"), body.get("value"))
                return self._json(HTTPStatus.OK, {"saved": True, "progress": store.progress(rater)})
            store.save_comment(rater, body.get("prompt"), body.get("text"))
            return self._json(HTTPStatus.OK, {"saved": True})
        except AnswerError as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))


def serve(study_dir, host: str = "127.0.0.1", port: int = 8765, verbose: bool = False) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = StudyServer(study_dir, host, port, verbose=verbose)
    n = len(server.study["prompts"])
    raters = server.store.linked_raters()
    print(f"msdm annotate: {server.study['title']!r}, {n} prompts, ratings in {server.store.path}")
    print(f"{len(raters)} rater(s) with a personal link ({', '.join(raters) or 'none yet'}); "
          f"`msdm annotate raters {study_dir} NAME` gives a new rater a link")
    if host not in LOOPBACK:
        print(f"WARNING: listening on {host} over plain HTTP: a rater's link can be read on the network. "
              "Prefer 127.0.0.1 and an SSH tunnel.")
    print(f"serving {server.url} — raters open their own link (Ctrl-C stops; every answer is already saved)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
