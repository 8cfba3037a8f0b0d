"""The Grafana dashboard's queries answer from a real Prometheus that found the embedded Ray
through Ray's discovery file, and its delivered-contacts series equals the receiver's count."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml

from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import Ledger
from hookcast.cluster.prometheus_discovery import FILE_NAME
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import OK, Reply, Sink
from tests.ports import free_port

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "hookcast-dashboard.json"
JOB = "prom-job"
# $__rate_interval (Grafana: 4 scrape intervals at least): long enough to hold both runs.
RATE_INTERVAL = "5m"
SCRAPE = "1s"


def _get(base: str, path: str, **params: str | float) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def session_dir() -> Path:
    return Path(ray._private.worker._global_node.get_session_dir_path())


@pytest.fixture
def prometheus(tmp_path: Path, session_dir: Path) -> Iterator[str]:
    """The distribution's Prometheus on 127.0.0.1, set up as Ray documents (file_sd_configs
    on the discovery file) with a 1 s scrape; its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the prometheus binary is not on PATH: install the distribution's package "
            "(apt-get install -y prometheus); this test starts it itself, not the service"
        )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE},
                "scrape_configs": [
                    {
                        "job_name": "ray",
                        "file_sd_configs": [{"files": [str(session_dir / FILE_NAME)]}],
                    }
                ],
            }
        )
    )
    base = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "prometheus.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={base.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"prometheus did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _one_value(base: str, query: str) -> float | None:
    result = _get(base, "/api/v1/query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def _wait_for(base: str, query: str, expected: float) -> None:
    """Until Prometheus holds ``expected`` (Ray exports every ~10 s, we scrape every 1 s)."""
    deadline = time.monotonic() + 90
    seen = None
    while time.monotonic() < deadline:
        seen = _one_value(base, query)
        if seen == expected:
            return
        time.sleep(0.5)
    pytest.fail(f"{query} is {seen} after 90 s, not {expected}")


def _variables(dashboard: dict, values: dict[str, str]) -> dict[str, str]:
    """The dashboard's variables as Grafana sends one selected value: regex-escaped, inside
    PromQL's double-quoted strings."""
    names = {v["name"] for v in dashboard["templating"]["list"]} - {"datasource"}
    assert names == set(values), names
    return {name: re.escape(value).replace("\\", "\\\\") for name, value in values.items()}


def _substitute(expr: str, variables: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def _label_values(base: str, definition: str, variables: dict[str, str]) -> list[str]:
    """What Grafana's ``label_values(selector, label)`` lists, from Prometheus' label API."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
    assert match, definition
    selector, label = _substitute(match[1], variables), match[2]
    return _get(base, f"/api/v1/label/{label}/values", **{"match[]": selector})


def test_every_dashboard_query_answers_and_counts_what_the_receiver_got(
    prometheus: str,
    session_dir: Path,
    write_job,
    ledger: Ledger,
    audience_5k: Path,
) -> None:
    started = time.time()
    seen: set[str] = set()

    def answer(request):  # 10 batches a run: 2 retried once, 1 refused for good
        seq = int(request.key.rsplit("-", 1)[1])
        if seq == 6:
            return Reply(status=400)
        if seq in (3, 4) and request.key not in seen:
            seen.add(request.key)
            return Reply(status=503)
        return OK

    with Sink(behaviour=answer) as receiver:
        job = load_job(
            write_job(receiver.url, audience_5k, name=JOB, rate_limit__requests_per_second=10)
        )
        # Two runs, each waited for in Prometheus: the second raises counters Prometheus
        # has already seen (both runs record in this driver), so rates are not all zero.
        delivered = f'sum(ray_hookcast_contacts_delivered_total{{exported_job="{JOB}"}})'
        for _ in range(2):
            summary = start_run(job, ledger)
            assert (summary.delivered_contacts, summary.failed_batches) == (4500, 1)
            _wait_for(prometheus, delivered, receiver.recorder.contacts)
        assert receiver.recorder.contacts == 9000

    # Prometheus found this node's metrics export port through the session's discovery file.
    node = next(n for n in ray.nodes() if n["alive"])
    targets = _get(prometheus, "/api/v1/targets")["activeTargets"]
    (ours,) = [
        t
        for t in targets
        if t["labels"]["instance"] == f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
    ]
    assert ours["discoveredLabels"]["__meta_filepath"] == str(session_dir / FILE_NAME)
    assert ours["health"] == "up"
    # The path Ray's docs name links to this session's file (or a session started since).
    linked = (session_dir.parent / FILE_NAME).resolve()
    assert linked.name == FILE_NAME and linked.parent.parent == session_dir.parent
    assert linked.parent.name >= session_dir.name

    dashboard = json.loads(DASHBOARD.read_text())
    endpoint = receiver.url.split("?")[0]
    chosen = {"SessionName": session_dir.name, "Job": JOB, "Endpoint": endpoint}
    variables = _variables(dashboard, chosen)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            listed = _label_values(prometheus, variable["definition"], variables)
            assert chosen[variable["name"]] in listed, (variable["name"], listed)

    answers: dict[str, list[dict]] = {}
    end = time.time()
    start = end - math.ceil(end - started)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            query = _substitute(target["expr"], variables)
            # The last step is "now", so it sees the last sample.
            series = _get(
                prometheus, "/api/v1/query_range", query=query, start=start, end=end, step=1
            )["result"]
            values = [float(v) for s in series for _, v in s["values"]]
            assert any(math.isfinite(v) for v in values), (panel["title"], query, series)
            answers.setdefault(panel["title"], []).extend(series)

    def last(title: str) -> float:
        (series,) = answers[title]
        return float(series["values"][-1][1])

    def peak(title: str, **labels: str) -> float:
        matching = [s for s in answers[title] if labels.items() <= s["metric"].items()]
        return max(float(v) for s in matching for _, v in s["values"] if math.isfinite(float(v)))

    assert last("Contacts delivered") == receiver.recorder.contacts
    assert last("Dead letters") == 2
    assert last("Circuit breaker") == 0
    assert last("In-flight limit") >= 1
    # Requests that reached the endpoint only (a late hand-back was never sent).
    outcomes = {s["metric"]["outcome"] for s in answers["Requests by outcome"]}
    assert outcomes == {"delivered", "retry", "dead"}, outcomes
    for outcome in ("delivered", "retry", "dead"):
        assert peak("Requests by outcome", outcome=outcome) > 0, outcome
    for title in ("Contacts delivered per second", "Retries per second", "Rate-limit wait"):
        assert peak(title) > 0, title
    assert 0 < peak("Request latency") < 5


def test_the_dashboard_shows_every_run_metric_through_its_datasource_variable() -> None:
    source = (Path(__file__).parents[2] / "cluster" / "metrics.py").read_text()
    suffix = {"Counter": "_total", "Gauge": "", "Histogram": "_bucket"}
    exported = {
        f"ray_{name}{suffix[kind]}"
        for kind, name in re.findall(r"(Counter|Gauge|Histogram)\(\s*\"(\w+)\"", source)
    }
    assert len(exported) == 9, exported
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    shown = {name for name in exported if any(re.search(rf"\b{name}\{{", e) for e in exprs)}
    assert shown == exported
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), panel
    assert {v["name"] for v in dashboard["templating"]["list"]} == {
        "datasource",
        "SessionName",
        "Job",
        "Endpoint",
    }
