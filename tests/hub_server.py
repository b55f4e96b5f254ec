"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, in the standard library only.

It speaks enough of the Hub's wire protocol (huggingface_hub 2.4) for the real client to run end
to end against it: `whoami`, `create_repo`, `upload_folder` (preupload, LFS batch + PUT, NDJSON
commit; or inline "regular" files), `list_repo_tree`, `get_paths_info`, `repo_info`,
`hf_hub_download`, `HfFileSystem` and `datasets.load_dataset` through `hf://`. It is for tests
and demos: state lives in memory, nothing is persisted.

Xet: with hf_xet installed the client sends every "lfs" file through xet, which this server does
not speak. Either set `huggingface_hub.constants.HF_HUB_DISABLE_XET = True` (classic LFS path,
the default assumption here), or start the server with `lfs=False`, which answers "regular" for
every file (inline base64 commits through the client's streamed multi-commit pipeline).

Usage:

    from tests.hub_server import HubServer    # repo root on sys.path (pytest: pythonpath = ["."])
    with HubServer(tokens={"hf_secret": "alice"}) as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_secret")
        ...
        hub.fail(method="PUT", path=r"^/lfs-upload/", after=2, times=1)   # fault mode
        hub.corrupt_file("datasets", "alice/demo", "data/x.tar")           # damage a stored file

Standalone (for a demo), from the repository root:
`python -m tests.hub_server --port 8765 --token hf_secret:alice` prints the endpoint and serves until
interrupted; point `oripid push --endpoint` (and HF_ENDPOINT for downloads) at it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# Extensions the real Hub's default .gitattributes routes through LFS.
LFS_EXTENSIONS = (
    ".tar",
    ".parquet",
    ".arrow",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".npy",
    ".npz",
    ".safetensors",
    ".bin",
    ".zip",
    ".gz",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS).encode()


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, which the Hub reports as `oid` for regular files."""
    return hashlib.sha1(b"blob " + str(len(content)).encode() + b"\0" + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def tree_entry(self, path: str) -> dict:
        entry: dict = {"type": "file", "path": path, "size": len(self.content)}
        if self.lfs:
            pointer = lfs_pointer(self.sha256, len(self.content))
            entry["oid"] = git_blob_sha1(pointer)
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": len(pointer)}
        else:
            entry["oid"] = git_blob_sha1(self.content)
        return entry


@dataclass
class Repo:
    repo_type: str  # "model", "dataset" or "space"
    repo_id: str
    owner: str
    private: bool
    files: dict[str, StoredFile] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)
    last_modified: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"]

    def commit(self, summary: str) -> str:
        parent = self.commits[-1]["oid"] if self.commits else ""
        oid = hashlib.sha1(
            f"{parent}\n{len(self.commits)}\n{summary}\n{sorted(self.files)}".encode()
        ).hexdigest()
        self.commits.append({"oid": oid, "summary": summary})
        self.last_modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return oid


@dataclass
class Fault:
    """Answer `status` to matching requests once `after` of them have passed, `times` times (None: always)."""

    method: str | None
    path: re.Pattern
    after: int
    times: int | None
    status: int
    seen: int = 0
    fired: int = 0

    def hit(self, method: str, path: str) -> bool:
        if (self.method and method != self.method) or not self.path.search(path):
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


_TYPE_PREFIX = {"models": "model", "datasets": "dataset", "spaces": "space"}


class HubServer:
    """The server: `start()`/`stop()` or a context manager; `endpoint` is its base URL."""

    def __init__(
        self,
        *,
        tokens: dict[str, str] | None = None,
        lfs: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.tokens = dict(tokens or {})  # token -> user name
        self.lfs = lfs
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> content, uploaded but maybe not committed
        self.faults: list[Fault] = []
        self.damage: list[re.Pattern] = []  # committed paths stored with one byte flipped (silent corruption)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), for assertions
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ test controls
    def fail(
        self,
        *,
        path: str,
        method: str | None = None,
        after: int = 0,
        times: int | None = 1,
        status: int = 507,
    ) -> Fault:
        """Fault mode: matching requests (regex on the URL path) fail with `status` after `after` pass.

        The default 507 is not among the client's retried statuses (408, 429, 5xx gateway errors),
        so the failure surfaces at once, like an interrupted upload, instead of after backoff.
        """
        fault = Fault(method=method, path=re.compile(path), after=after, times=times, status=status)
        with self.lock:
            self.faults.append(fault)
        return fault

    def damage_on_commit(self, path: str) -> None:
        """Fault mode, silent kind: files committed under a matching path (regex) are stored damaged.

        The upload itself succeeds, as with a storage fault the client cannot see; only a check of
        the stored files against the local ones finds it.
        """
        with self.lock:
            self.damage.append(re.compile(path))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.damage.clear()

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        return self.repos[(_singular(repo_type), repo_id)]

    def corrupt_file(self, repo_type: str, repo_id: str, path: str) -> None:
        """Flip one stored byte of a committed file (same size), as a damaged upload would leave it."""
        with self.lock:
            stored = self.repo(repo_type, repo_id).files[path]
            stored.content = _flip_middle_byte(stored.content)

    def delete_file(self, repo_type: str, repo_id: str, path: str) -> None:
        with self.lock:
            repo = self.repo(repo_type, repo_id)
            del repo.files[path]
            repo.commit(f"delete {path}")

    def count(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and pattern.search(p))

    # ------------------------------------------------------------------ request dispatch
    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        url = urlsplit(raw_path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        with self.lock:
            for fault in self.faults:
                if fault.hit(method, path):
                    return _json(fault.status, {"error": f"fault injected by the test server on {path}"})
        token = None
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
        user = self.tokens.get(token) if token else None
        if token and user is None:
            return _json(401, {"error": "Invalid credentials in Authorization header"})
        try:
            return self._route(method, path, query, headers, body, user)
        except HubError as exc:
            status, payload = exc.status, {"error": exc.message, **exc.extra}
            status_, hdrs, data = _json(status, payload)
            if exc.code:
                hdrs["X-Error-Code"] = exc.code
            hdrs["X-Error-Message"] = exc.message
            return status_, hdrs, data

    def _route(self, method, path, query, headers, body, user) -> tuple[int, dict, bytes]:
        if path == "/api/whoami-v2" and method == "GET":
            if user is None:
                raise HubError(401, "Invalid user token.")
            return _json(200, {"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}})
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body or b"{}"), user)
        if path == "/api/validate-yaml" and method == "POST":
            return _json(200, {"warnings": [], "errors": []})
        if path.startswith("/lfs-upload/") and method == "PUT":
            return self._lfs_put(path.rsplit("/", 1)[-1], body)

        m = re.match(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+?)(?:/(.*))?$", path)
        if m:
            repo = self._get_repo(m.group(1), m.group(2), user)
            rest = m.group(3) or ""
            return self._api(method, repo, rest, query, headers, body, user)

        m = re.match(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+?)\.git/info/lfs/objects/batch$", path)
        if m and method == "POST":
            repo = self._get_repo(m.group(1) or "models", m.group(2), user, write=True)
            return self._lfs_batch(repo, json.loads(body))

        m = re.match(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m and method in ("GET", "HEAD"):
            repo = self._get_repo(m.group(1) or "models", m.group(2), user)
            return self._resolve(method, repo, m.group(3), m.group(4), headers)
        raise HubError(404, f"not found: {method} {path}")

    # ------------------------------------------------------------------ repositories
    def _get_repo(self, type_plural: str, repo_id: str, user: str | None, write: bool = False) -> Repo:
        repo = self.repos.get((_singular(type_plural), repo_id))
        if repo is None or (repo.private and user != repo.owner):
            raise HubError(404, f"Repository Not Found for url: {repo_id}.", code="RepoNotFound")
        if write and user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _create_repo(self, payload: dict, user: str | None) -> tuple[int, dict, bytes]:
        if user is None:
            raise HubError(401, "You must be authenticated to create a repository.")
        namespace = payload.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repository under {namespace}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.endpoint}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            # exist_ok reads `url` from the 409 body.
            raise HubError(409, "You already created this repo", extra={"url": url})
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        repo = Repo(repo_type=repo_type, repo_id=repo_id, owner=user, private=private)
        repo.files[".gitattributes"] = StoredFile(GITATTRIBUTES, lfs=False)
        repo.commit("initial commit")
        self.repos[(repo_type, repo_id)] = repo
        return _json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _api(self, method, repo: Repo, rest: str, query, headers, body, user) -> tuple[int, dict, bytes]:
        if method == "GET" and (rest == "" or rest.startswith("revision/")):
            return _json(200, self._info(repo))
        m = re.match(r"^(preupload|commit|tree|paths-info)/([^/]+)(?:/(.*))?$", rest)
        if not m:
            raise HubError(404, f"not found: {method} {rest}")
        action, revision, sub = m.group(1), m.group(2), m.group(3) or ""
        self._check_revision(repo, revision)
        if action == "preupload" and method == "POST":
            self._require_owner(repo, user)
            return self._preupload(repo, json.loads(body))
        if action == "commit" and method == "POST":
            self._require_owner(repo, user)
            return self._commit(repo, body)
        if action == "tree" and method == "GET":
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return _json(200, self._tree(repo, sub.strip("/"), recursive))
        if action == "paths-info" and method == "POST":
            content_type = headers.get("Content-Type", "")
            if "json" in content_type:
                paths = json.loads(body).get("paths", [])
            else:
                paths = parse_qs(body.decode()).get("paths", [])
            return _json(200, self._paths_info(repo, paths))
        raise HubError(405, f"method not allowed: {method} {rest}")

    def _check_revision(self, repo: Repo, revision: str) -> None:
        revision = unquote(revision)
        if revision not in ("main", repo.sha) and not any(c["oid"] == revision for c in repo.commits):
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    def _require_owner(self, repo: Repo, user: str | None) -> None:
        if user != repo.owner:
            raise HubError(
                401 if user is None else 403, f"You don't have the rights to write to {repo.repo_id}"
            )

    def _info(self, repo: Repo) -> dict:
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.owner,
            "sha": repo.sha,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "lastModified": repo.last_modified,
            "createdAt": repo.last_modified,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [{"rfilename": p} for p in sorted(repo.files)],
        }

    # ------------------------------------------------------------------ upload
    def _preupload(self, repo: Repo, payload: dict) -> tuple[int, dict, bytes]:
        files = []
        for f in payload.get("files", []):
            path, size = f["path"], int(f["size"])
            sample = base64.b64decode(f.get("sample", ""))
            lfs = self.lfs and (
                path.lower().endswith(LFS_EXTENSIONS) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample
            )
            stored = repo.files.get(path)
            # The oid of the committed file lets the client skip unchanged files; for LFS files the
            # client compares it with the content sha256, for regular ones with the git blob sha1.
            oid = None
            if stored is not None:
                oid = stored.sha256 if stored.lfs else git_blob_sha1(stored.content)
            files.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return _json(200, {"files": files, "commitOid": repo.sha})

    def _lfs_batch(self, repo: Repo, payload: dict) -> tuple[int, dict, bytes]:
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict = {"oid": oid, "size": size}
            if oid not in self.lfs_store:  # no actions = already stored, the client skips it
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{oid}", "header": {}}}
            objects.append(entry)
        return _json(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str, body: bytes) -> tuple[int, dict, bytes]:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"content does not match sha256 {oid}")
        self.lfs_store[oid] = body
        return 200, {"ETag": f'"{oid}"'}, b""

    def _commit(self, repo: Repo, body: bytes) -> tuple[int, dict, bytes]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        parent = header.get("parentCommit")
        if parent and parent != repo.sha:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        staged = dict(repo.files)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "only base64 file content is supported")
                staged[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                content = self.lfs_store.get(value["oid"])
                if content is None or len(content) != int(value["size"]):
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                staged[value["path"]] = StoredFile(content, lfs=True)
            elif key == "deletedFile":
                staged.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                staged = {p: f for p, f in staged.items() if not p.startswith(prefix)}
            elif key != "header":
                raise HubError(400, f"unsupported commit operation {key}")
        for line in lines:
            path = line["value"].get("path", "") if line["key"] in ("file", "lfsFile") else ""
            if path and any(p.search(path) for p in self.damage):
                staged[path] = StoredFile(_flip_middle_byte(staged[path].content), lfs=staged[path].lfs)
        repo.files = staged
        oid = repo.commit(header.get("summary", ""))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return _json(
            200, {"commitOid": oid, "commitUrl": f"{self.endpoint}/{prefix}{repo.repo_id}/commit/{oid}"}
        )

    # ------------------------------------------------------------------ read
    def _tree(self, repo: Repo, sub: str, recursive: bool) -> list[dict]:
        prefix = f"{sub}/" if sub else ""
        if sub and sub in repo.files:
            raise HubError(404, f"{sub} is a file, not a folder", code="EntryNotFound")
        entries: dict[str, dict] = {}
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            parts = rest.split("/")
            # Directories on the way, then the file itself when within reach.
            for depth in range(1, len(parts)):
                directory = prefix + "/".join(parts[:depth])
                if directory not in entries:
                    entries[directory] = {"type": "directory", "path": directory, "oid": _dir_oid(directory)}
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[path] = repo.files[path].tree_entry(path)
        if sub and not entries:
            raise HubError(404, f"{sub} does not exist", code="EntryNotFound")
        return list(entries.values())

    def _paths_info(self, repo: Repo, paths: list[str]) -> list[dict]:
        out = []
        for path in paths:
            path = path.strip("/")
            if path in repo.files:
                out.append(repo.files[path].tree_entry(path))
            elif any(p.startswith(path + "/") for p in repo.files) or path == "":
                out.append({"type": "directory", "path": path, "oid": _dir_oid(path)})
        return out

    def _resolve(self, method, repo: Repo, revision: str, path: str, headers) -> tuple[int, dict, bytes]:
        self._check_revision(repo, revision)
        stored = repo.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry not found: {path}", code="EntryNotFound")
        content = stored.content
        etag = stored.sha256 if stored.lfs else git_blob_sha1(content)
        hdrs = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Last-Modified": email.utils.formatdate(usegmt=True),
        }
        if stored.lfs:
            hdrs["X-Linked-Etag"] = f'"{etag}"'
            hdrs["X-Linked-Size"] = str(len(content))
        status = 200
        range_header = headers.get("Range")
        if range_header:
            m = re.match(r"bytes=(\d*)-(\d*)", range_header)
            if m:
                start = int(m.group(1)) if m.group(1) else max(0, len(content) - int(m.group(2)))
                end = int(m.group(2)) if (m.group(2) and m.group(1)) else len(content) - 1
                end = min(end, len(content) - 1)
                if start >= len(content) and len(content) > 0:
                    return 416, {"Content-Range": f"bytes */{len(content)}"}, b""
                hdrs["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
                content = content[start : end + 1]
                status = 206
        return status, hdrs, content


def _flip_middle_byte(content: bytes) -> bytes:
    data = bytearray(content)
    if data:
        data[len(data) // 2] ^= 0xFF
    return bytes(data)


def _singular(type_plural: str) -> str:
    return _TYPE_PREFIX.get(type_plural, type_plural)


def _dir_oid(path: str) -> str:
    return hashlib.sha1(f"tree {path}".encode()).hexdigest()


def _json(status: int, payload) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every reply carries Content-Length

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = self._read_chunked()
            else:
                body = self.rfile.read(length) if length else b""
            try:
                status, headers, data = server.handle(self.command, self.path, self.headers, body)
            except Exception as exc:  # a server bug: answer 500 with the reason rather than hang
                status, headers, data = _json(500, {"error": f"test server error: {exc!r}"})
            with server.lock:
                server.requests.append((self.command, urlsplit(self.path).path, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _read_chunked(self) -> bytes:
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve

        def log_message(self, format: str, *args) -> None:  # quiet: tests assert on server.requests
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run the Hub-compatible test server until interrupted.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", default=[], help="TOKEN:USER, repeatable")
    parser.add_argument("--regular-only", action="store_true", help="answer uploadMode=regular (xet clients)")
    args = parser.parse_args(argv)
    tokens = dict(t.split(":", 1) for t in args.token)
    with HubServer(tokens=tokens, lfs=not args.regular_only, port=args.port) as hub:
        print(hub.endpoint, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

__all__ = ["HubServer", "Fault", "StoredFile", "git_blob_sha1"]
