"""The request log: committed before acknowledgement, no prompt text by default, `localllm logs`."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.store.database import database_path, open_database
from localllm.store.request_log import RequestLog, RequestRecord
from localllm.store.writer import StoreWriter


async def test_record_is_committed_when_it_returns(localllm_home):
    writer = StoreWriter(database_path())
    writer.start()
    log = RequestLog(writer)
    await log.record(RequestRecord(endpoint="chat", status=200, model="m", prompt_text="secret prompt",
                                   answer_text="secret answer", prompt_sha256="ab" * 32))
    # A second connection (another process would see the same) finds the row at once.
    rows = list(open_database()["requests"].rows)
    assert len(rows) == 1
    assert rows[0]["prompt_text"] is None and rows[0]["answer_text"] is None
    assert rows[0]["prompt_sha256"] == "ab" * 32
    writer.stop()


async def test_concurrent_writes_are_group_committed_and_none_lost(localllm_home):
    writer = StoreWriter(database_path())
    writer.start()
    log = RequestLog(writer, log_prompts=True)
    await asyncio.gather(*(log.record(RequestRecord(endpoint="chat", status=200, prompt_text=f"p{i}"))
                           for i in range(500)))
    db = open_database()
    assert db["requests"].count == 500
    assert {row["prompt_text"] for row in db["requests"].rows} == {f"p{i}" for i in range(500)}
    writer.stop()


async def test_a_failing_write_does_not_sink_its_batch(localllm_home):
    writer = StoreWriter(database_path())
    writer.start()

    def bad(db):
        db.execute("INSERT INTO no_such_table VALUES (1)")

    good = [writer.submit(lambda db: db["requests"].insert({"created_at": "t", "status": 200})) for _ in range(3)]
    failing = writer.submit(bad)
    for future in good:
        future.result(timeout=10)
    assert failing.exception(timeout=10) is not None
    assert open_database()["requests"].count == 3
    writer.stop()


async def test_logs_cli_shows_recent_requests(localllm_home):
    writer = StoreWriter(database_path())
    writer.start()
    log = RequestLog(writer)
    for i in range(3):
        await log.record(RequestRecord(endpoint="chat", status=200, model=f"model-{i}", route="local"))
    writer.stop()
    result = CliRunner().invoke(cli, ["logs", "--json", "--limit", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["model"] for r in rows] == ["model-2", "model-1"]
    table = CliRunner().invoke(cli, ["logs"])
    assert "model-0" in table.output and "route" in table.output


def test_logs_cli_before_any_request(localllm_home):
    result = CliRunner().invoke(cli, ["logs"])
    assert result.exit_code == 0
    assert "No requests logged yet" in result.output
