"""Bad input on the topic (the consumer half of the fuzz suite; tests/test_fuzz_client.py is the SDK half).

Hypothesis generates events of every type for a few "fuzz" runs; each is encoded and then mutated (truncated,
bytes flipped, fingerprint replaced, magic broken, a string made invalid UTF-8). Hand-made hostile events
(maps over the value limit, nesting over the depth limit, giant strings, keys over the length limit, negative
seqs, malformed tensors, `best` without an objective, a record type no schema knows) go to the fuzz runs and
to a few "good" runs, between the good runs' valid events (NaN and ±inf among their values). Everything is
written to the topic with a raw KafkaProducer (>= 100,000 records with METRICFOLD_CHAOS=full).

The claims: the consumer never crashes and catches up; every record that is bad by construction, and every
record that does not decode, is in the dead-letter topic with a reason (and none twice); the dead-letter count
is what the stats say; and the good runs are exactly what a clean fold of only their valid events gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import random
from collections import Counter
from typing import Any

import fastavro
import pytest
from chaoslib import FULL, record
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from consumer.consume.run_paths import run_path_of
from consumer.kafka_io import delete_topics, ensure_topics
from consumer.store import Store
from schemas import codec
from schemas.errors import CodecError, ValidationError
from schemas.settings import Settings

from support import consume_all, read_full_records

pytestmark = pytest.mark.integration

BASE_EVENTS, MUTATIONS = (6_000, 16) if FULL else (700, 6)  # full: ~108,000 records
GOOD_RUNS, GOOD_LOGS = (12, 400) if FULL else (4, 100)
FUZZ_RUNS = [f"f{i}" for i in range(8)]
OPTIONS = ["min", "max", "mean", "first", "last", "best", "none", "median", ""]


@dataclasses.dataclass(frozen=True)
class Item:
    key: bytes
    value: bytes
    kind: str  # "good" (valid, of a good run), "bad" (bad by construction), "maybe" (fuzzed: decoded or not)
    how: str


# ---------------------------------------------------------------------------------------------- generated
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(lambda items: ("metricfold.List", {"items": items}), st.lists(scalars, max_size=4)),
        st.builds(lambda vs: ("metricfold.Subtree", {"values": vs}),
                  st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=4)),
    ),
    max_leaves=10,
)
value_maps = st.dictionaries(st.text(min_size=0, max_size=10), values, max_size=6)


@st.composite
def fuzz_events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    envelope = {
        "entity": "fuzz", "project": "f", "run_id": draw(st.sampled_from(FUZZ_RUNS)),
        "producer_id": draw(st.sampled_from(["pa", "pb", "pc"])), "seq": draw(st.integers(-3, 60)),
        "ts_ms": draw(st.integers(-(2**40), 2**42)),
    }
    kind = draw(st.sampled_from(["Log", "Log", "Log", "SummaryUpdate", "DefineMetric", "RunStarted", "RunFinished"]))
    if kind == "Log":
        fields: dict[str, Any] = {"step": draw(st.integers(-5, 10**6)), "values": draw(value_maps)}
    elif kind == "SummaryUpdate":
        fields = {"set": draw(value_maps), "remove": draw(st.lists(st.text(max_size=6), max_size=3))}
    elif kind == "DefineMetric":
        fields = {
            "name": draw(st.text(max_size=12)),
            "summary": draw(st.lists(st.sampled_from(OPTIONS), max_size=3)),
            "objective": draw(st.sampled_from([None, "minimize", "maximize", "sideways"])),
            "step_metric": draw(st.sampled_from([None, "epoch"])),
            "hidden": draw(st.booleans()), "overwrite": draw(st.booleans()),
        }
    elif kind == "RunStarted":
        fields = {"name": draw(st.one_of(st.none(), st.text(max_size=10))),
                  "config_json": draw(st.sampled_from(["{}", '{"lr": 0.1}', "not json", '{"a": NaN}', "[1, 2]"])),
                  "tags": draw(st.lists(st.text(max_size=6), max_size=3))}
    else:
        fields = {"exit_code": draw(st.integers(-(2**31), 2**31 - 1))}
    return f"metricfold.{kind}", {**envelope, **fields}


def generated_events() -> list[tuple[tuple[str, dict[str, Any]], int]]:
    drawn: list[tuple[tuple[str, dict[str, Any]], int]] = []

    @hypothesis_settings(max_examples=BASE_EVENTS, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(event=fuzz_events(), seed=st.integers(0, 2**32 - 1))
    def draw(event: tuple[str, dict[str, Any]], seed: int) -> None:
        drawn.append((event, seed))

    draw()
    return drawn


def mutations(value: bytes, rng: random.Random) -> list[tuple[bytes, str, str]]:
    """(bytes, kind, how) variants of one valid encoding."""
    out: list[tuple[bytes, str, str]] = []
    for _ in range(MUTATIONS):
        choice = rng.randrange(5)
        if choice == 0:
            out.append((value[: rng.randrange(len(value))], "bad", "truncated"))
        elif choice == 1:
            out.append((value[:2] + rng.randbytes(8) + value[10:], "bad", "unknown fingerprint"))
        elif choice == 2:
            out.append((bytes([rng.choice([b for b in range(256) if b != 0xC3])]) + value[1:], "bad", "bad magic"))
        elif choice == 3:  # entity "fuzz" (the first field: length 4 -> zigzag 0x08) made invalid UTF-8
            out.append((value[:11] + b"\xff\xfe\xc3\x28" + value[15:], "bad", "invalid UTF-8"))
        else:
            flipped = bytearray(value)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(10, len(flipped))
                flipped[i] ^= 1 << rng.randrange(8)
            out.append((bytes(flipped), "maybe", "bytes flipped"))
    return out


# ---------------------------------------------------------------------------------------------- hand-made
def unknown_type_record(datum: dict[str, Any]) -> bytes:
    """A record written with a schema no one has: an unknown event type."""
    schema = fastavro.parse_schema({"type": "record", "name": "Bogus", "namespace": "metricfold",
                                    "fields": [{"name": "entity", "type": "string"}, {"name": "note", "type": "string"}]})
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, {"entity": datum["entity"], "note": "from the future"})
    return b"\xc3\x01" + random.Random(len(body.getvalue())).randbytes(8) + body.getvalue()


def define(envelope: dict[str, Any], seq: int, name: str, summary: list[str]) -> bytes:
    return codec.encode("metricfold.DefineMetric", {**envelope, "seq": seq, "name": name, "summary": summary, "objective": None,
                                                    "step_metric": None, "hidden": False, "overwrite": False})


def hostile(envelope: dict[str, Any], seq: int, rng: random.Random) -> list[tuple[bytes, str]]:
    """Events that break a rule (each is refused whole: one dead letter)."""
    def log(values: dict[str, Any], seq: int = seq) -> bytes:
        return codec.encode("metricfold.Log", {**envelope, "seq": seq, "step": 0, "values": values})

    deep: Any = 1.0
    for _ in range(17):
        deep = ("metricfold.Subtree", {"values": {"k": deep}})
    nan_map = {f"n{i}": rng.choice([math.nan, math.inf, -math.inf]) for i in range(10_001)}
    return [
        (log(nan_map), "map over max_values_per_event (NaN/inf values)"),
        (log({"d": deep}), "nesting over max_key_depth"),
        (log({"s": "x" * 70_000}), "string over max_string_length"),
        (log({"k" * 300: 1.0}), "key over max_key_length"),
        (log({"": math.nan}), "empty key"),
        (log({"loss": 0.5}, seq=-rng.randint(1, 2**40)), "negative seq"),
        (log({"t": ("metricfold.Tensor", {"kind": "numpy.ndarray", "npy": rng.randbytes(40)})}), "malformed tensor"),
        (define(envelope, seq, "acc", ["best"]), "best without objective"),
        (unknown_type_record(envelope), "unknown event type"),
    ]


def good_run(index: int, rng: random.Random) -> tuple[bytes, list[bytes], list[tuple[int, bytes, str]]]:
    """A good run's key, its valid events in order (event i has seq i), and hostile events aimed at it: the same
    producer and a seq that a valid event uses later (a refused event must leave no trace, not even in the
    dedup memory, or that valid event would be skipped)."""
    envelope = {"entity": "good", "project": "g", "run_id": f"r{index}", "producer_id": f"good-{index}", "ts_ms": 1_700_000_000}
    started = {**envelope, "seq": 0, "name": f"good {index}", "config_json": "{}", "tags": ["t"]}
    valid = [codec.encode("metricfold.RunStarted", started), define(envelope, 1, "loss", ["min", "max", "mean"])]
    for step in range(GOOD_LOGS):
        loss = rng.choice([math.nan, math.inf, -math.inf]) if step % 17 == 5 else rng.random()
        valid.append(codec.encode("metricfold.Log", {**envelope, "seq": 2 + step, "step": step,
                                                     "values": {"loss": loss, "acc": 1 - rng.random(), "tag": f"s{step}"}}))
    valid.append(codec.encode("metricfold.RunFinished", {**envelope, "seq": 2 + GOOD_LOGS, "exit_code": 0}))
    aimed = [(seq, value, how) for seq in (2, GOOD_LOGS // 2) for value, how in hostile(envelope, seq, rng)]
    return f"good/g/r{index}".encode(), valid, aimed


def build_stream(rng: random.Random) -> list[Item]:
    items: list[Item] = []
    for (name, datum), seed in generated_events():
        key = f"fuzz/f/{datum['run_id']}".encode()
        try:
            value = codec.encode(name, datum)
        except CodecError:  # hypothesis found a datum the schema cannot hold (e.g. an int beyond an Avro int)
            continue
        items.append(Item(key, value, "maybe", "generated"))
        items += [Item(key, v, kind, how) for v, kind, how in mutations(value, random.Random(seed))]
    # seqs no other event of that producer uses: an event with an applied (producer id, seq) is a duplicate, skipped
    fuzz_envelope = {"entity": "fuzz", "project": "f", "run_id": "f0", "producer_id": "hostile", "ts_ms": 1}
    for i in range(len(items) // 2000 + 1):
        items += [Item(b"fuzz/f/f0", v, "bad", how) for v, how in hostile(fuzz_envelope, i, rng)]
    items += [Item(b"", b"", "bad", "empty record"), Item(b"fuzz/f/f1", b"\xc3\x01", "bad", "header only")]
    rng.shuffle(items)
    for index in range(GOOD_RUNS):  # the good runs' events keep their order, at random places in the stream
        key, valid, aimed = good_run(index, rng)
        sequence = [Item(key, v, "good", "valid") for v in valid]
        for seq, value, how in aimed:  # before the valid event with the same seq
            before = sequence.index(Item(key, valid[seq], "good", "valid"))
            sequence.insert(rng.randrange(before + 1), Item(key, value, "bad", how))
        places = sorted(rng.randrange(len(items) + 1) for _ in sequence)
        for offset, (place, item) in enumerate(zip(places, sequence, strict=True)):
            items.insert(place + offset, item)
    return items


def produce(settings: Settings, topic: str, items: list[Item]) -> list[tuple[int, int]]:
    """Write the records as they are; return each one's (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all", linger_ms=20, batch_size=1 << 20,
                             max_request_size=32 * 1024 * 1024)
    try:
        futures = [producer.send(topic, key=item.key or None, value=item.value) for item in items]
        producer.flush()
        return [(m.partition, m.offset) for m in (f.get(timeout=60) for f in futures)]
    finally:
        producer.close()


