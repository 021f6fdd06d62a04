"""Configuration: environment variables over an optional TOML file; secrets stay private."""

import pytest

from graphmodel.stack.config import StackError, load_config


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in [
        "NEURFLOW_NEO4J_URI",
        "NEURFLOW_NEO4J_PASSWORD",
        "NEURFLOW_S3_BUCKET",
        "NEURFLOW_S3_ENDPOINT",
        "NEURFLOW_BROWSER_PORT",
    ]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEURFLOW_STATE_DIR", str(tmp_path / "state"))
    return monkeypatch


def test_file_settings_and_environment_override(clean_env, tmp_path):
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text('neo4j_uri = "bolt://127.0.0.1:7999"\ns3_bucket = "from-file"\nbrowser_port = 7476\n')
    clean_env.setenv("NEURFLOW_CONFIG", str(cfg_file))
    cfg = load_config()
    assert (cfg.neo4j_uri, cfg.s3_bucket, cfg.browser_port) == ("bolt://127.0.0.1:7999", "from-file", 7476)
    clean_env.setenv("NEURFLOW_S3_BUCKET", "from-env")
    assert load_config().s3_bucket == "from-env"
    assert cfg.neo4j_password not in repr(cfg)


def test_secrets_in_a_readable_file_are_refused(clean_env, tmp_path):
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text('neo4j_password = "a-long-password"\n')
    cfg_file.chmod(0o644)
    clean_env.setenv("NEURFLOW_CONFIG", str(cfg_file))
    with pytest.raises(StackError, match="chmod 600"):
        load_config()
    cfg_file.chmod(0o600)
    assert load_config().neo4j_password == "a-long-password"
    clean_env.setenv("NEURFLOW_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(StackError, match="does not exist"):
        load_config()
