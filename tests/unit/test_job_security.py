"""The job keys of signed, compressed and guarded requests: webhook.signing, compression, tls,
egress. Each rejection names the key and never shows a secret."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import trustme

from hookcast.actors.errors import JobError, JobFileError
from hookcast.actors.signing import new_secret, secret_key
from hookcast.cluster.compile import compile_job
from hookcast.cluster.job import load_job

SECRET = new_secret()
OTHER = new_secret()


def job(tmp_path: Path, webhook_extra: str = "", extra: str = "", url: str = "") -> Path:
    url = url or "https://hooks.example.com/in"
    path = tmp_path / "job.yaml"
    path.write_text(
        f"name: signed\nwebhook:\n  url: {url}\n{webhook_extra}"
        f"audience: {{source: contacts.parquet}}\n{extra}",
        encoding="utf-8",
    )
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(JobFileError) as caught:
        load_job(path, env=env or {})
    return dict(caught.value.problems)


def test_a_secret_from_the_environment_signs_every_request(tmp_path: Path) -> None:
    path = job(tmp_path, '  signing: {secret: "${SIGN}"}\n  compression: gzip\n')
    loaded = load_job(path, env={"SIGN": SECRET})
    plan = compile_job(loaded)
    assert plan.sender.signing_keys == (secret_key(SECRET),)
    assert plan.sender.compression == "gzip"
    assert SECRET in plan.secrets  # redacted from anything shown
    assert SECRET not in loaded.raw_text and SECRET not in repr(plan.sender)


def test_rotation_takes_each_secret_in_order(tmp_path: Path) -> None:
    path = job(tmp_path, '  signing: {secrets: ["${NEW}", "${OLD}"]}\n')
    plan = compile_job(load_job(path, env={"NEW": SECRET, "OLD": OTHER}))
    assert plan.sender.signing_keys == (secret_key(SECRET), secret_key(OTHER))


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("not-a-secret", "whsec_"),
        ("whsec_" + base64.b64encode(b"short").decode(), "5 bytes"),
        ("whsec_!!!", "base64"),
    ],
)
def test_a_bad_secret_is_rejected_naming_the_key(tmp_path: Path, value: str, says: str) -> None:
    found = problems(job(tmp_path, '  signing: {secret: "${SIGN}"}\n'), {"SIGN": value})
    assert list(found) == ["webhook.signing.secret"]
    assert says in found["webhook.signing.secret"]
    assert value not in found["webhook.signing.secret"]


def test_a_secret_written_into_the_job_file_is_refused(tmp_path: Path) -> None:
    found = problems(job(tmp_path, f"  signing: {{secret: {SECRET}}}\n"))
    assert list(found) == ["webhook.signing.secret"]
    assert "environment" in found["webhook.signing.secret"]
    assert SECRET not in found["webhook.signing.secret"]


@pytest.mark.parametrize(
    "signing",
    ['{secret: "${A}", secrets: ["${B}"]}', "{}", '{secrets: ["${A}", "${A}"]}', "{secrets: []}"],
)
def test_one_secret_or_a_list_of_distinct_ones(tmp_path: Path, signing: str) -> None:
    found = problems(job(tmp_path, f"  signing: {signing}\n"), {"A": SECRET, "B": OTHER})
    assert all(key.startswith("webhook.signing") for key in found), found


def test_compression_is_none_or_gzip(tmp_path: Path) -> None:
    found = problems(job(tmp_path, "  compression: br\n"))
    assert "gzip" in found["webhook.compression"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_tls_files_are_read_relative_to_the_job(tmp_path: Path, ca: trustme.CA) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca.cert_pem.write_to_path(str(certs / "ca.pem"))
    client = ca.issue_cert("hookcast-client")
    client.cert_chain_pems[0].write_to_path(str(certs / "client.pem"))
    client.private_key_pem.write_to_path(str(certs / "client.key"))
    tls = (
        "  tls: {ca_bundle: certs/ca.pem, client_cert: certs/client.pem, "
        "client_key: certs/client.key}\n"
    )
    loaded = load_job(job(tmp_path, tls))
    assert loaded.tls is not None and "BEGIN CERTIFICATE" in (loaded.tls.ca_pem or "")
    assert "PRIVATE KEY" not in repr(compile_job(loaded).sender)


@pytest.mark.parametrize(
    ("tls", "key", "says"),
    [
        ("{ca_bundle: missing.pem}", "webhook.tls.ca_bundle", "does not exist"),
        ("{ca_bundle: job.yaml}", "webhook.tls.ca_bundle", "no usable PEM"),
        ("{client_cert: c.pem}", "webhook.tls.client_cert", "client_key"),
        ("{insecure_skip_verify: yes-please}", "webhook.tls.insecure_skip_verify", "true or false"),
        (
            "{insecure_skip_verify: true, ca_bundle: c.pem}",
            "webhook.tls.insecure_skip_verify",
            "on",
        ),
    ],
)
def test_bad_tls_settings_name_the_key(tmp_path: Path, tls: str, key: str, says: str) -> None:
    found = problems(job(tmp_path, f"  tls: {tls}\n"))
    assert key in found, found
    assert says in found[key]


def test_a_key_that_does_not_match_its_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    ca.issue_cert("a").cert_chain_pems[0].write_to_path(str(tmp_path / "a.pem"))
    ca.issue_cert("b").private_key_pem.write_to_path(str(tmp_path / "b.key"))
    found = problems(job(tmp_path, "  tls: {client_cert: a.pem, client_key: b.key}\n"))
    assert "do not load" in found["webhook.tls.client_cert"]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/x",
        "http://0.0.0.0:8080/h",
        "http://[::ffff:169.254.169.254]/h",
    ],
)
def test_a_literal_blocked_address_is_rejected_at_validation(tmp_path: Path, url: str) -> None:
    found = problems(job(tmp_path, url=url))
    assert "always blocked" in found["webhook.url"], found


def test_egress_allow_opens_a_blocked_address(tmp_path: Path) -> None:
    path = job(
        tmp_path, url="http://169.254.169.254/x", extra="egress: {allow: [169.254.0.0/16]}\n"
    )
    assert load_job(path, env={}).egress.blocked("169.254.169.254") is None


def test_public_only_blocks_loopback_and_private_networks(tmp_path: Path) -> None:
    env = {"HOOKCAST_EGRESS": "public-only"}
    found = problems(job(tmp_path, url="http://127.0.0.1:9/h"), env)
    assert "public-only" in found["webhook.url"]
    auth = (
        "authorizations:\n  crm: {url: 'http://10.1.2.3/token', ttl_s: 60}\n"
        "egress: {allow: [127.0.0.1]}\n"
    )
    found = problems(job(tmp_path, url="http://127.0.0.1:9/h", extra=auth), env)
    assert list(found) == ["authorizations.crm.url"]


def test_a_bad_policy_or_network_names_where_it_came_from(tmp_path: Path) -> None:
    found = problems(job(tmp_path), {"HOOKCAST_EGRESS": "everything"})
    assert "public-only" in found["HOOKCAST_EGRESS"]
    found = problems(job(tmp_path, extra="egress: {allow: [10.20.0.1/16]}\n"))
    assert "egress.allow[0]" in next(iter(found.values()))


def test_replay_to_a_blocked_url_is_refused(tmp_path: Path) -> None:
    loaded = load_job(job(tmp_path), env={})
    with pytest.raises(JobError, match="--url"):
        compile_job(loaded, url="http://169.254.169.254/")


def test_credentials_in_the_url_are_refused(tmp_path: Path) -> None:
    found = problems(job(tmp_path, url="https://user:hunter2@hooks.example.com/in"))
    assert "header" in found["webhook.url"] and "hunter2" not in found["webhook.url"]


def test_submit_checks_a_signed_job_without_the_secret_or_the_nodes_policy(
    tmp_path: Path,
) -> None:
    from hookcast.cluster.submit import prepare

    path = job(
        tmp_path, '  signing: {secret: "${SIGN}"}\n', extra="egress: {allow: [10.0.0.0/8]}\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    name, written = prepare(path, None, out)
    assert name == "signed" and "${SIGN}" in written.read_text()
    with pytest.raises(JobFileError):  # a bad literal is still caught before submitting
        prepare(job(tmp_path, "  signing: {secret: whsec_short}\n"), None, out)
