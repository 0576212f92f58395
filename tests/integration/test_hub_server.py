"""The local Hub server against the real clients (huggingface_hub, transformers), nothing mocked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest_hub import DEFAULT_USER, local_hub  # noqa: E402,F401
from hub_server import LocalHubServer  # noqa: E402
from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

BIG_SIZE = 10 * 1024 * 1024 + 12345  # > 10 MiB: LFS whatever the extension


def _write_folder(root: Path) -> dict[str, bytes]:
    files = {
        "notes.txt": b"hello local hub\nsecond line\n",
        "sub/config.json": json.dumps({"a": 1, "b": [1, 2, 3]}).encode(),
        "big.dat": os.urandom(BIG_SIZE),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - 127.0.0.1 only
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_server_binds_loopback_and_stops(tmp_path):
    with LocalHubServer(tmp_path / "store") as server:
        assert server.endpoint.startswith("http://127.0.0.1:")
        assert server._httpd.server_address[0] == "127.0.0.1"
        status, _, body = _get(server.endpoint + "/api/nothing-here")
        assert status == 404 and "error" in json.loads(body)
    with pytest.raises(RuntimeError):
        server.endpoint


def test_state_survives_a_restart_on_the_same_directory(local_hub):
    api = HfApi()
    api.create_repo("user/persist")
    commit = api.upload_file(path_or_fileobj=b"kept", path_in_repo="k.txt", repo_id="user/persist")
    local_hub.stop()
    with LocalHubServer(local_hub.root_dir) as again:
        api2 = HfApi(endpoint=again.endpoint)
        assert api2.model_info("user/persist").sha == commit.oid
        path = hf_hub_download("user/persist", "k.txt", endpoint=again.endpoint, force_download=True)
        assert Path(path).read_bytes() == b"kept"


def test_whoami_and_authentication(local_hub):
    api = HfApi()
    assert api.whoami()["name"] == DEFAULT_USER
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(token="hf_not_a_valid_token").whoami()
    assert exc.value.response.status_code == 401
    # Writes need a token.
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(token=False).create_repo("user/no-token")
    assert exc.value.response.status_code == 401
    api.create_repo("user/auth")
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(token=False).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="user/auth")
    assert exc.value.response.status_code == 401
    # Reads of a public repo do not.
    assert "x.txt" not in HfApi(token=False).list_repo_files("user/auth")


def test_create_repo_conflict_and_validation(local_hub):
    api = HfApi()
    url = api.create_repo("user/dup")
    assert url.repo_id == "user/dup" and url.startswith(local_hub.endpoint)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("user/dup")
    assert exc.value.response.status_code == 409
    assert api.create_repo("user/dup", exist_ok=True).repo_id == "user/dup"
    # No namespace: the token's user.
    assert api.create_repo("plain").repo_id == f"{DEFAULT_USER}/plain"
    # Bad names are rejected server-side (bypassing the client-side validation).
    status, _, _ = _post_json(local_hub, "/api/repos/create", {"name": "../evil", "organization": None})
    assert status == 400
    # Private repos are invisible without a token.
    api.create_repo("user/secret", private=True)
    assert api.model_info("user/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("user/secret")


def _post_json(server: LocalHubServer, path: str, payload) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(
        server.endpoint + path,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **server.auth_headers()},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_upload_download_roundtrip_with_lfs(local_hub, tmp_path):
    api = HfApi()
    repo_id = "user/roundtrip"
    api.create_repo(repo_id)
    files = _write_folder(tmp_path / "folder")

    n_before = len(local_hub.requests)
    commit = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "folder", commit_message="Add files")
    calls = local_hub.requests[n_before:]
    # The small files go inline (base64 in the NDJSON commit); the big one through the LFS batch API + PUT.
    assert ("POST", f"/api/models/{repo_id}/preupload/main") in calls
    assert ("POST", f"/{repo_id}.git/info/lfs/objects/batch") in calls
    assert [c for c in calls if c[0] == "PUT"] == [("PUT", f"/_lfs/upload/{hashlib.sha256(files['big.dat']).hexdigest()}")]
    assert ("POST", f"/api/models/{repo_id}/commit/main") in calls
    assert len(commit.oid) == 40 and commit.repo_url.repo_id == repo_id

    # Listing.
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes", *files])
    top = {e.path: type(e).__name__ for e in api.list_repo_tree(repo_id)}
    assert top == {".gitattributes": "RepoFile", "big.dat": "RepoFile", "notes.txt": "RepoFile", "sub": "RepoFolder"}
    assert [e.path for e in api.list_repo_tree(repo_id, path_in_repo="sub")] == ["sub/config.json"]
    expanded = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True, expand=True)}
    assert expanded["big.dat"].last_commit.oid == commit.oid
    assert expanded["big.dat"].lfs.sha256 == hashlib.sha256(files["big.dat"]).hexdigest()
    assert expanded["notes.txt"].lfs is None and expanded["notes.txt"].size == len(files["notes.txt"])
    paths = api.get_paths_info(repo_id, ["notes.txt", "sub", "missing"])
    assert sorted(p.path for p in paths) == ["notes.txt", "sub"]

    # model_info with siblings.
    info = api.model_info(repo_id)
    assert info.sha == commit.oid
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", *files}
    assert siblings["big.dat"].lfs.size == BIG_SIZE
    assert siblings["big.dat"].lfs.sha256 == hashlib.sha256(files["big.dat"]).hexdigest()
    assert siblings["notes.txt"].lfs is None
    assert api.repo_info(repo_id, revision=commit.oid).sha == commit.oid

    # Byte-identical downloads, by branch and by commit hash.
    for rel, data in files.items():
        assert Path(hf_hub_download(repo_id, rel)).read_bytes() == data
    assert Path(hf_hub_download(repo_id, "notes.txt", revision=commit.oid)).read_bytes() == files["notes.txt"]
    snap = Path(snapshot_download(repo_id, local_dir=tmp_path / "snap"))
    for rel, data in files.items():
        assert (snap / rel).read_bytes() == data
    cached = Path(snapshot_download(repo_id))
    assert cached.name == commit.oid
    assert (cached / "big.dat").read_bytes() == files["big.dat"]

    # Uploading the same content again: nothing changes, no new commit, no new LFS upload.
    n_before = len(local_hub.requests)
    again = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "folder", commit_message="Same again")
    assert again.oid == commit.oid
    assert not [c for c in local_hub.requests[n_before:] if c[0] == "PUT" or c[1].endswith("/commit/main")]

    # A second commit deleting a file.
    second = api.delete_file("notes.txt", repo_id=repo_id, commit_message="Remove notes")
    assert second.oid != commit.oid
    assert "notes.txt" not in api.list_repo_files(repo_id)
    assert "notes.txt" in api.list_repo_files(repo_id, revision=commit.oid)  # history is kept
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "notes.txt", force_download=True)
    assert Path(hf_hub_download(repo_id, "notes.txt", revision=commit.oid)).read_bytes() == files["notes.txt"]
    assert [c.title for c in api.list_repo_commits(repo_id)] == ["Remove notes", "Add files", "initial commit"]
    with pytest.raises(EntryNotFoundError):
        api.delete_file("notes.txt", repo_id=repo_id)

    # Folder deletion + stored content matches.
    api.delete_folder("sub", repo_id=repo_id)
    assert sorted(local_hub.repo_files(repo_id)) == [".gitattributes", "big.dat"]
    assert local_hub.repo_files(repo_id)["big.dat"] == files["big.dat"]


def test_not_found_errors(local_hub):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/does-not-exist", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("user/does-not-exist")
    assert api.repo_exists("user/does-not-exist") is False

    api.create_repo("user/exists")
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="user/exists")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/exists", "missing.bin")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("user/exists", "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("user/exists", revision="f" * 40)
    assert api.file_exists("user/exists", "config.json") is True
    assert api.file_exists("user/exists", "missing.bin") is False
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("user/exists", path_in_repo="no_such_dir"))


def test_resolve_headers_and_range(local_hub):
    api = HfApi()
    api.create_repo("user/raw")
    data = bytes(range(256)) * 64
    commit = api.upload_file(path_or_fileobj=data, path_in_repo="w/blob.bin", repo_id="user/raw")
    url = f"{local_hub.endpoint}/user/raw/resolve/main/w/blob.bin"
    status, headers, body = _get(url)
    assert status == 200 and body == data
    assert headers["X-Repo-Commit"] == commit.oid
    sha256 = hashlib.sha256(data).hexdigest()
    assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{sha256}"'  # *.bin is LFS-tracked
    assert int(headers["X-Linked-Size"]) == len(data) == int(headers["Content-Length"])
    status, headers, body = _get(url, {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, _, body = _get(url, {"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, _, _ = _get(url, {"Range": f"bytes={len(data)}-"})
    assert status == 416
    status, headers, _ = _get(f"{local_hub.endpoint}/user/raw/resolve/{commit.oid}/nope.txt")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and headers["X-Repo-Commit"] == commit.oid
    status, headers, _ = _get(f"{local_hub.endpoint}/user/nothing/resolve/main/x", local_hub.auth_headers())
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"
    # Anonymous: 401 (as the Hub does, not to reveal private repos), still RepoNotFound.
    status, headers, _ = _get(f"{local_hub.endpoint}/user/nothing/resolve/main/x")
    assert status == 401 and headers["X-Error-Code"] == "RepoNotFound"
    # Path traversal attempts never escape the store.
    status, _, _ = _get(f"{local_hub.endpoint}/user/raw/resolve/main/..%2F..%2Fetc%2Fpasswd")
    assert status == 404


def test_branches_pull_requests_and_parent_commit(local_hub):
    from huggingface_hub import CommitOperationAdd

    api = HfApi()
    api.create_repo("user/branches")
    main = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id="user/branches")
    api.create_branch("user/branches", branch="dev")
    api.create_branch("user/branches", branch="dev", exist_ok=True)
    dev = api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id="user/branches", revision="dev")
    assert Path(hf_hub_download("user/branches", "f.txt")).read_text() == "v1"
    assert Path(hf_hub_download("user/branches", "f.txt", revision="dev")).read_text() == "v2"
    pr = api.create_commit(
        "user/branches", [CommitOperationAdd("g.txt", b"pr")], commit_message="PR", create_pr=True
    )
    assert pr.pr_revision == "refs/pr/1" and pr.pr_num == 1
    assert Path(hf_hub_download("user/branches", "g.txt", revision=pr.pr_revision)).read_text() == "pr"
    assert "g.txt" not in api.list_repo_files("user/branches")  # main untouched
    refs = api.list_repo_refs("user/branches", include_pull_requests=True)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main.oid, "dev": dev.oid}
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]
    # parent_commit guards against concurrent updates.
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit("user/branches", [CommitOperationAdd("h.txt", b"x")], commit_message="stale",
                          parent_commit=dev.oid)
    assert exc.value.response.status_code == 412
    api.create_commit("user/branches", [CommitOperationAdd("h.txt", b"x")], commit_message="fresh",
                      parent_commit=main.oid)


def test_lfs_protocol_rejects_bad_uploads(local_hub):
    HfApi().create_repo("user/lfs")
    oid = hashlib.sha256(b"payload").hexdigest()
    status, _, body = _post_json(
        local_hub, "/user/lfs.git/info/lfs/objects/batch",
        {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": 7}], "hash_algo": "sha256"},
    )
    assert status == 200
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]

    def put(url: str, data: bytes) -> int:
        req = urllib.request.Request(url, data=data, method="PUT")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    assert put(href.replace("ticket=", "ticket=00"), b"payload") == 403  # forged ticket
    assert put(href, b"PAYLOAD") == 400  # content does not match the oid
    assert put(href, b"payload-too-long") == 413
    # Committing an LFS pointer whose object was never uploaded fails.
    line = lambda key, value: json.dumps({"key": key, "value": value})  # noqa: E731
    body = "\n".join([line("header", {"summary": "x"}), line("lfsFile", {"path": "w.bin", "algo": "sha256", "oid": oid, "size": 7})])
    req = urllib.request.Request(
        f"{local_hub.endpoint}/api/models/user/lfs/commit/main", data=body.encode(), method="POST",
        headers={"Content-Type": "application/x-ndjson", **local_hub.auth_headers()},
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=30)  # noqa: S310
    assert exc.value.code == 422
    assert put(href, b"payload") == 200
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        assert resp.status == 200
    assert local_hub.repo_files("user/lfs")["w.bin"] == b"payload"


_SUBPROCESS_LOAD = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertModel

    out = sys.argv[1]
    bert = BertModel.from_pretrained("user/tiny-bert")
    tok = AutoTokenizer.from_pretrained("user/tiny-bert")
    custom = AutoModelForSequenceClassification.from_pretrained("user/tiny-custom", trust_remote_code=True)
    torch.save({"bert": bert.state_dict(), "custom": custom.state_dict()}, out + ".pt")
    json.dump({"ids": tok("hello world")["input_ids"], "custom_class": type(custom).__name__,
               "custom_module": type(custom).__module__}, open(out + ".json", "w"))
    """
)

