from pathlib import Path

import pytest

from stream.config import INPUT_TOPICS, Settings


def test_defaults_bind_loopback_and_use_documented_ports(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("FUNNEL_"):
            monkeypatch.delenv(key)
    s = Settings.from_env()
    assert s.host == "127.0.0.1"
    assert (s.kafka_port, s.redis_port, s.prometheus_port, s.web_port) == (9092, 6379, 9090, 6066)
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.topics == INPUT_TOPICS
    assert s.dead_letter_topic == "funnel.dead-letter"
    assert s.kafka_lib.parts[-2] == "kafka-3.9.1"


def test_env_overrides_and_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("FUNNEL_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("FUNNEL_KAFKA_PORT", "19092")
    monkeypatch.setenv("FUNNEL_TOPIC_PREFIX", "t1.")
    monkeypatch.setenv("FUNNEL_TOPIC_CALL", "calls-raw")
    s = Settings.from_env()
    assert s.run_dir == Path(tmp_path).resolve()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.topics["visit"] == "t1.shop.visits"
    assert s.topics["call"] == "calls-raw"
    assert s.dead_letter_topic == "t1.funnel.dead-letter"


def test_bad_number_names_the_variable(monkeypatch):
    monkeypatch.setenv("FUNNEL_KAFKA_PORT", "ninety")
    with pytest.raises(ValueError, match="FUNNEL_KAFKA_PORT='ninety' is not an integer"):
        Settings.from_env()


def test_web_server_binds_loopback_unless_configured(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("FUNNEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FUNNEL_RUN_DIR", str(tmp_path))
    s = Settings.from_env()
    assert (s.web_bind, s.web_advertise) == ("127.0.0.1", "127.0.0.1")
    # Table state lives under the run directory, not in the current directory.
    assert s.data_dir == Path(tmp_path).resolve() / "worker-data"
    monkeypatch.setenv("FUNNEL_WEB_BIND", "0.0.0.0")
    monkeypatch.setenv("FUNNEL_WEB_ADVERTISE", "funnel-worker-0.funnel-worker")
    s = Settings.from_env()
    assert (s.web_bind, s.web_advertise) == ("0.0.0.0", "funnel-worker-0.funnel-worker")


def test_kafka_security_passes_to_every_client(monkeypatch):
    import ssl

    from stream.kafka.client import client_options, faust_credentials

    monkeypatch.setenv("FUNNEL_KAFKA_BOOTSTRAP", "kafka-0:9093")
    assert client_options(Settings.from_env()) == {
        "bootstrap_servers": "kafka-0:9093",
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(Settings.from_env()) is None
    monkeypatch.setenv("FUNNEL_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("FUNNEL_KAFKA_SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("FUNNEL_KAFKA_SASL_USERNAME", "funnel")
    monkeypatch.setenv("FUNNEL_KAFKA_SASL_PASSWORD", "s3cret")
    s = Settings.from_env()
    options = client_options(s)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("funnel", "s3cret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    credentials = faust_credentials(s)
    assert str(credentials.protocol.value) == "SASL_SSL"
    assert str(credentials.mechanism.value) == "SCRAM-SHA-512"
    # The password never shows in `funnel config` or a repr.
    assert s.describe()["kafka_sasl_password"] == "***"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECURITY_PROTOCOL": "TLS"}, "FUNNEL_KAFKA_SECURITY_PROTOCOL='TLS': expected one of"),
        (
            {"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "GSSAPI"},
            "FUNNEL_KAFKA_SASL_MECHANISM='GSSAPI'",
        ),
        ({"SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs FUNNEL_KAFKA_SASL_USERNAME"),
    ],
)
def test_kafka_security_errors_name_the_setting(monkeypatch, env, message):
    from stream.kafka.client import client_options

    for key, value in env.items():
        monkeypatch.setenv(f"FUNNEL_KAFKA_{key}", value)
    with pytest.raises(ValueError, match=message):
        client_options(Settings.from_env())
