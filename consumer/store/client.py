"""The connection to Redis: redis-py's client with our credentials, TLS and handshake, and what Redis's errors
mean for metricfold (an outage to wait out, a setup error to report, or the fault of a write's data)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.cluster import RedisCluster

from schemas.errors import ConfigError, StoreUnavailable
from schemas.settings import Settings
from schemas.text import printable

__all__ = ["is_cluster", "redis_client"]


#: redis-py's options that turn CLIENT SETINFO off: driver_info=None where redis-py has it (lib_name is deprecated
#: there), lib_name / lib_version=None before
_NO_SETINFO: dict[str, None] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def _client_options(settings: Settings) -> dict[str, Any]:
    """Credentials and TLS from Settings (never from code); the TLS options only for rediss:// URLs. No CLIENT SETINFO
    on connect (redis-py sends it by default to Redis 7.2+): our ACL users may not run it, and each refusal would be an
    entry in the server's ACL LOG, burying the refusals an operator looks there for."""
    options: dict[str, Any] = {"username": settings.redis_username, "password": settings.redis_password,
                               **_NO_SETINFO}
    if settings.redis.startswith("rediss://"):
        if settings.redis_ca_cert:
            options["ssl_ca_certs"] = settings.redis_ca_cert
        if settings.redis_client_cert:
            options["ssl_certfile"] = settings.redis_client_cert
            options["ssl_keyfile"] = settings.redis_client_key
    return options


class _HandshakeFailed(redis.ConnectionError):
    """A new connection's handshake failed: the server is not Redis, refused the credentials or has no such database."""


class _ClusterRefused(_HandshakeFailed):
    """A standalone client met a Redis Cluster node (the URL's server was not reachable when metricfold started, so
    it could not tell): a setup error, not an outage."""


def _shown(exc: BaseException) -> str:
    """An error's text as it may be shown: what a server that is not Redis sent may hold anything."""
    return printable(str(exc)[:200])


def _handshake(connection: Any) -> None:
    """redis-py's setup of each new connection (AUTH or HELLO, SELECT), then PING: a server that does not answer
    like Redis fails here, before any command of ours, with the reason (`redis_connect_func` of redis-py). A
    standalone client refuses a cluster node (its keys are spread over other nodes)."""
    _checked_handshake(connection)
    if _server_mode(connection) == "cluster":
        raise _ClusterRefused(
            "it is a Redis Cluster node, which metricfold did not know when it connected (the server did not answer "
            "then): start the command again, and it uses the cluster")


def _cluster_handshake(connection: Any) -> None:
    """The handshake of a cluster client's connections (each node's)."""
    _checked_handshake(connection)


def _checked_handshake(connection: Any) -> None:
    try:
        connection.on_connect()
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise _HandshakeFailed(f"Redis refused the credentials ({_shown(exc)}): check the URL's user:password@ or "
                               "METRICFOLD_REDIS_USERNAME / METRICFOLD_REDIS_PASSWORD (or _PASSWORD_FILE)") from exc
    except redis.ResponseError as exc:
        if connection.db and "DB index" in str(exc):
            raise _HandshakeFailed(f"Redis has no database {connection.db} ({_shown(exc)}; its `databases` setting says "
                                   "how many it has, 16 by default: numbered from 0)") from exc
        if "unknown command" in str(exc):  # Redis knows every command redis-py sends there (or redis-py ignores it)
            raise _HandshakeFailed(f"the server there does not speak the Redis protocol (it answered: {_shown(exc)})") from exc
        raise _HandshakeFailed(f"Redis refused to set up the connection: {_shown(exc)}") from exc
    except redis.BusyLoadingError:
        raise  # Redis, loading its data: unavailable for now
    except (redis.exceptions.InvalidResponse, redis.ConnectionError) as exc:
        raise _HandshakeFailed(
            f"the server there does not speak the Redis protocol ({_shown(exc)}); if it is a TLS port, use rediss://"
        ) from exc
    try:
        connection.send_command("PING", check_health=False)
        reply = connection.read_response()
    except redis.exceptions.NoPermissionError:
        return  # an ACL user without PING: the server is Redis
    except (redis.ResponseError, redis.exceptions.InvalidResponse, redis.ConnectionError) as exc:
        raise _HandshakeFailed(f"the server there does not speak the Redis protocol ({_shown(exc)})") from exc
    if reply not in (b"PONG", "PONG"):
        raise _HandshakeFailed(f"the server there does not speak the Redis protocol (it answered PING with {reply!r:.60})")