_CUSTOM_MODEL_CODE = textwrap.dedent(
    """
    import torch
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutput


    class LocalHubTinyConfig(PretrainedConfig):
        model_type = "local-hub-tiny"

        def __init__(self, hidden_size=8, num_labels=3, **kwargs):
            self.hidden_size = hidden_size
            super().__init__(num_labels=num_labels, **kwargs)


    class LocalHubTinyForSequenceClassification(PreTrainedModel):
        config_class = LocalHubTinyConfig

        def __init__(self, config):
            super().__init__(config)
            self.embed = torch.nn.Embedding(16, config.hidden_size)
            self.head = torch.nn.Linear(config.hidden_size, config.num_labels)
            self.post_init()

        def forward(self, input_ids=None, **kwargs):
            return SequenceClassifierOutput(logits=self.head(self.embed(input_ids).mean(1)))
    """
)


@pytest.mark.slow
def test_transformers_push_to_hub_and_from_pretrained_in_subprocess(local_hub, tmp_path):
    import importlib.util

    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    bert = BertModel(config).eval()
    bert.push_to_hub("user/tiny-bert")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]) + "\n")
    BertTokenizer(str(vocab)).push_to_hub("user/tiny-bert")

    # A model with custom code, registered for the Auto classes (what trust_remote_code loads).
    module_path = tmp_path / "local_hub_tiny_model.py"
    module_path.write_text(_CUSTOM_MODEL_CODE)
    spec = importlib.util.spec_from_file_location("local_hub_tiny_model", module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_hub_tiny_model"] = module
    try:
        spec.loader.exec_module(module)
        module.LocalHubTinyConfig.register_for_auto_class()
        module.LocalHubTinyForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
        custom = module.LocalHubTinyForSequenceClassification(module.LocalHubTinyConfig()).eval()
        custom.push_to_hub("user/tiny-custom")
    finally:
        sys.modules.pop("local_hub_tiny_model", None)

    files = HfApi().list_repo_files("user/tiny-bert")
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert "local_hub_tiny_model.py" in HfApi().list_repo_files("user/tiny-custom")
    assert json.loads(Path(hf_hub_download("user/tiny-custom", "config.json")).read_text())["auto_map"]

    # Fresh interpreter: HF_ENDPOINT etc. come from the environment, nothing patched, not offline.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = tmp_path / "loaded"
    proc = subprocess.run([sys.executable, "-c", _SUBPROCESS_LOAD, str(out)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = torch.load(str(out) + ".pt", weights_only=True)
    meta = json.loads(Path(str(out) + ".json").read_text())
    for name, tensor in bert.state_dict().items():
        assert torch.equal(loaded["bert"][name], tensor), name
    for name, tensor in custom.state_dict().items():
        assert torch.equal(loaded["custom"][name], tensor), name
    assert meta["custom_class"] == "LocalHubTinyForSequenceClassification"
    assert meta["custom_module"].startswith("transformers_modules.")
    assert meta["ids"] == [2, 5, 6, 3]
