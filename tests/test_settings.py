"""Settings: what a Redis URL may be (checked when it is read), and that no password is ever shown."""

from __future__ import annotations

import logging

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaConfigurationError

import consumer.kafka_io  # noqa: F401  (masks the SASL password in kafka-python's admin client log)
from schemas.errors import ConfigError
from schemas.settings import Settings, redact_url

SECRET = "S3cr3t-pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://u:{SECRET}@127.0.0.1:6379/0", "redis://u:***@127.0.0.1:6379/0"),
        (f"rediss://:{SECRET}@redis.example:6380/2", "rediss://:***@redis.example:6380/2"),
        (f"redis://u:{SECRET}@@host:1/0", "redis://u:***@host:1/0"),  # an '@' in the password: the last one ends it
        (f"redis://u:a/b?{SECRET}@host:1/0", "redis://u:***@host:1/0"),  # '/' and '?' in the password
        (f"redis://host:6379/0?password={SECRET}&db=1", "redis://host:6379/0?password=***&db=1"),
        (f"redis://u:{SECRET}@host:abc/0", "redis://u:***@host:abc/0"),  # malformed: still redacted
        ("redis://reader@host:6379/0", "redis://reader@host:6379/0"),  # a user name alone is not a secret
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        (f"SASL_SSL://u:{SECRET}@broker:9093", "SASL_SSL://u:***@broker:9093"),
        ("broker-1:9092", "broker-1:9092"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_user_host_port_and_db(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_settings_repr_and_displays_show_no_password() -> None:
    settings = Settings(
        redis=f"redis://u:{SECRET}@127.0.0.1:6379/0",
        kafka="broker-1:9092,broker-2:9092",
        redis_password=SECRET,
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="trainer",
        kafka_sasl_password=SECRET,
    )

    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert "redis='redis://u:***@127.0.0.1:6379/0'" in repr(settings)
    assert settings.redis_display == "redis://u:***@127.0.0.1:6379/0"
    assert settings.kafka_display == "broker-1:9092,broker-2:9092"
    assert settings.redis == f"redis://u:{SECRET}@127.0.0.1:6379/0"  # what connects is unchanged


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"redis://u:{SECRET}@127.0.0.1:99999/0", "port must be a number from 1 to 65535"),
        (f"redis://u:{SECRET}@127.0.0.1:abc/0", "port must be a number from 1 to 65535"),
        (f"redis://u:{SECRET}@127.0.0.1:0/0", "port must be a number from 1 to 65535"),
        (f"redis://u:{SECRET}@127.0.0.1:6379/x", "the database 'x' must be a number >= 0"),
        (f"redis://u:{SECRET}@127.0.0.1:6379/-1", "the database '-1' must be a number >= 0"),
        (f"redis://u:{SECRET}@127.0.0.1:6379/?db=two", "the database 'two' must be a number >= 0"),
        (f"http://u:{SECRET}@127.0.0.1:6379/0", "must start with redis://"),
    ],
)
def test_a_bad_redis_url_is_a_config_error_that_names_it_without_its_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        Settings(redis=url)

    assert SECRET not in str(raised.value) and "u:***@127.0.0.1" in str(raised.value)


def test_tls_options_without_rediss_do_not_echo_the_password() -> None:
    with pytest.raises(ConfigError, match="need a rediss://") as raised:
        Settings(redis=f"redis://u:{SECRET}@127.0.0.1:6379/0", redis_ca_cert="/etc/ssl/ca.pem")

    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("kafka", [f"u:{SECRET}@broker:9092", f"broker-1:9092,u:{SECRET}@broker-2:9092"])
def test_kafka_bootstrap_servers_with_credentials_are_refused_without_echoing_them(kafka: str) -> None:
    with pytest.raises(ConfigError, match="host:port") as raised:
        Settings(kafka=kafka)

    assert SECRET not in str(raised.value) and "u:***@broker" in str(raised.value)


def test_kafka_admin_client_logs_its_configuration_without_the_sasl_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kafka.admin.client")
    with pytest.raises(KafkaConfigurationError):  # an unknown option: refused right after the configuration is logged
        KafkaAdminClient(bootstrap_servers="127.0.0.1:9", sasl_plain_username="trainer", sasl_plain_password=SECRET,
                         not_an_option=1)

    assert "Starting KafkaAdminClient with configuration" in caplog.text and "'trainer'" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/15", "redis://h/?db=3",
     "rediss://[::1]:6380/1", "unix:///run/redis.sock?db=2"],
)
def test_good_redis_urls_are_accepted(url: str) -> None:
    assert Settings(redis=url).redis == url
