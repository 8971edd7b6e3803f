"""What every `metricfold` command shares on its command line: the argument types, the connection options (with
the refusal of secrets given as options) and the settings they make."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import TypeAlias

from schemas.settings import Settings

#: the `add_subparsers()` object each command module adds its commands to
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds greater than 0")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


#: options a secret would be passed with, and where it goes instead: refused (a process's arguments are readable by
#: every user of the machine, with `ps`, and stay in the shell's history), without echoing what was given (argparse
#: would print an unknown option's value back as "unrecognized arguments: ...")
SECRET_OPTIONS: dict[tuple[str, ...], str] = {
    ("--password", "--redis-password"): "METRICFOLD_REDIS_PASSWORD_FILE (a file of mode 0600) or METRICFOLD_REDIS_PASSWORD",
    ("--kafka-password", "--kafka-sasl-password", "--sasl-password"):
        "METRICFOLD_KAFKA_SASL_PASSWORD_FILE (a file of mode 0600) or METRICFOLD_KAFKA_SASL_PASSWORD",
}
TOKEN_OPTIONS: dict[tuple[str, ...], str] = {
    ("--token", "--serve-token"): "--token-file / METRICFOLD_SERVE_TOKEN_FILE (a file of mode 0600) or METRICFOLD_SERVE_TOKEN",
}


class RefuseSecret(argparse.Action):
    """A hidden option that refuses the secret given with it, naming the variable or file to use instead."""

    def __init__(self, option_strings: list[str], dest: str, instead: str = "", **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.instead = instead

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string}: a secret is never taken on the command line (every user of this machine can "
                     f"read a process's arguments, and the shell keeps them in its history): use {self.instead} instead")


def refuse_secret_options(parser: argparse.ArgumentParser, options: dict[tuple[str, ...], str]) -> None:
    for names, instead in options.items():
        parser.add_argument(*names, action=RefuseSecret, instead=instead, dest=argparse.SUPPRESS)


def redis_url_without_password(url: str) -> str:
    """--redis: a URL with a password in it is refused (without echoing it), like the other secret options."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None  # not a URL at all: Settings says what is wrong with it, with the password hidden
    if password is not None:
        raise argparse.ArgumentTypeError(
            "a password is never taken on the command line (every user of this machine can read a process's "
            "arguments): give the URL without it, and the password in METRICFOLD_REDIS_PASSWORD_FILE (a file of mode "
            "0600) or METRICFOLD_REDIS_PASSWORD; or the whole URL in METRICFOLD_REDIS")
    return url


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    refuse_secret_options(parser, SECRET_OPTIONS)
    group = parser.add_argument_group("connection (each defaults to its environment variable)")
    group.add_argument("--kafka", help="Kafka bootstrap servers, host:port[,...] (METRICFOLD_KAFKA, default localhost:9092)")
    group.add_argument("--redis", type=redis_url_without_password,
                       help="Redis URL (METRICFOLD_REDIS, default redis://localhost:6379/0); a password goes in "
                       "METRICFOLD_REDIS_PASSWORD_FILE or METRICFOLD_REDIS_PASSWORD, never on the command line")
    group.add_argument("--topic", help="event topic (METRICFOLD_TOPIC, default metricfold.events)")
    group.add_argument("--namespace", help="Redis key prefix (METRICFOLD_NAMESPACE, default mf)")
    group.add_argument("--group", help="consumer group id (METRICFOLD_GROUP, default metricfold-<namespace>)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings the connection options give, each one missing taken from its environment variable."""
    return Settings.from_env(
        kafka=args.kafka, redis=args.redis, topic=args.topic, namespace=args.namespace, group=args.group
    )
