"""Configuration: defaults < TOML file < environment < flags, with sources and clear errors."""

from __future__ import annotations

import pytest

from localllm import paths
from localllm.config import load_settings
from localllm.errors import ConfigError


def write_config(text: str):
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_bind_loopback_and_live_under_home(localllm_home):
    loaded = load_settings(environ={})
    settings = loaded.settings
    assert settings.server.host == "127.0.0.1"
    assert settings.server.api_token is None
    assert settings.resolved_models_dir == localllm_home / "data" / "models"
    assert loaded.sources["server.port"] == "default"


def test_file_then_env_then_flag_win_in_order():
    path = write_config('[server]\nport = 9001\n[engine]\nn_ctx = 4096\nn_gpu_layers = "all"\n')
    loaded = load_settings(environ={"LOCALLLM_SERVER_PORT": "9002"})
    assert loaded.settings.server.port == 9002
    assert loaded.sources["server.port"] == "env LOCALLLM_SERVER_PORT"
    assert loaded.settings.engine.n_ctx == 4096
    assert loaded.sources["engine.n_ctx"] == f"file {path}"
    assert loaded.settings.engine.gpu_layers == -1
    flagged = load_settings({"server.port": 9003, "engine.model": None}, environ={"LOCALLLM_SERVER_PORT": "9002"})
    assert flagged.settings.server.port == 9003
    assert flagged.sources["server.port"] == "flag --port"
    assert flagged.sources["engine.model"] == "default"


def test_env_lists_are_comma_separated():
    loaded = load_settings(environ={"LOCALLLM_SERVER_ALLOWED_HOSTS": "a.lan, b.lan"})
    assert loaded.settings.server.allowed_hosts == ["a.lan", "b.lan"]


def test_unknown_key_is_reported_with_its_source():
    write_config("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'server.prot'"):
        load_settings(environ={})


@pytest.mark.parametrize("env, needle", [
    ({"LOCALLLM_SERVER_PORT": "99999"}, "server.port"),
    ({"LOCALLLM_ENGINE_N_GPU_LAYERS": "some"}, "engine.n_gpu_layers"),
    ({"LOCALLLM_ENGINE_N_CTX": "many"}, "engine.n_ctx"),
])
def test_bad_values_name_the_key_and_the_env_var(env, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert needle in info.value.message
    assert next(iter(env)) in info.value.message


def test_broken_toml_is_a_clear_error():
    write_config("[server\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(environ={})


def test_per_model_overrides_apply_only_to_that_model():
    write_config('[engine]\nn_ctx = 2048\n[models."big.gguf"]\nn_ctx = 8192\nn_gpu_layers = 12\n')
    settings = load_settings(environ={}).settings
    assert settings.engine_for("big.gguf").n_ctx == 8192
    assert settings.engine_for("big.gguf").gpu_layers == 12
    assert settings.engine_for("other").n_ctx == 2048


def test_threads_default_to_physical_cores():
    settings = load_settings(environ={}).settings
    assert settings.engine.threads >= 1


def test_policy_is_set_per_trust_level_and_class_in_the_file_or_env():
    path = write_config('[policy.cloud]\nperson = "allow"\n[policy.onprem]\nfinancial = "block"\n'
                        '[guard.custom_terms]\nACME_CUSTOMERS = ["Contoso", "Globex"]\n'
                        '[guard.custom_patterns]\nPART_NUMBER = "PN-\\\\d{6}"\n')
    loaded = load_settings(environ={"LOCALLLM_POLICY_CLOUD_CONTACT": "block"})
    policy = loaded.settings.policy
    assert (policy.cloud.person, policy.cloud.contact, policy.cloud.secret) == ("allow", "block", "block")
    assert policy.onprem.financial == "block" and policy.onprem.person == "allow"
    assert loaded.sources["policy.cloud.person"] == f"file {path}"
    assert loaded.sources["policy.cloud.contact"] == "env LOCALLLM_POLICY_CLOUD_CONTACT"
    assert loaded.settings.guard.custom_terms == {"ACME_CUSTOMERS": ["Contoso", "Globex"]}
    assert loaded.settings.guard.custom_patterns == {"PART_NUMBER": "PN-\\d{6}"}
    from localllm.config import describe_settings

    shown = {row[0]: row[1] for row in describe_settings(loaded)}
    assert shown["policy.cloud.person"] == "allow"
    assert shown["guard.custom_terms.ACME_CUSTOMERS"] == "2 terms"  # the terms themselves are not printed
    assert "Contoso" not in str(describe_settings(loaded))


@pytest.mark.parametrize("text, needle", [
    ('[policy.cloud]\nsecret = "allow"\n', "secrets never leave the device"),
    ('[policy.onprem]\nperson = "maybe"\n', "policy.onprem.person"),
    ('[guard.custom_terms]\n"acme customers" = ["x"]\n', "upper-case"),
    ('[router]\nescalate_share = 1.5\n', "router.escalate_share"),
])
def test_bad_decision_settings_are_clear_errors(text, needle):
    write_config(text)
    with pytest.raises(ConfigError, match=needle):
        load_settings(environ={})


def test_batching_settings_are_checked_together():
    loaded = load_settings(environ={"LOCALLLM_ENGINE_N_PARALLEL": "8", "LOCALLLM_ENGINE_KV_CACHE_TYPE": "f16"})
    assert loaded.settings.engine.n_parallel == 8 and loaded.settings.engine.kv_cache_type == "f16"
    assert load_settings(environ={}).settings.engine.kv_cache_type == "q8_0"
    assert load_settings(environ={}).settings.engine.prompt_packing == "auto"
    assert load_settings(environ={"LOCALLLM_ENGINE_PROMPT_PACKING": "all"}).settings.engine.prompt_packing == "all"
    with pytest.raises(ConfigError, match="engine.prompt_packing"):
        load_settings(environ={"LOCALLLM_ENGINE_PROMPT_PACKING": "sometimes"})
    write_config("[engine]\nn_parallel = 16\nn_batch = 8\n")
    with pytest.raises(ConfigError, match=r"n_batch \(8\) must be at least engine.n_parallel \(16\)"):
        load_settings(environ={})
    with pytest.raises(ConfigError, match="engine.kv_cache_type"):
        load_settings(environ={"LOCALLLM_ENGINE_KV_CACHE_TYPE": "q4_0"})