def _server_mode(connection: Any) -> str:
    """`mode` of HELLO's reply: standalone, sentinel or cluster. redis-py keeps the reply when it set the connection
    up with HELLO (RESP3); else HELLO is sent here with the connection's own protocol version, which leaves the
    connection as it was (HELLO needs no ACL permission). "" when the server does not say (a Redis before 6 has no
    HELLO, and no cluster to refuse)."""
    reply = getattr(connection, "handshake_metadata", None)
    if not reply:
        try:
            connection.send_command("HELLO", str(getattr(connection, "protocol", None) or 2), check_health=False)
            reply = connection.read_response()
        except (redis.ResponseError, redis.exceptions.InvalidResponse):
            return ""
    if isinstance(reply, list):  # RESP2: field, value, field, value, ...
        reply = {reply[i]: reply[i + 1] for i in range(0, len(reply) - 1, 2)}
    if not isinstance(reply, dict):
        return ""
    fields = {_text(key): value for key, value in reply.items() if isinstance(key, bytes | str)}
    mode = fields.get("mode", "")
    return _text(mode) if isinstance(mode, bytes | str) else ""


def is_cluster(settings: Settings) -> bool:
    """Whether the URL's server is a Redis Cluster node (HELLO's `mode`, which needs no ACL right). One connection
    that is closed again; a server that cannot be reached or refuses the credentials counts as standalone here, and
    the standalone client reports the reason on its first command (or refuses a cluster node then)."""
    if settings.redis.startswith("unix://"):
        return False
    # RESP2: no HELLO of redis-py's own, whose fallback logs a warning for a server that is not Redis (the standalone
    # client names that server in its error, once)
    probe = redis.Redis.from_url(settings.redis, **_client_options(settings), socket_timeout=5, socket_connect_timeout=5,
                                 protocol=2)
    try:
        connection = probe.connection_pool.get_connection()
        try:
            return _server_mode(connection) == "cluster"
        finally:
            probe.connection_pool.release(connection)
    except (redis.RedisError, OSError, ValueError):
        return False
    finally:
        probe.close()


def redis_client(settings: Settings, *, decode: bool = False) -> redis.Redis:
    """A client of the URL's Redis: redis-py's RedisCluster when it is a cluster node (which follows MOVED and ASK and
    finds the masters again after a failover), else its Redis. Both are used through the same commands; typed as
    Redis for the callers."""
    options: dict[str, Any] = {**_client_options(settings), "decode_responses": decode, "socket_timeout": 30,
                               "socket_connect_timeout": 5, "health_check_interval": 30}
    try:
        if is_cluster(settings):
            return RedisCluster.from_url(settings.redis, **options, redis_connect_func=_cluster_handshake)  # type: ignore[return-value]
        return redis.Redis.from_url(settings.redis, **options, redis_connect_func=_handshake)
    except ValueError as exc:  # redis-py's URL parser: "Invalid value for 'socket_timeout' in connection URL."
        raise ConfigError(f"Redis URL {settings.redis_display!r}: {exc}") from None
    except (redis.exceptions.RedisClusterException, redis.RedisError) as exc:  # no node answered with the slots
        raise StoreUnavailable(f"cannot reach the Redis Cluster at {settings.redis_display}: {_shown(exc)}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[bytes]) -> dict[str, str]:
    """HGETALL as a Lua reply (field, value, field, value, ...) -> dict."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


@contextmanager
def _mapped(settings: Settings) -> Iterator[None]:
    try:
        yield
    except _ClusterRefused as exc:
        raise ConfigError(f"Redis at {settings.redis_display}: {exc}") from None
    except _HandshakeFailed as exc:
        raise StoreUnavailable(f"cannot talk to Redis at {settings.redis_display}: {exc}") from exc
    except redis.exceptions.NoPermissionError as exc:  # the setup's fault, not an outage to wait out
        who = settings.redis_username or "default"
        raise ConfigError(f"Redis user {who!r} was refused ({_shown(exc)}): `metricfold consume`, `replay` and "
                          "`digest` log in as the writer (metricfold-consumer), the reads as metricfold-reader; "
                          "see deploy/redis/README.md") from None
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise StoreUnavailable(f"cannot reach Redis at {settings.redis_display}: {exc}") from exc


#: error replies of Redis itself (not of a script's data) that redis-py leaves as a plain ResponseError; the
#: others (OOM, READONLY, NOPERM, LOADING, NOSCRIPT, auth) have classes of their own
_SERVER_ERRORS = ("BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK", "NOREPLICAS", "MISCONF")


def _script_error(error: redis.exceptions.ResponseError) -> bool:
    """True for an error raised inside a script by the data it was given (a Lua runtime error, a command
    refusing an argument), False for Redis refusing to run it at all (out of memory, read-only, no permission,
    busy, loading, ...), which the consumer waits out instead of dead-lettering records."""
    text = str(error)
    if "can't run this command" in text or "No permissions" in text:  # an ACL refusal inside the script: the setup's fault
        return False
    return type(error) is redis.exceptions.ResponseError and "script" in text and not text.startswith(_SERVER_ERRORS)

