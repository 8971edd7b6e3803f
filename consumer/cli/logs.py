"""The command's logging: the level `-v` asks for, kafka-python's connection noise kept quiet, and the brokers'
answer when they refuse a login, which `main` adds to the `cannot reach Kafka` error."""

from __future__ import annotations

import logging

from schemas.text import printable


class KafkaLoginRefusals(logging.Handler):
    """Keeps the brokers' answer when they refuse a login (wrong password, unknown user): kafka-python logs it and
    retries, then reports only that it could not bootstrap, so `cannot reach Kafka` would hide the reason."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.refusal: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        start = text.find("SaslAuthenticationFailedError")
        if start >= 0:
            refusal = text[start:].partition(" (backoff")[0]
            while refusal.startswith("SaslAuthenticationFailedError: SaslAuthenticationFailedError"):
                refusal = refusal.removeprefix("SaslAuthenticationFailedError: ")
            self.refusal = printable(refusal[:300])


#: the one handler of this process, on the logger where kafka-python logs a refused login
LOGIN_REFUSALS = KafkaLoginRefusals()


def configure_logging(verbose: bool) -> None:
    """The log level `-v` asks for, with kafka-python's connection warnings quiet unless verbose, but a refused login
    kept (in LOGIN_REFUSALS, cleared here) in either case."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    LOGIN_REFUSALS.refusal = None
    connections = logging.getLogger("kafka.net.manager")  # where kafka-python logs a refused login
    if LOGIN_REFUSALS not in connections.handlers:
        connections.addHandler(LOGIN_REFUSALS)
    if not verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        # kafka-python's connection warnings stay quiet, but a refused login is kept (KafkaLoginRefusals)
        connections.setLevel(logging.WARNING)
        connections.propagate = False
