"""A GGUF's chat template is code from whoever made the file: it renders only in jinja2's immutable
sandbox. The real default model, copied with the template of CVE-2024-34359 (llama-cpp-python's
server-side template injection), is served and asked; nothing runs, the request is a clean 400."""

from __future__ import annotations

import subprocess
import sys

from localllm.daemon.engine.model_registry import registry_for
from tests.conftest import make_settings


def payload(marker) -> str:
    # The published exploit: reach os.popen through a builtin class's globals.
    return ("{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
            "{{ x()._module.__builtins__['__import__']('os').popen('touch " + str(marker) + "').read() }}"
            "{% endif %}{% endfor %}{{ messages[0]['content'] }}")


async def test_a_hostile_chat_template_cannot_run_code(make_client, default_model_file, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force",
                    "--chat-template", payload(marker), str(default_model_file), str(evil)],
                   check=True, capture_output=True)
    settings = make_settings()
    registry = registry_for(settings, ["evil"], [evil])
    registry.start_all()
    await registry.default.wait_ready()
    try:
        client = await make_client(settings, registry=registry)
        response = await client.post("/v1/chat/completions", json={
            "model": "evil", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2})
        assert response.status == 400
        body = await response.json()
        assert body["error"]["param"] == "messages" and "unsafe" in body["error"]["message"]
        assert not marker.exists()
    finally:
        await registry.stop_all()
