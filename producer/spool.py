"""Publishing the offline spool: the spool files (producer.spool_file) of runs that could not reach Kafka.

``sync(directory, settings)`` publishes every spool file under *directory* and, once Kafka acknowledged a
file's records, writes ``<file>.synced``: ``{"records": N}``, the first N records were handled (published, or
refused: ``"refused": [indexes]``, checked again by every sync). A second sync sends only records appended
since (and refused ones that now pass); even a resent record is harmless, because the consumer deduplicates
events by (producer id, seq). Each record is checked first as the SDK checks what it sends
(``producer.spoolcheck``), so a hand-edited, foreign or corrupt file never reaches the permanent topic.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from producer.spool_file import SPOOL_SUFFIX, SkipFile, read_container
from producer.spoolcheck import check_record
from producer.transport import KafkaTransport
from schemas.errors import BrokerUnavailable, ConfigError, MetricfoldError
from schemas.limits import Limits
from schemas.settings import Settings

__all__ = ["FileSync", "SyncReport", "sync"]

#: FileSync.status: what sync did with a file. Only SENT and UP_TO_DATE are success (`metricfold sync` exits 0).
SENT, UP_TO_DATE, REFUSED, PARTIAL, NOT_SENT, SKIPPED = "sent", "up to date", "refused", "partial", "not sent", "skipped"


@dataclasses.dataclass
class FileSync:
    """What sync() did with one spool file."""

    path: Path
    status: str = UP_TO_DATE
    sent: int = 0  #: records this sync published
    already: int = 0  #: records an earlier sync published
    refused: int = 0  #: records not published because the SDK would not have sent them (checked again each sync)
    events: int = 0  #: events in the records this sync published
    reason: str = ""  #: why, when the status is not SENT or UP_TO_DATE

    @property
    def ok(self) -> bool:
        return self.status in (SENT, UP_TO_DATE)


@dataclasses.dataclass
class SyncReport:
    """What sync() did: one FileSync per spool file found, in path order."""

    directory: Path
    results: list[FileSync] = dataclasses.field(default_factory=list)

    @property
    def records(self) -> int:
        """Records published by this sync."""
        return sum(r.sent for r in self.results)

    @property
    def events(self) -> int:
        """Events in the records published by this sync."""
        return sum(r.events for r in self.results)

    @property
    def files(self) -> list[Path]:
        """Files of which this sync published records."""
        return [r.path for r in self.results if r.sent]

    @property
    def up_to_date(self) -> list[Path]:
        """Files that had nothing new to publish."""
        return [r.path for r in self.results if r.status == UP_TO_DATE]

    @property
    def ok(self) -> bool:
        """Whether everything in the spool files is now on the topic: nothing refused, skipped or left unsent."""
        return all(r.ok for r in self.results)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".synced")


def _read_marker(path: Path, total: int) -> tuple[int, list[int]]:
    """``<file>.synced``: how many of the first records an earlier sync handled (published or refused), and which of
    those it refused; (0, []) without a marker. Raises SkipFile for a marker sync did not write."""
    marker = _marker(path)
    try:
        text = marker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0, []
    except (OSError, UnicodeDecodeError) as exc:
        raise SkipFile(f"cannot read its marker {marker.name}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    records = data.get("records") if isinstance(data, dict) else None
    refused = data.get("refused", []) if isinstance(data, dict) else None
    if type(records) is not int or records < 0 or not isinstance(refused, list) \
            or any(type(i) is not int or not 0 <= i < records for i in refused):
        raise SkipFile(
            f"its marker {marker.name} is not one sync writes ({text[:60]!r}; it holds {{\"records\": N}}, N >= 0): "
            "delete it to send the whole file again (the consumer ignores events it already has)"
        )
    if records > total:
        raise SkipFile(
            f"its marker {marker.name} says {records} records were sent, but the file holds {total}: the marker of "
            "another file? delete it to send the whole file again (the consumer ignores events it already has)"
        )
    return records, sorted(set(refused))


def _write_marker(path: Path, records: int, refused: list[int]) -> None:
    tmp = path.with_name(path.name + ".synced.tmp")
    tmp.write_text(json.dumps({"records": records, **({"refused": refused} if refused else {})}), encoding="utf-8")
    os.replace(tmp, _marker(path))


def _refusal(exc: Exception) -> str:
    if isinstance(exc, MetricfoldError):
        return str(exc)
    return f"cannot be checked: {type(exc).__name__}: {exc}"  # hostile bytes may break a decoder in other ways


class _Kafka:
    """The transport of one sync, and the first failure of Kafka (then no further file is tried)."""

    def __init__(self, settings: Settings, limits: Limits, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.transport = KafkaTransport(settings, limits, connect_timeout_s=min(timeout_s, 30.0))
        self.failure: str | None = None

    def publish(self, records: list[tuple[str, bytes]]) -> list[tuple[bool, str | None]]:
        """Send *records* and wait for the acks: per record (acknowledged, why it was refused for its size)."""
        if self.failure is None:
            try:
                self.transport.connect()
            except BrokerUnavailable as exc:
                self.failure = str(exc)
        if self.failure is not None:
            return [(False, None)] * len(records)
        deliveries = [self.transport.send(key.encode("utf-8", "surrogatepass"), value) for key, value in records]
        self.transport.flush(self.timeout_s)
        out: list[tuple[bool, str | None]] = []
        for delivery in deliveries:
            if delivery.ok:
                out.append((True, None))
            elif delivery.record_too_large:
                out.append((False, f"Kafka refused it for its size ({delivery.error})"))
            else:
                if self.failure is None:
                    self.failure = (f"Kafka at {self.settings.kafka_display} did not acknowledge them: "
                                    f"{delivery.error or f'no answer within {self.timeout_s:g} s'}")
                out.append((False, None))
        return out


def _sync_file(result: FileSync, kafka: _Kafka, limits: Limits) -> None:
    path = result.path
    if not path.is_file():
        raise SkipFile("a directory, not a spool file" if path.is_dir() else "not a regular file")
    if path.stat().st_size == 0:
        result.reason = "an empty file: nothing to send"
        return
    records, torn = read_container(path)
    done, refused_before = _read_marker(path, len(records))
    todo = [*refused_before, *range(done, len(records))]
    result.already = done - len(refused_before)
    refusals: dict[int, str] = {}
    checked: list[tuple[int, int]] = []  # (index, events) of the records the SDK would have sent
    for i in todo:
        key, value = records[i]
        try:
            checked.append((i, check_record(key, value, limits)))
        except Exception as exc:  # whatever the bytes hold, the record is not published
            refusals[i] = _refusal(exc)
    acked: set[int] = set()
    if checked:
        for (i, events), (ok, too_large) in zip(checked, kafka.publish([records[i] for i, _ in checked]), strict=True):
            if ok:
                acked.add(i)
                result.sent += 1
                result.events += events
            elif too_large:
                refusals[i] = too_large
    handled = set(range(done)).difference(refused_before) | acked | set(refusals)
    new_done = next((i for i in range(len(records)) if i not in handled), len(records))
    new_refused = sorted(i for i in refusals if i < new_done)
    if (new_done, new_refused) != (done, refused_before):
        _write_marker(path, new_done, new_refused)
    result.refused = len(refusals)
    unsent = len(checked) - len(acked) - sum(1 for i, _ in checked if i in refusals)
    reasons = []
    if unsent:
        reasons.append(f"{unsent} record(s) not sent: {kafka.failure}; they stay in the file: run sync again once "
                       "that is fixed")
    if refusals:
        first = min(refusals)
        more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
        reasons.append(f"record {first + 1} of {len(records)} refused: {refusals[first]}{more}; not published")
    if torn:
        reasons.append(torn)
    result.reason = "; ".join(reasons)
    result.status = NOT_SENT if unsent else REFUSED if refusals else PARTIAL if torn else SENT if acked else UP_TO_DATE


def sync(directory: Path | str, settings: Settings, *, limits: Limits | None = None, timeout_s: float = 60.0) -> SyncReport:
    """Publish every spool file under *directory* to Kafka, wait for the acks, and mark what was delivered.

    Each record is checked first as the SDK checks what it sends (producer.spoolcheck); one it would not have sent
    is refused (not published), and so is one larger than the Kafka record limit, without holding up the others.
    If Kafka cannot be reached or does not acknowledge, the files left are not sent; what was acknowledged stays
    marked, so the next sync resumes after it. The report says per file what happened (`SyncReport.ok`: all of
    it is on the topic). Raises ConfigError if *directory* is missing or not a directory.
    """
    root = Path(directory)
    if not root.exists():
        raise ConfigError(f"spool directory {str(root)!r} does not exist: nothing was spooled there (runs spool to "
                          "METRICFOLD_SPOOL_DIR, ./metricfold-spool by default)")
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a directory: give the directory that holds the *{SPOOL_SUFFIX} files")
    limits = limits or Limits.from_env()
    report = SyncReport(root)
    kafka = _Kafka(settings, limits, timeout_s)
    try:
        for path in sorted(root.rglob("*" + SPOOL_SUFFIX)):
            result = FileSync(path)
            report.results.append(result)
            try:
                _sync_file(result, kafka, limits)
            except SkipFile as exc:
                result.status, result.reason = SKIPPED, str(exc)
            except OSError as exc:
                result.status, result.reason = SKIPPED, f"cannot read it: {exc.strerror or exc}"
    finally:
        kafka.transport.close(timeout_s=5.0)
    return report
