"""Job files a probe threw at hookcast: alias bombs, duplicated keys, control characters and
credentials in URLs and headers. Each is rejected at validation, naming the file or key."""

from __future__ import annotations

import resource
import textwrap
import time
from pathlib import Path

import pytest

from hookcast.actors.errors import JobError, JobFileError
from hookcast.cluster.job import load_job

MINIMAL = """\
name: minimal
webhook: {url: "https://hooks.example.com/in"}
audience: {source: data/contacts.parquet}
"""


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rejected(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        load_job(write(tmp_path, text), env=env or {})
    return info.value


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return MINIMAL + "payload:\n  custom:\n" + "".join(f"    {line}\n" for line in lines)


# --- YAML ---------------------------------------------------------------------------------


def test_alias_bomb_is_rejected_fast_with_bounded_memory_naming_the_file(tmp_path):
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    error = rejected(tmp_path, billion_laughs())
    cpu_s = time.process_time() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb) / 1024
    assert str(error).startswith(f"{tmp_path / 'job.yaml'} expands to more than 100,000 values")
    assert "YAML aliases" in str(error)
    assert cpu_s < 0.5
    assert grown_mb < 50


def test_small_anchors_and_aliases_still_work(tmp_path):
    text = MINIMAL + textwrap.dedent("""\
        payload:
          custom: {a: &shared {x: "1", y: "2"}, b: *shared, c: [*shared, *shared]}
        """)
    job = load_job(write(tmp_path, text), env={})
    assert job.spec.payload.custom == {
        "a": {"x": "1", "y": "2"},
        "b": {"x": "1", "y": "2"},
        "c": [{"x": "1", "y": "2"}, {"x": "1", "y": "2"}],
    }


def test_duplicate_top_level_key_is_rejected_with_both_lines(tmp_path):
    error = rejected(tmp_path, MINIMAL + "name: again\n")
    assert "- name is given twice, at line 1 and at line 4: keep one of them" in str(error)
    assert error.problems[0][0] == "name"


def test_duplicated_webhook_url_is_rejected_naming_the_key_path(tmp_path):
    text = """\
        name: dup
        webhook:
          url: https://first.example.com/in
          url: https://second.example.com/in
        audience: {source: a.parquet}
        """
    error = rejected(tmp_path, text)
    assert str(error).startswith(f"{tmp_path / 'job.yaml'} repeats a key:\n")
    assert "- webhook.url is given twice, at line 3 and at line 4" in str(error)
    assert error.problems == (("webhook.url", str(error).split("\n- ")[1]),)


def test_duplicate_key_in_an_auth_file_is_rejected_naming_that_file(tmp_path):
    auth = write(
        tmp_path,
        """\
        authorizations:
          crm: {url: "https://a.example.com/t", ttl_s: 60}
          crm: {url: "https://b.example.com/t", ttl_s: 60}
        """,
        "auth.yaml",
    )
    with pytest.raises(JobFileError) as info:
        load_job(write(tmp_path, MINIMAL), env={}, auth_file=auth)
    assert str(info.value).startswith(f"{auth} repeats a key:")
    assert "- authorizations.crm is given twice, at line 2 and at line 3" in str(info.value)


def test_recursive_alias_is_rejected(tmp_path):
    error = rejected(tmp_path, MINIMAL + "payload: {custom: &loop {self: *loop}}\n")
    assert "refers to a node that contains it" in str(error)


