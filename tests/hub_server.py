"""A small local HTTP server speaking enough of the Hugging Face Hub REST API for the real clients.

Standard library only. The server is meant for tests: it binds ``127.0.0.1`` only, stores its
repositories under a directory given by the caller and is driven by the ordinary clients
(``huggingface_hub.HfApi``, ``hf_hub_download``, ``snapshot_download``, ``transformers``'
``from_pretrained`` / ``push_to_hub``) once ``HF_ENDPOINT`` points at it.

The wire protocol follows what ``huggingface_hub`` 2.4 sends and expects (read from its source:
``hf_api.py``, ``_commit_api.py``, ``file_download.py``, ``lfs.py``, ``utils/_http.py``):

======  ==========================================================  ======================================
Method  Path                                                        Used by
======  ==========================================================  ======================================
GET     /api/whoami-v2                                              ``whoami``
POST    /api/repos/create                                           ``create_repo`` (409 when it exists)
DELETE  /api/repos/delete                                           ``delete_repo``
POST    /api/validate-yaml                                          ``create_commit`` with a README.md
GET     /api/{type}s/{ns}/{name}[/revision/{rev}]                   ``model_info`` / ``repo_info``
GET     /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]                ``list_repo_tree`` / ``list_repo_files``
POST    /api/{type}s/{ns}/{name}/paths-info/{rev}                   ``get_paths_info``
GET     /api/{type}s/{ns}/{name}/refs                               ``list_repo_refs``
GET     /api/{type}s/{ns}/{name}/commits/{rev}                      ``list_repo_commits``
POST    /api/{type}s/{ns}/{name}/branch/{branch}                    ``create_branch`` (DELETE: delete_branch)
POST    /api/{type}s/{ns}/{name}/preupload/{rev}                    upload mode: "regular" or "lfs"
POST    /api/{type}s/{ns}/{name}/commit/{rev}                       NDJSON commit (header/file/lfsFile/...)
POST    /[{type}s/]{ns}/{name}.git/info/lfs/objects/batch           LFS batch API (upload only)
POST    /[{type}s/]{ns}/{name}.git/info/lfs/objects/verify          LFS verify
PUT     /_lfs/upload/{oid}?size=..&ticket=..                        LFS basic transfer (no auth header)
HEAD    /[{type}s/]{ns}/{name}/resolve/{rev}/{path}                 file metadata (``get_hf_file_metadata``)
GET     /[{type}s/]{ns}/{name}/resolve/{rev}/{path}                 file content (Range supported)
======  ==========================================================  ======================================

Xet storage is not implemented: the server never advertises it on downloads (no ``X-Xet-Hash``),
and the ``xet-*-token`` routes answer 501 with a hint. ``huggingface_hub`` uploads LFS files
through Xet whenever ``hf_xet`` is installed and ``HF_HUB_DISABLE_XET`` is not set, so clients
must run with ``HF_HUB_DISABLE_XET=1`` (the ``local_hub`` fixture sets it), or the server must be
built with ``lfs_threshold=None`` (every file "regular", inlined base64 in the commit).

Not implemented: Xet, LFS multipart transfers, tags, discussions/PR comments, ``.gitignore``
handling in preupload (``shouldIgnore`` is always false), pagination (one page), copy operations
between repos.

Errors are JSON ``{"error": ...}`` with ``X-Error-Code`` / ``X-Error-Message`` headers, which
``huggingface_hub.utils.hf_raise_for_status`` maps to ``RepositoryNotFoundError`` (RepoNotFound),
``RevisionNotFoundError`` (RevisionNotFound) and ``RemoteEntryNotFoundError`` (EntryNotFound).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["LocalHubServer", "DEFAULT_TOKEN", "DEFAULT_USER", "DEFAULT_GITATTRIBUTES"]

DEFAULT_USER = "user"
DEFAULT_TOKEN = "hf_local_hub_test_token"

# Same shape as the `.gitattributes` the Hub writes in a new repo (trimmed): files matching these
# patterns are stored with LFS, whatever their size.
_LFS_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
]
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _LFS_PATTERNS)

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_BRANCH_RE = re.compile(r"^(?:refs/pr/\d+|[A-Za-z0-9][A-Za-z0-9._/-]{0,199})$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HEX_PREFIX_RE = re.compile(r"^[0-9a-f]{7,40}$")
_FORBIDDEN_SEGMENTS = {"", ".", "..", ".git", ".cache"}
_CHUNK = 1 << 20


class HubError(Exception):
    """An error answered to the client as JSON with the Hub's error headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as `oid`/`blobId` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _validate_repo_path(path: Any) -> str:
    """Validate a path inside a repo; returns it or raises 400."""
    if not isinstance(path, str) or not path or len(path) > 1000:
        raise HubError(400, f"Invalid path in repo: {path!r}")
    if path.startswith("/") or "\\" in path or any(ord(c) < 32 for c in path):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    if any(part in _FORBIDDEN_SEGMENTS for part in path.split("/")):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _gitattributes_lfs_patterns(content: str) -> list[str]:
    patterns = []
    for line in content.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _matches_gitattributes(path: str, pattern: str) -> bool:
    pattern = pattern.lstrip("/")
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.replace("**/", "*").replace("/**", "/*"))


