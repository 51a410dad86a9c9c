"""Fixtures of the gateway integration tests (the session-wide ones live in tests/integration/conftest.py)."""
from __future__ import annotations

import pytest
from gateway_support import ADMIN_TOKEN, deploy, wait_ready


@pytest.fixture()
def app_factory(serve_instance, tmp_path):
    """Deploy gateway apps with a token file; every app is deleted after the test."""
    from ray import serve

    token_file = tmp_path / "token"
    token_file.write_text(ADMIN_TOKEN)
    names: list[str] = []

    def make(name: str, config: dict) -> str:
        config["admin"] = {"token_file": str(token_file)}
        deploy(config, name=name, prefix=f"/{name}")
        names.append(name)
        url = f"{serve_instance['url']}/{name}"
        wait_ready(url)
        return url

    yield make
    for name in names:
        serve.delete(name)




@pytest.fixture(scope="session")
def text_models(tmp_path_factory) -> dict:
    """The MiniLM teacher, a tiny distilled text student and a corrupted copy, built once per session."""
    from text_support import build_text_artifacts, require_corpus

    require_corpus()
    # pytest's per-user temp root outlives a session: the next session reuses the folder (the
    # MiniLM ONNX export is the slow part), keyed by the distill code that built it.
    return build_text_artifacts(tmp_path_factory.getbasetemp().parent, tmp_path_factory.mktemp("text-corrupt"))
