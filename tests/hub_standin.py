"""A loopback HTTP stand-in for the Hugging Face Hub and for NVIDIA's NGC download URL.

Serves files from a folder laid out as ``<owner>/<repo>/<file>`` the way the Hub's
``/<repo_id>/resolve/<revision>/<file>`` endpoint does (with the headers huggingface_hub reads),
and any other path as a plain static file. Bound to 127.0.0.1 only; stopped by the tests.
"""

from __future__ import annotations

import hashlib
import re
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
COMMIT = "0" * 40


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, root: Path, log: list, *args, **kwargs):
        self.root = root
        self.log_ = log
        super().__init__(*args, **kwargs)

    def log_message(self, *args):  # keep test output clean
        pass

    def _target(self) -> Path | None:
        path = self.path.split("?", 1)[0]
        m = RESOLVE.match(path)
        rel = f"{m['repo']}/{m['file']}" if m else path.lstrip("/")
        p = (self.root / rel).resolve()
        if self.root.resolve() not in p.parents or not p.is_file():
            return None
        return p

    def _headers(self, p: Path) -> None:
        data = p.read_bytes()
        etag = hashlib.sha256(data).hexdigest()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self):
        self.log_.append(("HEAD", self.path))
        p = self._target()
        if p is None:
            self.send_error(404)
            return
        self._headers(p)

    def do_GET(self):
        self.log_.append(("GET", self.path))
        p = self._target()
        if p is None:
            self.send_error(404)
            return
        self._headers(p)
        self.wfile.write(p.read_bytes())


class StandIn:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, self.root, self.requests))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