# --- URLs and headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "found"),
    [
        (
            MINIMAL.replace("/in", "/in\\r\\nX-Injected: 1"),
            "webhook.url",
            "a carriage return (CR) at position 29",
        ),
        (
            MINIMAL + 'authorizations: {crm: {url: "https://a.example.com/t\\n", ttl_s: 60}}\n',
            "authorizations.crm.url",
            "a line feed (LF)",
        ),
        (
            MINIMAL.replace("}", ', headers: {X-Key: "a\\u0000b"}}', 1),
            "webhook.headers",
            "the value of X-Key holds a NUL",
        ),
        (
            MINIMAL.replace("}", ', query: {campaign: "x\\u007f"}}', 1),
            "webhook.query",
            "the value of campaign holds the control character U+007F",
        ),
        (
            MINIMAL
            + "authorizations: {crm: {url: 'https://a/t', headers: {X: \"\\tb\"}, ttl_s: 1}}\n",
            "authorizations.crm.headers",
            "the value of X holds the control character U+0009",
        ),
    ],
)
def test_control_characters_are_rejected_naming_the_key(tmp_path, text, key, found):
    error = rejected(tmp_path, text)
    assert error.problems[0][0] == key
    assert found in str(error)
    assert "which cannot be sent in a URL or a header" in str(error)


def test_control_character_from_an_env_var_is_rejected_without_showing_the_value(tmp_path):
    text = MINIMAL.replace("}", ', headers: {Authorization: "Bearer ${TOKEN}"}}', 1)
    error = rejected(tmp_path, text, env={"TOKEN": "s3cr3t-token\r\nX-Evil: 1"})
    assert "- webhook.headers: the value of Authorization holds a carriage return" in str(error)
    assert "s3cr3t" not in str(error) and "X-Evil" not in str(error)


@pytest.mark.parametrize("name", ["X Key", "X-Key:", "Ключ", ""])
def test_header_names_must_be_http_tokens(tmp_path, name):
    text = MINIMAL.replace("}", f', headers: {{"{name}": "v"}}}}', 1)
    error = rejected(tmp_path, text)
    assert error.problems[0][0] == "webhook.headers"
    assert "is not a valid HTTP header name" in str(error)


@pytest.mark.parametrize("prefix", ["webhook", "authorization"])
def test_credentials_in_a_url_are_rejected_and_never_shown(tmp_path, prefix):
    url = "https://user:pa55word@hooks.example.com/in"
    if prefix == "webhook":
        text, key = MINIMAL.replace("https://hooks.example.com/in", url), "webhook.url"
    else:
        text = MINIMAL + f'authorizations: {{crm: {{url: "{url}", ttl_s: 60}}}}\n'
        key = "authorizations.crm.url"
    error = rejected(tmp_path, text)
    assert error.problems[0][0] == key
    assert '"https://***@hooks.example.com/in" holds credentials (user:password@)' in str(error)
    assert "put credentials in a header, like headers: {Authorization: ...}" in str(error)
    assert "pa55word" not in str(error)


def test_every_bullet_is_one_problem_with_its_key(tmp_path):
    text = MINIMAL.replace("}", ", timeout_s: 0, method: GET}", 1) + "batch_size: 0\n"
    error = rejected(tmp_path, text)
    assert [key for key, _ in error.problems] == [
        "webhook.method",
        "webhook.timeout_s",
        "batch_size",
    ]
    assert str(error).splitlines()[1:] == [f"- {message}" for _, message in error.problems]


def test_undefined_wildcards_are_one_problem_each(tmp_path):
    text = MINIMAL.replace("}", ', headers: {A: "#{auth.crm.t}"}, query: {b: "#{auth.erp.t}"}}', 1)
    error = rejected(tmp_path, text)
    assert [key for key, _ in error.problems] == ["webhook.headers.A", "webhook.query.b"]
    assert '- webhook.query.b: #{auth.erp.t} refers to authorization "erp"' in str(error)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:secret@staging.example.com/hook", "holds credentials"),
        ("ftp://staging.example.com/hook", "only http and https"),
        ("https://staging.example.com/ho\r\nok", "carriage return (CR)"),
    ],
)
def test_a_replay_url_is_checked_as_the_job_url_is(write_job, url: str, expected: str) -> None:
    from hookcast.cluster.compile import compile_job

    job = load_job(write_job("http://127.0.0.1:9/hook", "contacts.parquet"))
    with pytest.raises(JobError) as caught:
        compile_job(job, url=url)
    assert str(caught.value).startswith("--url ") and expected in str(caught.value)
    assert caught.value.problems[0][0] == "--url"
    assert "secret" not in str(caught.value)
