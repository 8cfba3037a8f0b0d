"""`hookcast sink`, `demo` and `loadtest`: trying hookcast locally, against its own receiver."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Annotated

import orjson
import typer

from hookcast.cli import output
from hookcast.cli.options import (
    DEFAULT_STATE_DIR,
    AddressOpt,
    JsonOpt,
    Outcome,
    SendersOpt,
    StateDirOpt,
    connect_if_first,
    open_ledger,
    prepared_run,
)
from hookcast.cli.running import outcome_of, run_with_progress, show_summary, stop_on_signals


def sink(
    port: Annotated[int, typer.Option("--port", "-p", help="0 picks a free port.")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Loopback unless you mean it.")] = "127.0.0.1",
    fail_rate: Annotated[
        float, typer.Option("--fail-rate", min=0.0, max=1.0, help="Fraction answered 500.")
    ] = 0.0,
    latency_ms: Annotated[float, typer.Option("--latency-ms", min=0.0)] = 0.0,
    rps: Annotated[
        float | None, typer.Option("--rps", min=0.1, help="Answer 429 above this rate.")
    ] = None,
    secrets: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            envvar="HOOKCAST_SINK_SECRET",
            metavar="<whsec_…>",
            show_default=False,
            help="Verify Standard Webhooks signatures with this whsec_ secret: unsigned, "
            "badly signed or stale requests are answered 401. Repeat it (or give several, "
            "space-separated, in the env var) as a receiver mid-rotation holds two.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert", exists=True, dir_okay=False, help="Serve HTTPS with this PEM certificate."
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option("--tls-key", exists=True, dir_okay=False, help="The certificate's PEM key."),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-client-ca",
            exists=True,
            dir_okay=False,
            help="Mutual TLS: require a client certificate this PEM CA issued.",
        ),
    ] = None,
) -> Outcome:
    """A local receiver to test against: counts requests and contacts, checks duplicates,
    decompresses gzip bodies and, given a secret, verifies signatures."""
    from hookcast.cluster.testbed.sink import Recorder, SinkTls, make_behaviour, serve

    secrets = secrets or []
    problem = _secrets_problem(secrets) or _tls_problem(tls_cert, tls_key, tls_client_ca)
    if problem is not None:
        output.error(problem)
        return Outcome.REJECTED
    tls = SinkTls(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None
    recorder = Recorder(keep_arrivals=False)
    try:
        serve(
            host,
            port,
            behaviour=make_behaviour(failure_rate=fail_rate, latency_ms=latency_ms, rps=rps),
            recorder=recorder,
            secrets=secrets,
            tls=tls,
            on_started=lambda url: _show_listening(url, len(secrets)),
        )
    except OSError as exc:
        output.error(f"cannot listen on {host}:{port}: {exc.strerror}; try another --port.")
        return Outcome.REJECTED
    except ValueError as exc:  # TLS files that are no certificate or key
        output.error(str(exc))
        return Outcome.REJECTED
    # soft_wrap: one line each, whatever the width, for whoever reads the output.
    output.console.print(_received(recorder.snapshot(), verifying=bool(secrets)), soft_wrap=True)
    return Outcome.SUCCEEDED


def _secrets_problem(secrets: list[str]) -> str | None:
    """What is wrong with the first bad --secret, named by its place, never its value."""
    from hookcast.actors.signing import secret_problem

    for i, secret in enumerate(secrets, 1):
        problem = secret_problem(secret)
        if problem is not None:
            which = "--secret" if len(secrets) == 1 else f"--secret {i} of {len(secrets)}"
            return f"{which} (or HOOKCAST_SINK_SECRET) {problem}"
    return None


def _tls_problem(cert: Path | None, key: Path | None, client_ca: Path | None) -> str | None:
    """What is wrong with the --tls-* options together (each file exists: Typer checked)."""
    if (cert is None) != (key is None):
        return "--tls-cert and --tls-key go together: give both to serve HTTPS, or neither."
    if client_ca is not None and cert is None:
        return "--tls-client-ca needs HTTPS: give --tls-cert and --tls-key too."
    return None


def _show_listening(url: str, n_secrets: int) -> None:
    """Where the sink listens, and whether it verifies signatures."""
    output.console.print(
        f"listening on {url}  (counts: GET {url.rsplit('/', 1)[0]}/_stats; Ctrl-C to stop)",
        soft_wrap=True,
    )
    if n_secrets:
        held = "1 secret" if n_secrets == 1 else f"{n_secrets} secrets"
        output.console.print(
            f"verifying signatures with {held}: unverified requests get 401", soft_wrap=True
        )


def _received(stats: dict, verifying: bool) -> str:
    """The final line: what arrived, and how much of it verified when secrets were held."""
    line = (
        f"received {stats['requests']:,} requests, {stats['contacts']:,} contacts "
        f"({stats['unique_ids']:,} unique, {stats['duplicate_ids']:,} duplicates)"
    )
    if verifying:
        line += f"; signatures verified: {stats['signatures_verified']:,} of {stats['requests']:,}"
    return line


def demo(
    contacts: Annotated[int, typer.Option("--contacts", min=1, help="Audience size.")] = 5000,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Keep the sample files here (default: temp).")
    ] = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
) -> Outcome:
    """The quick start: a sample audience, a local receiver, a broadcast on embedded Ray."""
    from hookcast.actors.signing import new_secret
    from hookcast.cluster.job import load_job
    from hookcast.cluster.runs import start_run
    from hookcast.cluster.testbed.demo import SECRET_ENV, write_demo
    from hookcast.cluster.testbed.sink import OK, Sink

    sample: list[bytes] = []

    def keep_first(request) -> object:
        if not sample:
            sample.append(request.body)
        return OK

    with contextlib.ExitStack() as stack:
        folder = directory or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        secret = os.environ.setdefault(SECRET_ENV, new_secret())  # for this process only
        receiver = stack.enter_context(
            Sink(behaviour=keep_first, keep_arrivals=False, secrets=[secret])
        )
        job_path = write_demo(folder, receiver.url, contacts=contacts)
        output.console.print(
            f"[bold]demo[/]: {contacts:,} sample contacts in {folder / 'contacts.parquet'}, "
            f"job {job_path}, receiver at {receiver.url}"
        )
        loaded = load_job(job_path)
        ledger = open_ledger(state_dir)
        prepared = prepared_run(loaded, ledger, None, None)
        with stop_on_signals() as signals:
            summary = run_with_progress(
                start_run,
                signals.options(),
                "demo",
                False,
                job=prepared,
                ledger=ledger,
                ray_aside=True,
            )
        stats = receiver.recorder.snapshot()
    show_summary(summary)
    output.console.print(
        f"[bold]the receiver got[/] {stats['requests']:,} requests carrying "
        f"{stats['contacts']:,} contacts ({stats['unique_ids']:,} unique, "
        f"{stats['duplicate_ids']:,} duplicates); signatures verified: "
        f"{stats['signatures_verified']:,} of {stats['requests']:,}"
    )
    if sample:
        first = orjson.loads(sample[0])
        output.console.print(f"[bold]one element of the first request[/] (of {len(first)}):")
        output.console.print_json(orjson.dumps(first[0]).decode())
    return outcome_of(summary)


def loadtest(
    contacts: Annotated[
        int, typer.Option("--contacts", min=1, help="Synthetic audience size.")
    ] = 200_000,
    url: Annotated[
        str | None, typer.Option("--url", help="Your endpoint (default: the built-in receiver).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=500)] = 500,
    rps: Annotated[
        float | None, typer.Option("--rps", min=0.1, help="Requests per second.")
    ] = None,
    fail_rate: Annotated[
        float, typer.Option("--fail-rate", min=0.0, max=0.99, help="Built-in receiver: 500s.")
    ] = 0.0,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0.0, help="Built-in receiver: delay.")
    ] = 0.0,
    report: Annotated[
        Path | None, typer.Option("--report", help="Where to write the HTML report.")
    ] = None,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    senders: SendersOpt = None,
) -> Outcome:
    """A load test: a synthetic audience broadcast, throughput, latency, retries and losses."""
    from hookcast.cluster.testbed.loadtest import LoadtestOptions, run_loadtest, write_report

    options = LoadtestOptions(
        contacts=contacts,
        url=url,
        batch_size=batch_size,
        requests_per_second=rps,
        fail_rate=fail_rate,
        latency_ms=latency_ms,
        senders=senders,
    )
    ledger = open_ledger(state_dir)
    ray_aside = connect_if_first(address, senders)  # before the handlers: ray.init has its own
    with stop_on_signals() as signals:
        result = run_with_progress(
            run_loadtest,
            signals.options(),
            "loadtest",
            json_out,
            options=options,
            ledger=ledger,
            ray_aside=ray_aside,
        )
    path = write_report(
        result, report or state_dir.expanduser() / "reports" / f"{result.summary.run_id}.html"
    )
    if json_out:
        output.print_json({**result.to_dict(), "report": str(path)})
    else:
        output.print_loadtest(result, path)
    if result.summary.status == "interrupted":
        return Outcome.INTERRUPTED
    return Outcome.SUCCEEDED if result.verified else Outcome.FAILED
