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