def does_not_decode(value: bytes) -> bool:
    try:
        run_path_of(codec.decode(value))
    except (CodecError, ValidationError):
        return True
    return False


def test_fuzzed_records_never_stop_the_consumer_every_bad_one_is_a_dead_letter_and_every_valid_one_is_folded(
    settings: Settings,
) -> None:
    rng = random.Random(20261129)
    items = build_stream(rng)
    positions = produce(settings, settings.topic, items)
    valid_only = dataclasses.replace(settings, topic=settings.topic + "-valid", namespace=settings.namespace + "valid")
    ensure_topics(valid_only)
    try:
        produce(valid_only, valid_only.topic, [item for item in items if item.kind == "good"])
        report = consume_all(settings)
        consume_all(valid_only)
    finally:  # the fixture deletes the settings' topics, not this one
        with contextlib.suppress(Exception):
            delete_topics(valid_only, [valid_only.topic, valid_only.dead_letter_topic])
    dead = read_full_records(settings, report.undecodable + report.dead_letters, timeout=120, topic=settings.dead_letter_topic)

    dead_at = Counter((int(dict(r.headers)["source.partition"]), int(dict(r.headers)["source.offset"])) for r in dead)
    reasons = [dict(r.headers).get("reason", b"").decode() for r in dead]
    must_be_dead = [(item, at) for item, at in zip(items, positions, strict=True)
                    if item.kind == "bad" or (item.kind == "maybe" and does_not_decode(item.value))]
    missing = [(item.how, at) for item, at in must_be_dead if at not in dead_at]
    with Store(settings) as store, Store(valid_only) as clean:
        stats = store.stats()
        good = {f"good/g/r{i}": store.read_run(f"good/g/r{i}") for i in range(GOOD_RUNS)}
        expected = {f"good/g/r{i}": clean.read_run(f"good/g/r{i}") for i in range(GOOD_RUNS)}
        clean_events = clean.stats()["events"]
    record("fuzz: random, mutated and hostile records on the topic", None, records=len(items),
           bad_by_construction=sum(i.kind == "bad" for i in items), undecodable=report.undecodable,
           refused_events=report.dead_letters, dead_letters=len(dead), missing_dead_letters=len(missing),
           good_runs_equal=good == expected, kinds=dict(Counter(i.how for i in items)))

    assert len(items) >= (100_000 if FULL else 5_000)
    assert missing == []
    assert max(dead_at.values()) == 1  # no record dead-lettered twice
    assert all(reason for reason in reasons)
    assert len(dead) == report.undecodable + report.dead_letters == stats.get("undecodable", 0) + stats.get("dead_letters", 0)
    assert stats.get("undecodable", 0) == report.undecodable
    assert clean_events == GOOD_RUNS * (GOOD_LOGS + 3)
    assert good == expected  # every valid event folded, nothing hostile left a trace