class _Store:
    """Repositories (metadata in memory, persisted as JSON) and content-addressed blobs on disk."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], dict] = {}
        (root / "objects" / "git").mkdir(parents=True, exist_ok=True)
        (root / "objects" / "lfs").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        (root / "repos").mkdir(parents=True, exist_ok=True)
        for meta in (root / "repos").glob("*/*/*.json"):
            repo = json.loads(meta.read_text())
            self.repos[(repo["type"], repo["id"])] = repo

    # -- blobs -------------------------------------------------------------------------------
    def git_path(self, oid: str) -> Path:
        return self.root / "objects" / "git" / oid[:2] / oid

    def lfs_path(self, oid: str) -> Path:
        return self.root / "objects" / "lfs" / oid[:2] / oid

    def put_git_blob(self, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = self.git_path(oid)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.new_tmp_path()
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return oid

    def new_tmp_path(self) -> Path:
        return self.root / "tmp" / secrets.token_hex(16)

    def has_lfs(self, oid: str, size: int | None = None) -> bool:
        path = self.lfs_path(oid)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def blob_path(self, entry: dict) -> Path:
        return self.lfs_path(entry["lfs"]["oid"]) if entry.get("lfs") else self.git_path(entry["oid"])

    # -- repos -------------------------------------------------------------------------------
    def save(self, repo: dict) -> None:
        path = self.root / "repos" / repo["type"] / repo["id"].split("/")[0] / (repo["id"].split("/")[1] + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.new_tmp_path()
        tmp.write_text(json.dumps(repo))
        os.replace(tmp, path)

    def delete(self, repo: dict) -> None:
        self.repos.pop((repo["type"], repo["id"]), None)
        path = self.root / "repos" / repo["type"] / repo["id"].split("/")[0] / (repo["id"].split("/")[1] + ".json")
        path.unlink(missing_ok=True)


class LocalHubServer:
    """A local Hub-compatible HTTP server on ``127.0.0.1`` (random free port by default).

    Args:
        root_dir: where repositories and blobs are stored (created if missing). Reopening a server
            on the same directory sees the repositories created before.
        tokens: accepted bearer tokens mapped to user names (default: ``{DEFAULT_TOKEN: DEFAULT_USER}``).
        port: 0 for a free port.
        lfs_threshold: files of at least this size are uploaded through LFS (the Hub uses 10 MiB);
            files matching the repo's ``.gitattributes`` LFS rules or with a NUL byte in their first
            512 bytes are LFS whatever their size. ``None`` answers "regular" for everything
            (no LFS, no Xet), which suits clients that cannot disable Xet.
        max_body_bytes: limit for JSON / NDJSON request bodies (413 above).
        max_lfs_bytes: limit for one LFS object.

    Use as a context manager or with ``start()`` / ``stop()``; ``endpoint`` is the base URL to put
    in ``HF_ENDPOINT``. ``requests`` records ``(method, path)`` of every request served and
    ``errors`` ``(method, path, status)`` of those answered with a status >= 400.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike,
        *,
        tokens: dict[str, str] | None = None,
        port: int = 0,
        lfs_threshold: int | None = 10 * 1024 * 1024,
        max_body_bytes: int = 256 * 1024 * 1024,
        max_lfs_bytes: int = 2 * 1024**3,
    ):
        self.root_dir = Path(root_dir)
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens) if tokens is not None else {DEFAULT_TOKEN: DEFAULT_USER}
        self.lfs_threshold = lfs_threshold
        self.max_body_bytes = max_body_bytes
        self.max_lfs_bytes = max_lfs_bytes
        self.store = _Store(self.root_dir)
        self.requests: list[tuple[str, str]] = []
        self.errors: list[tuple[str, str, int]] = []
        self._secret = secrets.token_bytes(32)
        self._port = port
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalHubServer":
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="local-hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "LocalHubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests -------------------------------------------------------------------
    def auth_headers(self, token: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {token or next(iter(self.tokens))}"}

    def repo_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Content of every file of a repo at a revision (direct read, no HTTP)."""
        with self.store.lock:
            repo = self.store.repos[(repo_type, repo_id)]
            sha = _resolve_revision(repo, revision)
            tree = dict(repo["commits"][sha]["tree"])
        return {p: self.store.blob_path(e).read_bytes() for p, e in tree.items()}

    # -- tickets for the unauthenticated LFS PUT ----------------------------------------------
    def _ticket(self, oid: str, size: int) -> str:
        return hmac.new(self._secret, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()


def _resolve_revision(repo: dict, revision: str) -> str:
    if revision.startswith("refs/heads/"):
        revision = revision[len("refs/heads/") :]
    if revision in repo["branches"]:
        return repo["branches"][revision]
    if revision in repo["commits"]:
        return revision
    if _HEX_PREFIX_RE.match(revision):
        matches = [sha for sha in repo["commits"] if sha.startswith(revision)]
        if len(matches) == 1:
            return matches[0]
    raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: LocalHubServer  # set on the bound subclass
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"
    timeout = 120  # seconds of socket inactivity before a (keep-alive) connection is dropped

    # -- plumbing ----------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        if code >= 400:
            self.hub.errors.append((self.command, urlsplit(self.path).path, code))
        super().send_response(code, message)

    def _dispatch(self) -> None:
        self._body_consumed = False
        split = urlsplit(self.path)
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.segments = split.path.split("/")[1:]
        self.hub.requests.append((self.command, split.path))
        try:
            self._route()
        except HubError as e:
            self._send_error(e)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # pragma: no cover - a bug in the server, reported to the client
            self.close_connection = True
            self._send_error(HubError(500, f"Internal server error: {type(e).__name__}: {e}"))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    @property
    def base_url(self) -> str:
        return self.hub.endpoint

    def _send_error(self, err: HubError) -> None:
        if not self._body_consumed and self.command in ("POST", "PUT", "DELETE"):
            self.close_connection = True  # unread body: this connection can't be reused
        headers = dict(err.headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        message = " ".join(err.message.split())
        headers["X-Error-Message"] = message.encode("latin-1", "replace").decode("latin-1")[:500]
        self._send_json({**err.extra, "error": err.message}, status=err.status, headers=headers)

    def _send_json(self, obj: Any, status: int = 200, headers: dict | None = None, content_type: str = "application/json") -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


    def _read_exactly(self, size: int):
        """Yield exactly ``size`` body bytes in chunks; a short read is a truncated body (400)."""
        remaining = size
        while remaining:
            data = self.rfile.read(min(remaining, _CHUNK))
            if not data:
                raise HubError(400, "Truncated body")
            remaining -= len(data)
            yield data
    def _iter_body(self, limit: int):
        """Yield the request body in chunks (Content-Length or chunked), raising 413 above `limit`."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise HubError(400, "Malformed chunked body")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > limit:
                    raise HubError(413, f"Request body too large (limit {limit} bytes)")
                yield from self._read_exactly(size)
                self.rfile.readline(16)
            self._body_consumed = True
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._body_consumed = True  # no body
            return
        try:
            length = int(length_header)
        except ValueError:
            raise HubError(400, "Invalid Content-Length")
        if length < 0:
            raise HubError(400, "Invalid Content-Length")
        if length > limit:
            raise HubError(413, f"Request body too large ({length} > {limit} bytes)")
        yield from self._read_exactly(length)
        self._body_consumed = True

    def _read_body(self, limit: int | None = None) -> bytes:
        return b"".join(self._iter_body(self.hub.max_body_bytes if limit is None else limit))

    def _read_json(self, limit: int = 16 * 1024 * 1024) -> Any:
        body = self._read_body(limit)
        ctype = self.headers.get("Content-Type", "")
        try:
            if ctype.startswith("application/x-www-form-urlencoded"):
                return {k: v if len(v) > 1 or k == "paths" else v[0] for k, v in parse_qs(body.decode()).items()}
            return json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise HubError(400, "Invalid JSON body")

    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is None:
            if required:
                raise HubError(401, "You must be authenticated to access this resource (no token provided).")
            return None
        scheme, _, token = auth.partition(" ")
        user = self.hub.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            # Exact message the client special-cases (not mapped to RepositoryNotFoundError).
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _get_repo(self, repo_type: str, ns: str, name: str, *, write: bool = False) -> dict:
        ns, name = unquote(ns), unquote(name)
        user = self._user(required=write)
        repo = self.hub.store.repos.get((repo_type, f"{ns}/{name}"))
        if repo is None or (repo["private"] and user is None):
            status = 401 if user is None else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    def _repo_url(self, repo: dict) -> str:
        return f"{self.base_url}/{_URL_PREFIX[repo['type']]}{repo['id']}"

    # -- routing -----------------------------------------------------------------------------
    def _route(self) -> None:
        seg, method = self.segments, self.command
        if seg and seg[0] == "api":
            return self._route_api(seg[1:], method)
        if len(seg) >= 2 and seg[0] == "_lfs" and seg[1] == "upload" and len(seg) == 3 and method == "PUT":
            return self._lfs_put(seg[2])
        repo_type = "model"
        if seg and seg[0] in _REPO_TYPES and len(seg) > 3:
            repo_type, seg = _REPO_TYPES[seg[0]], seg[1:]
        if len(seg) >= 4 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, seg[0], seg[1], unquote(seg[3]), unquote("/".join(seg[4:])))
        if len(seg) == 6 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"] and method == "POST":
            if seg[5] == "batch":
                return self._lfs_batch(repo_type, seg[0], seg[1][: -len(".git")])
            if seg[5] == "verify":
                return self._lfs_verify(repo_type, seg[0], seg[1][: -len(".git")])
        raise HubError(404, f"Not found: {method} /{'/'.join(self.segments)}")

    def _route_api(self, seg: list[str], method: str) -> None:
        if seg == ["whoami-v2"] and method == "GET":
            return self._whoami()
        if seg == ["repos", "create"] and method == "POST":
            return self._create_repo()
        if seg == ["repos", "delete"] and method == "DELETE":
            return self._delete_repo()
        if seg == ["validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if len(seg) >= 3 and seg[0] in _REPO_TYPES:
            rtype, ns, name, rest = _REPO_TYPES[seg[0]], seg[1], seg[2], seg[3:]
            action = rest[0] if rest else None
            if action is None and method == "GET":
                return self._repo_info(rtype, ns, name, None)
            if action == "revision" and len(rest) == 2 and method == "GET":
                return self._repo_info(rtype, ns, name, unquote(rest[1]))
            if action == "tree" and len(rest) >= 2 and method == "GET":
                return self._tree(rtype, ns, name, unquote(rest[1]), unquote("/".join(rest[2:])))
            if action == "paths-info" and len(rest) == 2 and method == "POST":
                return self._paths_info(rtype, ns, name, unquote(rest[1]))
            if action == "refs" and len(rest) == 1 and method == "GET":
                return self._refs(rtype, ns, name)
            if action == "commits" and len(rest) == 2 and method == "GET":
                return self._commits(rtype, ns, name, unquote(rest[1]))
            if action == "branch" and len(rest) >= 2 and method in ("POST", "DELETE"):
                return self._branch(rtype, ns, name, unquote("/".join(rest[1:])))
            if action == "preupload" and len(rest) == 2 and method == "POST":
                return self._preupload(rtype, ns, name, unquote(rest[1]))
            if action == "commit" and len(rest) == 2 and method == "POST":
                return self._commit(rtype, ns, name, unquote(rest[1]))
            if action in ("xet-write-token", "xet-read-token"):
                raise HubError(
                    501,
                    "Xet storage is not supported by this local Hub server: set HF_HUB_DISABLE_XET=1 "
                    "so that huggingface_hub uploads through the LFS protocol.",
                )
        raise HubError(404, f"Not found: {method} /api/{'/'.join(seg)}")

    # -- endpoints: account / repos -----------------------------------------------------------
    def _whoami(self) -> None:
        user = self._user(required=True)
        self._send_json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": None,
                "emailVerified": False,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            }
        )

    def _create_repo(self) -> None:
        user = self._user(required=True)
        payload = self._read_json()
        if not isinstance(payload, dict):
            raise HubError(400, "Expected a JSON object")
        name, org = payload.get("name"), payload.get("organization")
        rtype = payload.get("type") or "model"
        if rtype not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {rtype!r}")
        ns = org if org is not None else user
        for part in (ns, name):
            if not isinstance(part, str) or not _NAME_RE.match(part) or "--" in part or ".." in part:
                raise HubError(400, f"Invalid repo name: {ns!r}/{name!r}")
        visibility = payload.get("visibility")
        if visibility is None:
            visibility = "private" if payload.get("private") else "public"
        if visibility not in ("public", "private"):
            raise HubError(400, f"Invalid visibility: {visibility!r}")
        repo_id = f"{ns}/{name}"
        store = self.hub.store
        with store.lock:
            existing = store.repos.get((rtype, repo_id))
            if existing is not None:
                # The client reads `url` from the 409 body when `exist_ok=True`.
                raise HubError(409, f"You already created this {rtype} repo", extra={"url": self._repo_url(existing)})
            created = _now()
            oid = store.put_git_blob(DEFAULT_GITATTRIBUTES.encode())
            tree = {".gitattributes": {"oid": oid, "size": len(DEFAULT_GITATTRIBUTES), "lfs": None}}
            sha = _commit_sha(None, tree, "initial commit", created)
            repo = {
                "type": rtype,
                "id": repo_id,
                "private": visibility == "private",
                "createdAt": created,
                "branches": {"main": sha},
                "commits": {
                    sha: {"id": sha, "parent": None, "title": "initial commit", "message": "", "date": created,
                          "author": user, "tree": tree}
                },
                "nextPr": 1,
            }
            store.repos[(rtype, repo_id)] = repo
            store.save(repo)
        self._send_json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id}, status=200)

    def _delete_repo(self) -> None:
        user = self._user(required=True)
        payload = self._read_json()
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            raise HubError(400, "Expected a JSON object with a 'name'")
        ns = payload.get("organization") or user
        rtype = payload.get("type") or "model"
        with self.hub.store.lock:
            repo = self.hub.store.repos.get((rtype, f"{ns}/{payload['name']}"))
            if repo is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
            self.hub.store.delete(repo)
        self._send_json({})

    def _validate_yaml(self) -> None:
        payload = self._read_json()
        content = payload.get("content") if isinstance(payload, dict) else None
        if not isinstance(content, str):
            raise HubError(400, "Expected 'content'")
        lines = content.splitlines()
        if lines and lines[0].strip() == "---" and not any(l.strip() == "---" for l in lines[1:]):
            self._send_json({"errors": [{"message": "Unterminated YAML front matter"}], "warnings": []}, status=400)
            return
        self._send_json({"errors": [], "warnings": []})

    # -- endpoints: read ---------------------------------------------------------------------
    def _snapshot(self, rtype: str, ns: str, name: str, revision: str, *, write: bool = False):
        store = self.hub.store
        with store.lock:
            repo = self._get_repo(rtype, ns, name, write=write)
            sha = _resolve_revision(repo, revision)
            return repo, sha, repo["commits"][sha]

    def _repo_info(self, rtype: str, ns: str, name: str, revision: str | None) -> None:
        repo, sha, commit = self._snapshot(rtype, ns, name, revision or "main")
        tree = commit["tree"]
        siblings = []
        for path in sorted(tree):
            e = tree[path]
            sib: dict[str, Any] = {"rfilename": path, "size": e["size"], "blobId": e["oid"]}
            if e.get("lfs"):
                sib["lfs"] = {"size": e["lfs"]["size"], "sha256": e["lfs"]["oid"], "pointerSize": e["lfs"]["pointerSize"]}
            siblings.append(sib)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo["id"].encode()).hexdigest()[:24],
            "id": repo["id"],
            "author": repo["id"].split("/")[0],
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": repo["createdAt"],
            "private": repo["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e["size"] for e in tree.values()),
        }
        if rtype == "model":
            info["modelId"] = repo["id"]
            config = tree.get("config.json")
            if config is not None and not config.get("lfs") and config["size"] < 1_000_000:
                try:
                    data = json.loads(self.hub.store.blob_path(config).read_bytes())
                    info["config"] = {k: data[k] for k in ("architectures", "model_type", "auto_map") if k in data}
                except (ValueError, OSError):
                    pass
        self._send_json(info)

    def _entry_json(self, path: str, entry: dict | None, repo: dict | None = None, sha: str | None = None,
                    expand: bool = False, tree: dict | None = None) -> dict:
        if entry is None:  # a directory
            children = sorted((p, e["oid"]) for p, e in (tree or {}).items() if p.startswith(path + "/"))
            out: dict[str, Any] = {"type": "directory", "oid": hashlib.sha1(json.dumps(children).encode()).hexdigest(),
                                   "size": 0, "path": path}
        else:
            out = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry.get("lfs"):
                out["lfs"] = dict(entry["lfs"])
        if expand and repo is not None and sha is not None:
            last = _last_commit_touching(repo, sha, path)
            out["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
        return out

    def _tree(self, rtype: str, ns: str, name: str, revision: str, path: str) -> None:
        repo, sha, commit = self._snapshot(rtype, ns, name, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = self.query.get("expand", ["false"])[0].lower() in ("1", "true")
        tree = commit["tree"]
        prefix = path.strip("/")
        if prefix:
            if prefix in tree or not any(p.startswith(prefix + "/") for p in tree):
                raise HubError(404, f"Entry not found: {prefix} is not a folder of this revision", "EntryNotFound",
                               headers={"X-Repo-Commit": sha})
            prefix += "/"
        files, dirs = [], set()
        for p in tree:
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):].split("/")
            if recursive:
                files.append(p)
                for i in range(1, len(rel)):
                    dirs.add(prefix + "/".join(rel[:i]))
            elif len(rel) == 1:
                files.append(p)
            else:
                dirs.add(prefix + rel[0])
        out = [self._entry_json(d, None, repo, sha, expand, tree) for d in sorted(dirs)]
        out += [self._entry_json(p, tree[p], repo, sha, expand) for p in sorted(files)]
        self._send_json(out, headers={"X-Repo-Commit": sha})

    def _paths_info(self, rtype: str, ns: str, name: str, revision: str) -> None:
        payload = self._read_json()
        paths = payload.get("paths") if isinstance(payload, dict) else None
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or len(paths) > 10_000:
            raise HubError(400, "Expected 'paths': a list of strings")
        expand = str(payload.get("expand", "false")).lower() in ("1", "true")
        repo, sha, commit = self._snapshot(rtype, ns, name, revision)
        tree = commit["tree"]
        out = []
        for p in paths:
            p = p.strip("/")
            if p in tree:
                out.append(self._entry_json(p, tree[p], repo, sha, expand))
            elif p and any(q.startswith(p + "/") for q in tree):
                out.append(self._entry_json(p, None, repo, sha, expand, tree))
        self._send_json(out)

    def _refs(self, rtype: str, ns: str, name: str) -> None:
        with self.hub.store.lock:
            repo = self._get_repo(rtype, ns, name)
            branches = dict(repo["branches"])

        def ref(name: str, sha: str) -> dict:
            full = name if name.startswith("refs/") else f"refs/heads/{name}"
            return {"name": name, "ref": full, "targetCommit": sha}

        self._send_json({
            "branches": [ref(n, s) for n, s in sorted(branches.items()) if not n.startswith("refs/pr/")],
            "converts": [],
            "tags": [],
            "pullRequests": [ref(n, s) for n, s in sorted(branches.items()) if n.startswith("refs/pr/")],
        })

    def _commits(self, rtype: str, ns: str, name: str, revision: str) -> None:
        repo, sha, _ = self._snapshot(rtype, ns, name, revision)
        out = []
        while sha is not None:
            c = repo["commits"][sha]
            out.append({"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                        "authors": [{"user": c["author"]}]})
            sha = c["parent"]
        self._send_json(out)

    def _branch(self, rtype: str, ns: str, name: str, branch: str) -> None:
        self._user(required=True)
        payload = self._read_json() if self.command == "POST" else {}
        store = self.hub.store
        with store.lock:
            repo = self._get_repo(rtype, ns, name, write=True)
            if self.command == "DELETE":
                if branch == "main" or branch not in repo["branches"]:
                    raise HubError(404 if branch != "main" else 403, f"Cannot delete branch {branch}",
                                   "RevisionNotFound" if branch != "main" else None)
                del repo["branches"][branch]
            else:
                if not _BRANCH_RE.match(branch) or branch.startswith("refs/") or _SHA1_RE.match(branch):
                    raise HubError(400, f"Invalid branch name: {branch!r}")
                if branch in repo["branches"]:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                start = payload.get("startingPoint") if isinstance(payload, dict) else None
                repo["branches"][branch] = _resolve_revision(repo, start or "main")
            store.save(repo)
        self._send_json({})

    def _resolve(self, rtype: str, ns: str, name: str, revision: str, path: str) -> None:
        repo, sha, commit = self._snapshot(rtype, ns, name, revision)
        entry = commit["tree"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": sha})
        blob = self.hub.store.blob_path(entry)
        size = entry["size"]
        etag = entry["lfs"]["oid"] if entry.get("lfs") else entry["oid"]
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": 'inline; filename="{}"'.format(
                path.rsplit("/", 1)[-1].replace('"', "").encode("latin-1", "replace").decode("latin-1")
            ),
        }
        if entry.get("lfs"):
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(size)
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET":
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                raise HubError(416, "Invalid Range", headers={"Content-Range": f"bytes */{size}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range
                start = max(size - int(m.group(2)), 0)
            if start >= size or start > end:
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(end - start + 1, 0)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(blob, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining:
                data = f.read(min(remaining, _CHUNK))
                if not data:
                    break
                self.wfile.write(data)
                remaining -= len(data)

    # -- endpoints: write ---------------------------------------------------------------------
    def _preupload(self, rtype: str, ns: str, name: str, revision: str) -> None:
        payload = self._read_json()
        files = payload.get("files") if isinstance(payload, dict) else None
        if not isinstance(files, list) or len(files) > 1000:
            raise HubError(400, "Expected 'files': a list of at most 1000 items")
        repo, sha, commit = self._snapshot(rtype, ns, name, revision, write=True)
        tree = commit["tree"]
        patterns = _LFS_PATTERNS
        attrs = tree.get(".gitattributes")
        if attrs is not None and not attrs.get("lfs"):
            patterns = _gitattributes_lfs_patterns(self.hub.store.blob_path(attrs).read_text(errors="replace"))
        out = []
        for f in files:
            if not isinstance(f, dict) or not isinstance(f.get("size"), int) or f["size"] < 0:
                raise HubError(400, "Each file needs 'path', 'size' and 'sample'")
            path = _validate_repo_path(f.get("path"))
            try:
                sample = base64.b64decode(f.get("sample") or "", validate=True)
            except (ValueError, TypeError):
                raise HubError(400, f"Invalid base64 sample for {path}")
            mode = "regular"
            threshold = self.hub.lfs_threshold
            if threshold is not None and f["size"] > 0 and (
                f["size"] >= threshold or b"\0" in sample[:512] or any(_matches_gitattributes(path, p) for p in patterns)
            ):
                mode = "lfs"
            existing = tree.get(path)
            oid = None
            if existing is not None:
                oid = existing["lfs"]["oid"] if (mode == "lfs" and existing.get("lfs")) else existing["oid"]
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json({"files": out, "commitOid": sha})

    def _commit(self, rtype: str, ns: str, name: str, revision: str) -> None:
        user = self._user(required=True)
        create_pr = self.query.get("create_pr", ["0"])[0] in ("1", "true")
        with self.hub.store.lock:
            self._get_repo(rtype, ns, name, write=True)  # 401/404 before reading a large body
        body = self._read_body()
        try:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        except (ValueError, UnicodeDecodeError):
            raise HubError(400, "Invalid NDJSON body")
        if not lines or not isinstance(lines[0], dict) or lines[0].get("key") != "header":
            raise HubError(400, "The first line of the commit payload must be the header")
        header = lines[0].get("value") or {}
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise HubError(400, "Commit summary must be a non-empty string")
        description = header.get("description") or ""
        store = self.hub.store
        # Decode regular files outside the lock.
        ops: list[tuple[str, str, Any]] = []
        for item in lines[1:]:
            if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
                raise HubError(400, "Malformed commit operation")
            key, value = item.get("key"), item["value"]
            path = value.get("path")
            if key == "deletedFolder" and isinstance(path, str):
                path = path.rstrip("/")
            path = _validate_repo_path(path)
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding for {path}")
                try:
                    data = base64.b64decode(value.get("content", ""), validate=True)
                except (ValueError, TypeError):
                    raise HubError(400, f"Invalid base64 content for {path}")
                threshold = self.hub.lfs_threshold
                if threshold is not None and len(data) > threshold:
                    raise HubError(400, f"{path} is larger than {threshold} bytes and must be uploaded with LFS")
                ops.append(("file", path, {"oid": store.put_git_blob(data), "size": len(data), "lfs": None}))
            elif key == "lfsFile":
                oid, size = value.get("oid"), value.get("size")
                if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not _SHA256_RE.match(oid):
                    raise HubError(400, f"Invalid LFS oid for {path}")
                if not store.has_lfs(oid):
                    raise HubError(422, f"LFS object {oid} for {path} was not uploaded")
                actual = store.lfs_path(oid).stat().st_size
                if size is not None and size != actual:
                    raise HubError(422, f"LFS object {oid}: size {size} does not match uploaded size {actual}")
                pointer = lfs_pointer(oid, actual)
                ops.append(("file", path, {"oid": git_blob_sha1(pointer), "size": actual,
                                           "lfs": {"oid": oid, "size": actual, "pointerSize": len(pointer)}}))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append((key, path, None))
            else:
                raise HubError(400, f"Unsupported commit operation: {key!r}")
        with store.lock:
            repo = self._get_repo(rtype, ns, name, write=True)
            if revision.startswith("refs/heads/"):
                revision = revision[len("refs/heads/"):]
            if revision not in repo["branches"]:
                raise HubError(404, f"Branch not found: {revision}", "RevisionNotFound")
            head = repo["branches"][revision]
            parent_commit = header.get("parentCommit")
            if parent_commit is not None and (not isinstance(parent_commit, str) or not head.startswith(parent_commit)):
                raise HubError(412, f"Parent commit {parent_commit} is not the head of {revision} ({head})")
            tree = dict(repo["commits"][head]["tree"])
            for kind, path, entry in ops:
                if kind == "file":
                    if any(path.startswith(p + "/") for p in tree) or any(p.startswith(path + "/") for p in tree):
                        tree_conflict = next(p for p in tree if path.startswith(p + "/") or p.startswith(path + "/"))
                        raise HubError(400, f"Cannot add {path}: conflicts with {tree_conflict}")
                    tree[path] = entry
                elif kind == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                else:
                    doomed = [p for p in tree if p.startswith(path + "/")]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
            date = _now()
            sha = _commit_sha(head, tree, summary, date)
            repo["commits"][sha] = {"id": sha, "parent": head, "title": summary, "message": description,
                                    "date": date, "author": user, "tree": tree}
            pr_url = None
            if create_pr:
                num = repo["nextPr"]
                repo["nextPr"] = num + 1
                repo["branches"][f"refs/pr/{num}"] = sha
                pr_url = f"{self._repo_url(repo)}/discussions/{num}"
            else:
                repo["branches"][revision] = sha
            store.save(repo)
        self._send_json({
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{self._repo_url(repo)}/commit/{sha}",
            "hookOutput": "",
            "pullRequestUrl": pr_url,
        })

    # -- endpoints: LFS -----------------------------------------------------------------------
    def _lfs_batch(self, rtype: str, ns: str, name: str) -> None:
        with self.hub.store.lock:
            self._get_repo(rtype, ns, name, write=True)
        payload = self._read_json()
        if not isinstance(payload, dict) or payload.get("operation") != "upload":
            raise HubError(422, "Only the 'upload' operation of the LFS batch API is supported")
        if payload.get("hash_algo", "sha256") != "sha256":
            raise HubError(422, "Only sha256 is supported")
        objects = payload.get("objects")
        if not isinstance(objects, list) or len(objects) > 1000:
            raise HubError(422, "Expected 'objects': a list")
        out = []
        for obj in objects:
            oid, size = (obj.get("oid"), obj.get("size")) if isinstance(obj, dict) else (None, None)
            if not isinstance(oid, str) or not _SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                out.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "Invalid oid or size"}})
                continue
            if size > self.hub.max_lfs_bytes:
                out.append({"oid": oid, "size": size,
                            "error": {"code": 422, "message": f"Object too large (limit {self.hub.max_lfs_bytes})"}})
                continue
            if self.hub.store.has_lfs(oid, size):
                out.append({"oid": oid, "size": size})  # already there: no actions
                continue
            href = f"{self.base_url}/_lfs/upload/{oid}?size={size}&ticket={self.hub._ticket(oid, size)}"
            verify = f"{self.base_url}/{_URL_PREFIX[rtype]}{unquote(ns)}/{unquote(name)}.git/info/lfs/objects/verify"
            out.append({"oid": oid, "size": size, "authenticated": True,
                        "actions": {"upload": {"href": href}, "verify": {"href": verify}}})
        self._send_json({"transfer": "basic", "objects": out, "hash_algo": "sha256"},
                        content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str) -> None:
        size_q, ticket_q = self.query.get("size", [""])[0], self.query.get("ticket", [""])[0]
        if not _SHA256_RE.match(oid) or not size_q.isdigit():
            raise HubError(400, "Invalid upload URL")
        size = int(size_q)
        if not hmac.compare_digest(ticket_q, self.hub._ticket(oid, size)):
            raise HubError(403, "Invalid or expired upload ticket")
        store = self.hub.store
        tmp = store.new_tmp_path()
        digest, received = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                for data in self._iter_body(size):
                    digest.update(data)
                    received += len(data)
                    f.write(data)
            if received != size:
                raise HubError(400, f"Received {received} bytes, expected {size}")
            if digest.hexdigest() != oid:
                raise HubError(400, "Uploaded content does not match its sha256 oid")
            dest = store.lfs_path(oid)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        self.send_response(200)
        self.send_header("ETag", f'"{oid}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _lfs_verify(self, rtype: str, ns: str, name: str) -> None:
        with self.hub.store.lock:
            self._get_repo(rtype, ns, name, write=True)
        payload = self._read_json()
        oid = payload.get("oid") if isinstance(payload, dict) else None
        size = payload.get("size") if isinstance(payload, dict) else None
        if not isinstance(oid, str) or not _SHA256_RE.match(oid) or not self.hub.store.has_lfs(oid, size):
            raise HubError(404, f"LFS object {oid} not found")
        self._send_json({"oid": oid, "size": size}, content_type="application/vnd.git-lfs+json")


def _commit_sha(parent: str | None, tree: dict, title: str, date: str) -> str:
    payload = json.dumps({"parent": parent, "tree": sorted((p, e["oid"]) for p, e in tree.items()),
                          "title": title, "date": date, "nonce": secrets.token_hex(8)})
    return hashlib.sha1(payload.encode()).hexdigest()


def _last_commit_touching(repo: dict, sha: str, path: str) -> dict:
    """The most recent commit (first-parent history from `sha`) that changed `path` (file or folder)."""

    def view(commit: dict) -> list:
        return sorted((p, e["oid"]) for p, e in commit["tree"].items() if p == path or p.startswith(path + "/"))

    commit = repo["commits"][sha]
    current = view(commit)
    while commit["parent"] is not None:
        parent = repo["commits"][commit["parent"]]
        if view(parent) != current:
            return commit
        commit = parent
    return commit
