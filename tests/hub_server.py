"""A small in-memory Hugging Face Hub for tests: the endpoints huggingface_hub calls to create a repo,
commit files and download a snapshot, served over HTTP on 127.0.0.1 from a background thread.

Endpoints: POST /api/repos/create, POST /api/validate-yaml, POST /api/models/{repo}/preupload/{rev},
POST /api/models/{repo}/commit/{rev}, GET /api/models/{repo}[/revision/{rev}],
GET /api/models/{repo}/tree/{rev}, HEAD|GET /{repo}/resolve/{rev}/{path}.

Every file is stored inline ("regular" upload mode; a real Hub would send large files through LFS/Xet).
Writes need `Authorization: Bearer <token>` with a token in `tokens`. `fail_with` makes one endpoint kind
answer an HTTP error, to test error paths.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class FakeRepo:
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40
    private: bool = False


@dataclass
class FakeHub:
    """State of the fake Hub: repos by id, accepted tokens, the user they belong to, injected failures
    (`fail_with = {"create": 500}` makes repo creation answer 500; keys: create, preupload, commit, info)."""

    tokens: set[str] = field(default_factory=lambda: {"hf_test_token"})
    user: str = "test-user"
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    fail_with: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    endpoint: str = ""


def _blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the subclass made per server

    def log_message(self, format, *args):  # keep test output quiet
        pass

    # -- helpers ---------------------------------------------------------------------------------------

    def _send(self, status: int, body=None, headers: dict | None = None, head_only: bool = False) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        content_type = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(payload)

    def _not_found(self, code: str, message: str, head_only: bool = False) -> None:
        """404 with the `X-Error-Code` huggingface_hub reads to raise RepositoryNotFoundError / EntryNotFoundError."""
        self._send(404, {"error": message}, headers={"X-Error-Code": code}, head_only=head_only)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[len("Bearer ") :] in self.hub.tokens

    def _fail(self, kind: str) -> bool:
        status = self.hub.fail_with.get(kind)
        if status is None:
            return False
        self._send(status, {"error": f"injected failure of {kind}"})
        return True

    def _repo_and_rest(self, parts: list[str]) -> tuple[str, list[str]]:
        return "/".join(parts[:2]), parts[2:]

    # -- routes ------------------------------------------------------------------------------------------

    def do_POST(self):  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        self.hub.requests.append(("POST", path))
        body = self._body()
        if path == "/api/validate-yaml":
            return self._validate_yaml(body)
        if not self._authorized():
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        if path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        parts = [unquote(part) for part in path.split("/")[3:]]  # after /api/models/
        if path.startswith("/api/models/") and len(parts) >= 4:
            repo_id, rest = self._repo_and_rest(parts)
            if repo_id not in self.hub.repos:
                return self._not_found("RepoNotFound", "Repository not found")
            if rest[0] == "preupload":
                return self._preupload(json.loads(body))
            if rest[0] == "commit":
                return self._commit(repo_id, body)
        return self._send(404, {"error": f"unknown endpoint {path}"})

    def do_GET(self):  # noqa: N802
        self._get(head_only=False)

    def do_HEAD(self):  # noqa: N802
        self._get(head_only=True)

    def _get(self, head_only: bool) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append(("HEAD" if head_only else "GET", path))
        if path.startswith("/api/models/"):
            if self._fail("info"):
                return None
            repo_id, rest = self._repo_and_rest([unquote(part) for part in path.split("/")[3:]])
            repo = self.hub.repos.get(repo_id)
            if repo is None:
                return self._not_found("RepoNotFound", "Repository not found")
            if rest and rest[0] == "tree":
                return self._send(200, self._tree(repo))
            return self._send(200, self._info(repo_id, repo))
        parts = [unquote(part) for part in path.lstrip("/").split("/")]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.hub.repos.get("/".join(parts[:2]))
            filename = "/".join(parts[4:])
            if repo is None:
                return self._not_found("RepoNotFound", "Repository not found", head_only)
            if filename not in repo.files:
                return self._not_found("EntryNotFound", "Entry not found", head_only)
            content = repo.files[filename]
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{_blob_sha(content)}"'}
            return self._send(200, content, headers=headers, head_only=head_only)
        return self._send(404, {"error": f"unknown endpoint {path}"}, head_only=head_only)

    # -- endpoint bodies ---------------------------------------------------------------------------------

    def _validate_yaml(self, body: bytes) -> None:
        content = json.loads(body)["content"]
        if not content.startswith("---"):
            return self._send(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            metadata = yaml.safe_load(content.split("---", 2)[1])
        except yaml.YAMLError as error:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {error}"}]})
        if not isinstance(metadata, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}]})
        return self._send(200, {"errors": [], "warnings": []})

    def _create_repo(self, payload: dict) -> None:
        if self._fail("create"):
            return None
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        url = f"{self.hub.endpoint}/{repo_id}"
        if repo_id in self.hub.repos:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        self.hub.repos[repo_id] = FakeRepo(private=payload.get("visibility") == "private")
        return self._send(200, {"url": url, "name": repo_id})

    def _preupload(self, payload: dict) -> None:
        if self._fail("preupload"):
            return None
        files = [{"path": item["path"], "uploadMode": "regular", "shouldIgnore": False} for item in payload["files"]]
        return self._send(200, {"files": files})

    def _commit(self, repo_id: str, body: bytes) -> None:
        if self._fail("commit"):
            return None
        repo = self.hub.repos[repo_id]
        files = dict(repo.files)
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            elif item["key"] != "header":
                return self._send(400, {"error": f"unsupported commit operation {item['key']}"})
        repo.files = files
        repo.sha = hashlib.sha1(repo.sha.encode() + json.dumps(sorted(files)).encode() + body).hexdigest()
        return self._send(
            200,
            {"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{repo.sha}", "commitOid": repo.sha, "pullRequestUrl": None},
        )

    def _info(self, repo_id: str, repo: FakeRepo) -> dict:
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": repo.private,
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        }

    def _tree(self, repo: FakeRepo) -> list[dict]:
        return [
            {"type": "file", "path": name, "size": len(content), "oid": _blob_sha(content)}
            for name, content in sorted(repo.files.items())
        ]


class FakeHubServer:
    """Context manager: starts the fake Hub on a free port of 127.0.0.1; `.endpoint` is its URL."""

    def __init__(self, hub: FakeHub | None = None):
        self.hub = hub or FakeHub()
        handler = type("Handler", (_Handler,), {"hub": self.hub})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = self.hub.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
