"""GET /openapi.json documents every route the app has, from the models it validates with, and
schemathesis (generated requests, valid and not) finds no 5xx against a real daemon subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.daemon.http.openapi import build_document
from localllm.daemon.requests import ChatCompletionRequest
from tests.daemon.test_server import _get_json, _start_daemon


async def test_the_document_covers_every_route_with_the_validating_models(make_client):
    client = await make_client()
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.1.0"
    routes = {(route.method.lower(), route.resource.canonical) for route in client.app.router.routes()
              if route.method not in ("HEAD", "OPTIONS")}
    documented = {(method, path) for path, methods in document["paths"].items() for method in methods}
    assert documented == routes
    chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    expected = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    expected.pop("$defs")
    served = document["components"]["schemas"]["ChatCompletionRequest"]
    assert {k: v for k, v in served["properties"].items() if k != "model"} == {
        k: v for k, v in expected["properties"].items() if k != "model"}
    assert served["properties"]["model"]["examples"] == ["smollm2-135m-instruct"]


async def test_an_undocumented_route_is_refused(make_client):
    client = await make_client()

    async def secret(request):
        raise AssertionError

    client.app.router._frozen = False
    client.app.router.add_get("/v1/undocumented", secret)
    with pytest.raises(ValueError, match="undocumented"):
        build_document(client.app)


@pytest.mark.slow
def test_generated_requests_find_no_server_error(localllm_home, models_dir, tmp_path):
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if schemathesis is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    daemon, port = _start_daemon(localllm_home, engine_default_max_tokens=4, engine_n_ctx=512)
    try:
        result = subprocess.run(
            [schemathesis, "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", "8", "--workers", "1", "--seed", "1", "--no-shrink",
             "--report", "ndjson", "--report-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"})
        assert result.returncode == 0, result.stdout[-4000:]
        assert "passed" in result.stdout and "failed" not in result.stdout.split("Test cases:")[-1]
        assert _get_json(f"http://127.0.0.1:{port}/health")[0] == 200  # still up and ready
    finally:
        daemon.terminate()
        _, stderr = daemon.communicate(timeout=60)
    assert b"Traceback" not in stderr
