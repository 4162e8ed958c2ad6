"""A real HTTP proxy that answers as a CouchDB cluster in trouble would.

It sits between picas and the test server and forwards every request.
On demand it turns answers into the ones a 3-node cluster gives and a
single server never does:

* ``split_races``: a write that lost a race (409) lands anyway, as a
  conflicting branch made for real with ``new_edits=false``, and is
  answered ``"accepted": true`` (202 for a single write), as when the
  replicas split two to one;
* ``no_quorum``: every write is answered as accepted, as when only one
  node of three is up (the losers of races land as branches too);
* ``cut(pattern)``: the request reaches the server, and the connection is
  closed before the answer, as when a network drops mid-request;
* ``delay``: every answer waits that long;
* ``answer(pattern, status, body)``: requests that match get this answer
  from the proxy and never reach the server, as CouchDB's answers that the
  test server cannot give (a view query timing out while the index builds,
  the index builds in ``_active_tasks``).

``seen`` lists every request's ``METHOD path``.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from picas.server import free_port


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.split_races = False
        self.no_quorum = False
        self.delay = 0.0
        self._cuts: list[tuple[re.Pattern, int]] = []
        self._answers: list[tuple[re.Pattern, int, bytes]] = []
        self.seen: list[str] = []
        self.stats = {"requests": 0, "accepted": 0, "branches": 0, "cut": 0}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_COPY = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def cut(self, pattern: str, times: int = 1) -> None:
        """Close the connection of the next ``times`` requests whose
        ``METHOD path`` matches, after the server has handled them."""
        with self._lock:
            self._cuts.append((re.compile(pattern), times))

    def answer(self, pattern: str, status: int, body: object) -> None:
        """Answer every request whose ``METHOD path`` matches with ``status`` and
        ``body`` (as JSON), without forwarding it."""
        with self._lock:
            self._answers.append((re.compile(pattern), status, json.dumps(body).encode()))

    def _canned(self, line: str) -> tuple[int, bytes] | None:
        with self._lock:
            for pattern, status, data in self._answers:
                if pattern.search(line):
                    return status, data
        return None

    def _should_cut(self, line: str) -> bool:
        with self._lock:
            for i, (pattern, times) in enumerate(self._cuts):
                if pattern.search(line):
                    if times <= 1:
                        del self._cuts[i]
                    else:
                        self._cuts[i] = (pattern, times - 1)
                    self.stats["cut"] += 1
                    return True
        return False

    # -- forwarding -----------------------------------------------------------
    def _send(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, dict(response.getheaders()), data
        finally:
            conn.close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "connection", "accept-encoding")}
        line = f"{handler.command} {handler.path}"
        with self._lock:
            self.stats["requests"] += 1
            self.seen.append(line)
        canned = self._canned(line)
        if canned is not None:
            self._reply(handler, canned[0], {"Content-Type": "application/json"}, canned[1])
            return
        status, out_headers, data = self._send(handler.command, handler.path, headers, body)
        if handler.command in ("PUT", "POST", "DELETE") and (self.split_races or self.no_quorum):
            status, data = self._as_cluster(handler.command, handler.path, headers, body,
                                            status, data)
        if self._should_cut(f"{handler.command} {handler.path}"):
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return
        if self.delay:
            threading.Event().wait(self.delay)
        self._reply(handler, status, out_headers, data)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, out_headers: dict,
               data: bytes) -> None:
        handler.send_response(status)
        for name, value in out_headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding",
                                    "content-encoding"):
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    # -- cluster answers --------------------------------------------------------
    def _as_cluster(self, method: str, path: str, headers: dict, body: bytes,
                    status: int, data: bytes) -> tuple[int, bytes]:
        db_path, _, _query = path.partition("?")
        parts = [p for p in db_path.split("/") if p]
        if not parts or parts[0].startswith("_"):
            return status, data
        try:
            answer = json.loads(data or b"null")
            sent = json.loads(body or b"null")
        except ValueError:
            return status, data
        if method == "POST" and parts[1:] == ["_bulk_docs"] and isinstance(answer, list):
            if sent.get("new_edits") is False:
                return status, data
            return self._bulk_as_cluster(parts[0], sent, answer, headers, status)
        is_doc_write = method == "PUT" and len(parts) == 2 and not parts[1].startswith("_") \
            and isinstance(sent, dict)
        if is_doc_write and status == 409:
            item = self._branch(parts[0], {**sent, "_id": parts[1]}, headers)
            if item is not None:
                self._count("accepted")
                return 202, json.dumps(item).encode()
        if is_doc_write and status in (200, 201) and self.no_quorum:
            self._count("accepted")
            return 202, data
        return status, data

    def _bulk_as_cluster(self, database: str, sent: dict, answer: list, headers: dict,
                         status: int) -> tuple[int, bytes]:
        docs = {doc.get("_id"): doc for doc in sent.get("docs", []) if isinstance(doc, dict)}
        out = []
        for item in answer:
            if item.get("error") == "conflict" and item.get("id") in docs:
                item = self._branch(database, docs[item["id"]], headers) or item
            elif "error" not in item and self.no_quorum:
                item = {**item, "accepted": True}
            if item.get("accepted"):
                self._count("accepted")
            out.append(item)
        status = 202 if any(i.get("accepted") for i in out) else status
        return status, json.dumps(out).encode()

    def _count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def _branch(self, database: str, doc: dict, headers: dict) -> dict | None:
        """Store ``doc`` as a child of its ``_rev`` beside the revision that won,
        as a replica that saw it first would have; the answer CouchDB gives."""
        parent = str(doc.get("_rev") or "")
        pos, _, digest = parent.partition("-")
        if not pos.isdigit() or not digest:
            return None
        new = uuid.uuid4().hex
        branch = {**doc, "_rev": f"{int(pos) + 1}-{new}",
                  "_revisions": {"start": int(pos) + 1, "ids": [new, digest]}}
        payload = json.dumps({"docs": [branch], "new_edits": False}).encode()
        status, _, _ = self._send("POST", f"/{database}/_bulk_docs",
                                  {**headers, "Content-Type": "application/json",
                                   "Content-Length": str(len(payload))}, payload)
        if status >= 300:
            return None
        self._count("branches")
        return {"ok": True, "id": doc["_id"], "rev": branch["_rev"], "accepted": True}
