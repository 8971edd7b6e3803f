"""The SDK against a topic that does not exist on the real broker: it says so, and nothing is lost."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest

import producer as mf
from producer.spool_file import read_spool
from schemas.settings import Settings

pytestmark = pytest.mark.integration


def test_a_missing_topic_is_named_with_the_command_that_creates_it_and_the_events_are_spooled(
    settings: Settings, tmp_path: Path
) -> None:
    missing = dataclasses.replace(settings, topic=f"missing-{uuid.uuid4().hex[:12]}")
    run = mf.init(project="topic", settings=missing, spool_dir=tmp_path)
    run.log({"loss": 0.5})
    with pytest.warns(mf.SpoolWarning) as caught:
        run.finish()
    assert run.report is not None and run.report.reason is not None
    reason = run.report.reason
    assert f"topic {missing.topic!r} does not exist" in reason and "`metricfold topics`" in reason, reason
    assert "not sent" not in reason
    assert reason in str(caught[0].message)
    # nothing lost: every record of the run is in the spool, for `metricfold sync` once the topic exists
    assert run.report.records_sent == 0 and run.report.spool_path is not None
    assert len(read_spool(run.report.spool_path)) == run.report.records_spooled > 0
