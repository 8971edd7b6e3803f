"""Fixtures: the real Kafka broker and Redis server, and a fresh topic and namespace per test.

With a Docker engine that answers, the services come from deploy/docker-compose.yml through
pytest-docker; otherwise from deploy/local/stack.sh (started if it is not running, and left running
so the next run reuses it: `make down` stops it). Nothing here fakes Kafka or Redis.

The tests log in to Redis as its administrator (the `default` user, whose password the stack made: the local
stack's `<stack dir>/secrets/redis-default.password`, or the compose project's `redis-acl` service); they make
throwaway ACL users where a test needs the consumer's or the reader's rights (tests/test_redis_acl.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from cluster import Cluster, start_cluster
from redis_cluster import RedisClusterStack, fresh_settings_in, start_redis_cluster

from consumer.kafka_io import delete_topics, ensure_topics
from schemas.settings import Settings

from support import read_records

REPO = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO / "deploy" / "local" / "stack.sh"
KAFKA_PORT = int(os.environ.get("METRICFOLD_KAFKA_PORT", "19092"))
REDIS_PORT = int(os.environ.get("METRICFOLD_REDIS_PORT", "16379"))
STACK_DIR = Path(os.environ.get("METRICFOLD_STACK_DIR") or REPO / ".stack")


@dataclasses.dataclass(frozen=True)
class Stack:
    kafka: str
    redis_url: str
    local: bool  # True: deploy/local/stack.sh, so the tests may stop and start services
    #: the administrator's (`default` user's) password; None: a Redis whose default user needs none
    redis_password: str | None = dataclasses.field(default=None, repr=False)

    def redis(self) -> redis.Redis:
        """A client logged in as the administrator."""
        return redis.Redis.from_url(self.redis_url, password=self.redis_password)

    @contextlib.contextmanager
    def fresh_settings(self) -> Iterator[Settings]:
        """Settings with a fresh event topic (created, 4 partitions) and a fresh Redis namespace, both deleted
        afterwards (with the namespaces derived from it: a clean fold into "<ns>clean", a stopped one, ...)."""
        tag = uuid.uuid4().hex[:12]
        made = Settings(kafka=self.kafka, redis=self.redis_url, topic=f"test-{tag}", namespace=f"t{tag}", partitions=4,
                        redis_password=self.redis_password)
        ensure_topics(made)
        try:
            yield made
        finally:
            with contextlib.suppress(Exception):  # the broker may be down after a fault test; the topic is unique
                delete_topics(made, [made.topic, made.dead_letter_topic])
            with contextlib.suppress(redis.RedisError), self.redis() as client:
                keys = list(client.scan_iter(match=f"{made.namespace}*", count=1000))
                for start in range(0, len(keys), 500):
                    client.delete(*keys[start : start + 500])

    def control(self, command: str) -> None:
        """Run a stack.sh command (restart-redis, kill-kafka, ...); local stack only."""
        if not self.local:
            pytest.skip("service restarts need the local stack")
        subprocess.run(["bash", str(STACK_SCRIPT), command], check=True, cwd=REPO)


def _docker_engine_answers() -> bool:
    if os.environ.get("METRICFOLD_NO_DOCKER") or shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(REPO / "deploy" / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return "metricfold-tests"


def _wait_until_ready(kafka: str, redis_url: str) -> None:
    python = os.environ.get("METRICFOLD_PYTHON", str(REPO / ".venv" / "bin" / "python"))
    subprocess.run(
        [python, str(REPO / "deploy" / "local" / "wait_ready.py"), "--kafka", kafka, "--redis", redis_url],
        check=True,
    )


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    kafka = f"127.0.0.1:{KAFKA_PORT}"
    redis_url = f"redis://127.0.0.1:{REDIS_PORT}/0"
    if _docker_engine_answers():
        request.getfixturevalue("docker_services")  # pytest-docker: compose up now, down at the end
        _wait_until_ready(kafka, redis_url)
        return Stack(kafka=kafka, redis_url=redis_url, local=False, redis_password=_compose_admin_password())
    subprocess.run(["bash", str(STACK_SCRIPT), "up"], check=True, cwd=REPO)
    return Stack(kafka=kafka, redis_url=redis_url, local=True, redis_password=admin_password(STACK_DIR))


def admin_password(stack_dir: Path) -> str | None:
    """The Redis administrator's password of the local stack in *stack_dir* (None: none was made)."""
    path = stack_dir / "secrets" / "redis-default.password"
    return path.read_text().partition("\n")[0] if path.exists() else None


