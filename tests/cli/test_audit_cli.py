"""`localllm audit`: egress rows from a real database, never values."""

from __future__ import annotations

import json

from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.store.egress_audit import EgressAudit, EgressRecord
from tests.conftest import record_rows


async def write_audit(records):
    await record_rows(EgressAudit, records)


async def test_audit_lists_egress_newest_first_and_filters():
    await write_audit([
        EgressRecord(upstream="oai", trust="cloud", model="gpt", action="redact",
                     redacted={"PERSON": 2, "EMAIL_ADDRESS": 1}, content_sha256="a" * 64, reason="router"),
        EgressRecord(upstream="lab", trust="onprem", model="big", action="allow", redacted={},
                     content_sha256="b" * 64, reason="cascade_low_logprob"),
    ])
    runner = CliRunner()
    result = runner.invoke(cli, ["audit"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("created_at") and len(lines) == 3
    assert "lab" in lines[1] and "cascade_low_logprob" in lines[1]  # newest first
    assert "EMAIL_ADDRESS=1,PERSON=2" in lines[2] and "a" * 16 in lines[2]

    rows = [json.loads(line) for line in runner.invoke(cli, ["audit", "--json", "--upstream", "oai"]).output
            .splitlines()]
    assert len(rows) == 1 and rows[0]["redacted"] == {"EMAIL_ADDRESS": 1, "PERSON": 2}
    assert rows[0]["redacted_count"] == 3
    assert runner.invoke(cli, ["audit", "--upstream", "nowhere"]).output.startswith("Nothing has left")


def test_audit_before_any_database():
    result = CliRunner().invoke(cli, ["audit"])
    assert result.exit_code == 0 and "Nothing has left this device" in result.output
