"""`hookcast runs show RUN --html`: the report of a real run to the built-in receiver."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cluster.testbed.sink import OK, Reply, Request, Sink
from tests.unit.test_html_report import Page

runner = CliRunner()
REFUSAL = b'<script>alert("owned")</script> campaign 7 is closed'
REFUSED = ("-000004", "-000007")  # after the canary's 3 batches, so the run goes on


def _refuse_two(request: Request) -> Reply:
    if request.key and request.key.endswith(REFUSED):
        return Reply(status=400, body=REFUSAL)
    return OK


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, audience_5k: Path) -> tuple[Path, str]:
    """A 5,000-contact run (10 batches) whose batches 4 and 7 the endpoint refused."""
    work = tmp_path_factory.mktemp("html-run")
    job = work / "job.yaml"
    with Sink(behaviour=_refuse_two) as receiver:
        job.write_text(
            f"name: html-report\nwebhook: {{url: {receiver.url}, timeout_s: 5}}\n"
            f"audience: {{source: {audience_5k}}}\nbatch_size: 500\n"
        )
        ran = invoke("run", job, "--json", "--state-dir", work / "state")
    assert ran.exit_code == 1, ran.output  # finished with dead letters
    return work / "state", orjson.loads(ran.stdout)["run_id"]


def test_html_report_of_a_real_run_shows_what_was_sent_and_the_dead_letters(
    finished_run: tuple[Path, str], tmp_path: Path
) -> None:
    state, run_id = finished_run
    out = tmp_path / "reports" / "run.html"

    shown = invoke("runs", "show", run_id, "--html", "--out", out, "--json", "--state-dir", state)

    assert shown.exit_code == 0, shown.output
    assert orjson.loads(shown.stdout) == {"html": str(out.resolve())}
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert page.unbalanced == [] and page.open == []
    assert page.fact("job").startswith("html-report")
    assert page.fact("status") == "failed"
    assert page.fact("contacts") == "5,000 in 10 batches of up to 500"
    assert page.fact("delivered") == "4,000 contacts in 8 batches"
    assert page.fact("dead letters") == "2 batches, 1,000 contacts"
    assert "delivered (4,000)" in page.svg_text and "dead-lettered (1,000)" in page.svg_text
    dead = [row for row in page.cells if row and row[0] in ("4", "7")]
    assert [(row[0], row[4]) for row in dead] == [("4", "400"), ("7", "400")]
    assert all(REFUSAL.decode() in row[5] for row in dead)
    assert "script" not in page.tags and "<script" not in text


def test_html_report_goes_to_the_run_id_in_the_current_folder_by_default(
    finished_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, run_id = finished_run
    monkeypatch.chdir(tmp_path)

    shown = invoke("runs", "show", run_id[:-2], "--html", "--state-dir", state)

    assert shown.exit_code == 0, shown.output
    written = tmp_path / f"{run_id}.html"
    assert shown.output.strip() == f"wrote run {run_id}'s report to {written.resolve()}"
    assert Page(written.read_text(encoding="utf-8")).fact("status") == "failed"


def test_out_without_html_and_an_unknown_run_are_refused(
    finished_run: tuple[Path, str], tmp_path: Path
) -> None:
    state, run_id = finished_run

    lone_out = invoke("runs", "show", run_id, "--out", tmp_path / "x.html", "--state-dir", state)
    unknown = invoke("runs", "show", "nope", "--html", "--state-dir", state)

    assert lone_out.exit_code == 2
    assert "--out is where --html writes the report: give --html too." in lone_out.output
    assert unknown.exit_code == 2 and "no run nope" in unknown.output
    assert not (tmp_path / "x.html").exists() and not list(tmp_path.glob("*.html"))