def _compose_admin_password() -> str:
    """The administrator's password the compose project's `redis-acl` service made (read from its volume)."""
    command = ["docker", "compose", "-f", str(REPO / "deploy" / "docker-compose.yml"), "-p", "metricfold-tests",
               "run", "--rm", "--no-deps", "-T", "redis-acl", "cat /secrets/redis-default.password"]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.partition("\n")[0]


@pytest.fixture
def redis_mode(request: pytest.FixtureRequest) -> str:
    """standalone, or cluster for the tests of a module that lists it in REDIS_MODES (they run once on each)."""
    return str(getattr(request, "param", "standalone"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    modes = getattr(metafunc.module, "REDIS_MODES", None)
    if modes and "redis_mode" in metafunc.fixturenames:
        metafunc.parametrize("redis_mode", modes, indirect=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterStack]:
    """A Redis Cluster of 6 nodes (tests/redis_cluster.py), started once for the session on first use."""
    with start_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as made:
        yield made


@pytest.fixture
def settings(stack: Stack, redis_mode: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings with a fresh event topic (created, 4 partitions) and a fresh Redis namespace: on the shared Redis, or
    on the session's Redis Cluster when the test runs in cluster mode (REDIS_MODES, BOTH_MODES)."""
    with fresh_settings_in(stack, redis_mode, request) as made:
        yield made


@pytest.fixture
def redis_client(stack: Stack) -> Iterator[redis.Redis]:
    client = stack.redis()
    yield client
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the 3-node Kafka run last, one after the other (in their order otherwise): its three nodes start
    for the first of them and do not load the machine while the rest of the suite runs."""
    items.sort(key=lambda item: "cluster" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-node Kafka (tests/cluster.py: deploy/local/stack.sh in a directory of its own) started once for the session,
    on first use, and stopped at its end; tests/test_kafka_cluster.py and tests/chaos/test_chaos_cluster.py share it."""
    with start_cluster(tmp_path_factory.mktemp("kafka-cluster")) as made:
        yield made


@pytest.fixture
def cluster_settings(cluster: Cluster, stack: Stack) -> Iterator[Settings]:
    """A fresh topic on the 3-node Kafka (created by ensure_topics with the default replication: 3 replicas,
    min.insync.replicas 2) and a fresh namespace in the shared Redis; every node running again afterwards."""
    tag = uuid.uuid4().hex[:12]
    made = Settings(kafka=cluster.kafka, redis=stack.redis_url, topic=f"cluster-{tag}", namespace=f"k{tag}", partitions=4,
                    redis_password=stack.redis_password)
    ensure_topics(made)
    yield made
    cluster.ensure_running()  # a failed fault scenario may have left a node down
    with contextlib.suppress(Exception):
        delete_topics(made, [made.topic, made.dead_letter_topic])
    with contextlib.suppress(redis.RedisError), stack.redis() as client:
        keys = list(client.scan_iter(match=f"{made.namespace}*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])


@pytest.fixture(name="read_records")
def read_records_fixture() -> Callable[..., list[tuple[bytes, bytes]]]:
    """The function support.read_records(settings, count, timeout=30, topic=None)."""
    return read_records


@pytest.fixture
def artifacts_dir() -> Path:
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
