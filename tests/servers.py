"""Local HTTP servers on 127.0.0.1 that play the Hugging Face hub and torchvision's download host.

The hub side answers what ``hf_hub_download`` and ``HfApi.upload_folder`` ask: HEAD/GET on
``/<repo>/resolve/<revision>/<file>`` with the hub's headers (commit, etag, linked etag and
size for large files, error codes), and the create-repo, preupload and commit API. The
torchvision side serves ``/models/<file>``. Tests put files in, break them, and count requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    commit: str = "0" * 40

    def commit_files(self, files: dict[str, bytes]) -> str:
        self.files.update(files)
        self.commit = hashlib.sha1((self.commit + "".join(sorted(files))).encode()).hexdigest()
        return self.commit


@dataclass
class State:
    repos: dict[str, Repo] = field(default_factory=dict)
    tv_files: dict[str, bytes] = field(default_factory=dict)
    #: served instead of the real bytes, under the real etag: a hub (or proxy) gone wrong
    tampered: dict[str, bytes] = field(default_factory=dict)
    delay_s: float = 0.0  # per 64 KiB chunk, to keep downloads in flight
    requests: Counter = field(default_factory=Counter)
    #: path -> (what, after): "stall" (send ``after`` bytes of the body, then nothing; -1: not even the headers,
    #: HEAD included), "close" (send ``after`` bytes of the body, from its end if negative, then close the
    #: connection), "drip" (the body a byte every 50 ms) or "status" (answer with HTTP status ``after``, a body of
    #: several lines)
    faults: dict[str, tuple[str, int]] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)  # set on close: stalls end


class Handler(BaseHTTPRequestHandler):
    state: State
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        fault, after = self.state.faults.get(self.path.split("?")[0], (None, 0))
        if fault == "stall" and after < 0:
            self.state.released.wait()
            return
        if fault == "status":
            fault, status, body = None, after, b"Internal error\nRequest ID: 1234\nPlease retry later.\n"
        if fault and self.command != "HEAD":
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault == "drip":
                for i in range(len(body)):
                    if self.state.released.is_set():
                        break
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.05)
                self.close_connection = True
                return
            sent = body[: after if after >= 0 else len(body) + after]
            for i in range(0, len(sent), 1 << 16):
                self.wfile.write(sent[i : i + (1 << 16)])
                time.sleep(self.state.delay_s)
            self.wfile.flush()
            if fault == "stall":
                self.state.released.wait()
            self.close_connection = True
            return
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            for i in range(0, len(body), 1 << 16):
                self.wfile.write(body[i : i + (1 << 16)])
                time.sleep(self.state.delay_s)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.state.requests[(self.command, path)] += 1
        if path.startswith("/models/"):
            data = self.state.tv_files.get(path.removeprefix("/models/"))
            return self._send(404) if data is None else self._send(200, data)
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        self._send(404, headers={"X-Error-Code": "RepoNotFound"})

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._send(404, headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        if revision not in ("main", repo.commit):
            return self._send(404, headers={"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
        data = repo.files.get(filename)
        if data is None:
            return self._send(404, headers={"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{git_blob_sha1(data)}"'}
        if filename.endswith(".safetensors"):  # stored in LFS: the etag is the content's sha256
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        self._send(200, self.state.tampered.get(f"{repo_id}/{filename}", data), headers)

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        self.state.requests[("POST", path)] += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            self.state.repos.setdefault(repo_id, Repo())
            return self._json(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":  # the model card's metadata block
            card = json.loads(body)["content"]
            ok = card.startswith("---\n") and "\n---\n" in card[4:]
            return self._json(200 if ok else 400, {"warnings": [], "errors": [] if ok else [{"message": "no YAML"}]})
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            return self._json(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
            repo = self.state.repos.setdefault("/".join(parts[2:4]), Repo())
            files = {}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            commit = repo.commit_files(files)
            url = f"http://{self.headers['Host']}/{'/'.join(parts[2:4])}/commit/{commit}"
            return self._json(200, {"commitUrl": url, "commitOid": commit})
        self._send(404)


class Server:
    """A running server in a daemon thread; ``url`` is its base address."""

    def __init__(self) -> None:
        self.state = State()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.state.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
