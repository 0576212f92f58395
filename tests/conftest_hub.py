"""Pytest fixture `local_hub`: a LocalHubServer with the Hugging Face client environment pointed at it.

Import it from `tests/conftest.py` (`from conftest_hub import local_hub  # noqa: F401`, the `tests`
folder being on `sys.path` there) or list it in `pytest_plugins`.

What the fixture sets up, for the current process and for subprocesses started from the test
(they inherit `os.environ`):

- `HF_ENDPOINT` -> the server, `HF_TOKEN` -> a token the server accepts (user `"user"`);
- `HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE` removed (the rest of the suite runs offline);
- `HF_HOME` (and the hub / assets / xet / modules caches under it) in a temporary directory;
- `HF_HUB_DISABLE_XET=1`: with `hf_xet` installed, huggingface_hub uploads LFS files through Xet
  (which the server does not implement) unless disabled;
- `NO_PROXY` covers 127.0.0.1 so a proxy in the environment is never used.

huggingface_hub reads these variables at import time, so for the current process the fixture also
patches the copies: `huggingface_hub.constants.*`, the module-level `huggingface_hub.hf_api.api`
(whose bound methods are the top-level `create_repo`, `upload_folder`, ...), and transformers'
shared `HfApi` (`transformers.utils.hub._hf_api`). Everything is restored after the test.
Loading `trust_remote_code` models is best done in a subprocess: transformers resolves its
dynamic-modules folder (`HF_MODULES_CACHE`) once, at import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import DEFAULT_TOKEN, DEFAULT_USER, LocalHubServer  # noqa: E402

__all__ = ["local_hub", "configure_hub_env", "LocalHubServer", "DEFAULT_TOKEN", "DEFAULT_USER"]


def configure_hub_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str, hf_home: Path) -> None:
    """Point the HF clients (env + already-imported module state) at `endpoint`, restored by `monkeypatch`."""
    hf_home = Path(hf_home)
    hf_home.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_MODULES_CACHE": str(hf_home / "modules"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE", "HUGGING_FACE_HUB_TOKEN",
                "HUGGINGFACE_CO_STAGING", "HF_HUB_ENABLE_HF_TRANSFER", "HF_XET_HIGH_PERFORMANCE"):
        monkeypatch.delenv(key, raising=False)
    for key in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(key, "")
        monkeypatch.setenv(key, ",".join(x for x in (current, "127.0.0.1", "localhost") if x))

    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import close_session

    patches = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    if "transformers.utils.hub" in sys.modules:
        monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)
    # The shared httpx client read the proxy environment when it was created: start a fresh one.
    close_session()


@pytest.fixture
def local_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHubServer]:
    """A running LocalHubServer (fresh, empty) with HF_ENDPOINT/HF_TOKEN/HF_HOME configured for it."""
    root = tmp_path_factory.mktemp("local_hub")
    server = LocalHubServer(root / "store")
    server.start()
    try:
        configure_hub_env(monkeypatch, server.endpoint, DEFAULT_TOKEN, root / "hf_home")
        yield server
    finally:
        server.stop()
        from huggingface_hub.utils import close_session

        close_session()
