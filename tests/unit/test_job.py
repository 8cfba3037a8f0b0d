from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hookcast.actors.errors import JobFileError, MissingEnvError
from hookcast.cluster.job import JobSpec, LoadedJob, load_job

EXAMPLE = """\
name: double11-coupons
webhook:
  url: https://hooks.example.com/coupons
  method: POST
  format: json
  headers:
    Authorization: "Bearer #{auth.crm.access_token}"
  query: {}
  timeout_s: 10
payload:
  contact: true
  identities: [wechat.openId, wechat.unionId]
  custom: {a1: "1", a2: "2"}
audience:
  source: data/contacts.parquet
  where: "gender = 'male' AND props.testNum > 100"
batch_size: 500
trigger:
  type: recurring
  cron: "0 9 * * 1"
  timezone: Asia/Shanghai
rate_limit:
  requests_per_second: 20
  max_in_flight: 8
retry:
  max_attempts: 6
authorizations:
  crm:
    url: https://auth.example.com/oauth/token
    method: POST
    form: {grant_type: client_credentials, client_id: hookcast, client_secret: "${CRM_SECRET}"}
    ttl_s: 3600
"""

MINIMAL = """\
name: minimal
webhook: {url: "https://hooks.example.com/in"}
audience: {source: data/contacts.parquet}
"""

ENV = {"CRM_SECRET": "s3cr3t-value"}


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> LoadedJob:
    return load_job(write(tmp_path, text), env=ENV if env is None else env)


def rejection(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(JobFileError) as info:
        load_text(tmp_path, text, env)
    return str(info.value)


def with_lines(*lines: str) -> str:
    """MINIMAL with extra top-level lines, or a replaced one when it starts with a known key."""
    base = MINIMAL.splitlines()
    for line in lines:
        key = line.split(":", 1)[0]
        base = [b for b in base if not b.startswith(f"{key}:")]
        base.append(line)
    return "\n".join(base) + "\n"


# --- a valid job -------------------------------------------------------------------------


def test_spec_example_loads(tmp_path):
    job = load_text(tmp_path, EXAMPLE)
    spec = job.spec
    assert isinstance(spec, JobSpec)
    assert spec.name == "double11-coupons"
    assert spec.webhook.url == "https://hooks.example.com/coupons"
    assert spec.webhook.headers == {"Authorization": "Bearer #{auth.crm.access_token}"}
    assert spec.payload.identities == ("wechat.openId", "wechat.unionId")
    assert spec.payload.custom == {"a1": "1", "a2": "2"}
    assert spec.trigger.type == "recurring"
    assert spec.trigger.timezone == "Asia/Shanghai"
    assert spec.rate_limit.requests_per_second == 20
    assert spec.authorizations["crm"].form == {
        "grant_type": "client_credentials",
        "client_id": "hookcast",
        "client_secret": "s3cr3t-value",
    }
    assert job.path == (tmp_path / "job.yaml").resolve()


def test_minimal_job_gets_defaults(tmp_path):
    spec = load_text(tmp_path, MINIMAL).spec
    assert spec.webhook.method == "POST"
    assert spec.webhook.format == "json"
    assert spec.webhook.timeout_s == 10
    assert spec.batch_size == 500
    assert spec.payload.contact is True
    assert spec.payload.identities == ()
    assert spec.payload.custom is None
    assert spec.trigger.type == "immediate"
    assert spec.trigger.timezone == "UTC"
    assert spec.rate_limit.max_in_flight == 8
    assert spec.retry.max_attempts == 6
    assert spec.authorizations == {}


def test_lowercase_post_is_normalised(tmp_path):
    text = MINIMAL.replace(
        '{url: "https://hooks.example.com/in"}', "{url: http://h/x, method: post}"
    )
    assert load_text(tmp_path, text).spec.webhook.method == "POST"


def test_null_identities_mean_none(tmp_path):
    spec = load_text(tmp_path, with_lines("payload: {identities: null}")).spec
    assert spec.payload.identities == ()


def test_unquoted_yaml_datetime_is_kept_as_text(tmp_path):
    text = with_lines("trigger: {type: once, at: 2026-12-01T09:00:00+08:00}")
    assert load_text(tmp_path, text).spec.trigger.at == "2026-12-01T09:00:00+08:00"


def test_authorization_json_body_is_read_from_json_key(tmp_path):
    text = with_lines("authorizations: {crm: {url: 'https://a/t', json: {user: u}}}")
    assert load_text(tmp_path, text).spec.authorizations["crm"].json_body == {"user": "u"}


def test_job_spec_is_frozen(tmp_path):
    spec = load_text(tmp_path, MINIMAL).spec
    with pytest.raises(ValueError, match="frozen"):
        spec.batch_size = 1  # type: ignore[misc]


# --- rejected jobs -----------------------------------------------------------------------


def test_unknown_top_level_key_is_rejected_with_suggestion(tmp_path):
    message = rejection(tmp_path, with_lines("retries: 3"))
    assert "- retries: unknown key; allowed here: name, webhook, payload, audience," in message
    assert "did you mean retry?" in message


def test_unknown_nested_key_is_rejected_with_allowed_keys(tmp_path):
    text = MINIMAL.replace('{url: "https://hooks.example.com/in"}', "{url: http://h/x, retries: 3}")
    message = rejection(tmp_path, text)
    assert (
        "- webhook.retries: unknown key; allowed here: url, method, format, headers, query, "
        "timeout_s" in message
    )


def test_missing_webhook_url_says_what_it_is_for(tmp_path):
    text = MINIMAL.replace('{url: "https://hooks.example.com/in"}', "{timeout_s: 5}")
    message = rejection(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'job.yaml'} is not a valid job:\n")
    assert "- webhook.url: field required: the URL the batches are POSTed to." in message


def test_ftp_url_is_rejected(tmp_path):
    text = MINIMAL.replace("https://hooks.example.com/in", "ftp://files.example.com/in")
    message = rejection(tmp_path, text)
    assert '- webhook.url: "ftp://files.example.com/in" is not supported' in message
    assert "only http and https URLs are supported" in message


def test_url_without_host_is_rejected(tmp_path):
    message = rejection(tmp_path, MINIMAL.replace("https://hooks.example.com/in", "https://"))
    assert "- webhook.url:" in message
    assert "only http and https URLs are supported" in message


def test_method_get_is_rejected(tmp_path):
    text = MINIMAL.replace(
        '{url: "https://hooks.example.com/in"}', "{url: http://h/x, method: GET}"
    )
    assert "- webhook.method GET is not supported: only POST is." in rejection(tmp_path, text)


def test_format_xml_is_rejected(tmp_path):
    text = MINIMAL.replace(
        '{url: "https://hooks.example.com/in"}', "{url: http://h/x, format: xml}"
    )
    assert "- webhook.format xml is not supported: only json is." in rejection(tmp_path, text)


def test_batch_size_zero_is_rejected(tmp_path):
    message = rejection(tmp_path, with_lines("batch_size: 0"))
    assert "- batch_size: 0 is out of range: a request carries 1 to 500 contacts." in message


def test_batch_size_above_500_is_rejected(tmp_path):
    message = rejection(tmp_path, with_lines("batch_size: 501"))
    assert "- batch_size: 501 is out of range: a request carries 1 to 500 contacts." in message


def test_batch_size_as_string_is_rejected(tmp_path):
    message = rejection(tmp_path, with_lines('batch_size: "500"'))
    assert '- batch_size: "500" is a string: give a whole number from 1 to 500 (no quotes).' in (
        message
    )


def test_batch_size_with_fraction_is_rejected(tmp_path):
    message = rejection(tmp_path, with_lines("batch_size: 2.5"))
    assert "- batch_size: 2.5 is not a whole number: give 1 to 500." in message


def test_batch_size_true_is_rejected(tmp_path):
    assert "- batch_size: true is not a whole number" in rejection(
        tmp_path, with_lines("batch_size: true")
    )


def test_where_and_ids_together_are_rejected(tmp_path):
    text = with_lines("audience: {source: c.parquet, where: 'x > 1', ids: ids.parquet}")
    assert (
        "- audience.where and audience.ids are alternatives: give one (a dynamic segment) or "
        "the other (a static list of ids), not both." in rejection(tmp_path, text)
    )


def test_empty_yaml_is_rejected(tmp_path):
    message = rejection(tmp_path, "# nothing but a comment\n")
    assert message == (
        f"{tmp_path / 'job.yaml'} is empty: a job file is a YAML mapping with at least name, "
        "webhook.url and audience.source."
    )


def test_yaml_list_is_rejected(tmp_path):
    message = rejection(tmp_path, "- name: a\n- name: b\n")
    assert (
        message == f"{tmp_path / 'job.yaml'} must be a YAML mapping of keys to values, got a list."
    )


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    message = rejection(tmp_path, "name: a\nwebhook:\n  url: http://h/x\n   bad: : indent\n")
    assert message.startswith(f"{tmp_path / 'job.yaml'} is not valid YAML at line 4, column")


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(JobFileError, match=r"job file .*nope\.yaml does not exist"):
        load_job(tmp_path / "nope.yaml", env={})


def test_missing_env_names_variable_and_key(tmp_path):
    text = MINIMAL.replace(
        '{url: "https://hooks.example.com/in"}',
        '{url: http://h/x, headers: {Authorization: "Bearer ${HOOK_TOKEN}"}}',
    )
    with pytest.raises(MissingEnvError) as info:
        load_text(tmp_path, text, env={})
    assert info.value.name == "HOOK_TOKEN"
    assert info.value.key == "webhook.headers.Authorization"
    assert "webhook.headers.Authorization refers to ${HOOK_TOKEN}" in str(info.value)


def test_missing_env_in_a_list_names_the_index(tmp_path):
    with pytest.raises(MissingEnvError) as info:
        load_text(tmp_path, with_lines("payload: {identities: [a, '${IDT}']}"), env={})
    assert info.value.key == "payload.identities[1]"


def test_once_without_at_is_rejected(tmp_path):
    message = rejection(tmp_path, with_lines("trigger: {type: once}"))
    assert "- trigger.type once needs trigger.at" in message


def test_recurring_without_cron_or_every_is_rejected(tmp_path):
    message = rejection(tmp_path, with_lines("trigger: {type: recurring}"))
    assert "- trigger.type recurring needs trigger.cron or trigger.every" in message


def test_bad_timezone_is_rejected(tmp_path):
    message = rejection(tmp_path, with_lines("trigger: {timezone: Mars/Olympus}"))
    assert '- trigger.timezone "Mars/Olympus" is not an IANA time zone name' in message


def test_bad_name_is_rejected(tmp_path):
    message = rejection(tmp_path, with_lines("name: Double 11"))
    assert '- name: "Double 11" is not allowed: use 1 to 63 lowercase letters' in message


def test_every_error_gets_its_own_bullet(tmp_path):
    message = rejection(tmp_path, with_lines("batch_size: 0", "retry: {max_attempts: 0}"))
    assert "- batch_size: 0 is out of range" in message
    assert "- retry.max_attempts: 0 is out of range: give a whole number from 1 to 100." in message


def test_backoff_cap_below_base_shows_both_values(tmp_path):
    message = rejection(tmp_path, with_lines("retry: {backoff_base_s: 5, backoff_max_s: 1}"))
    assert "- retry.backoff_max_s 1 is below retry.backoff_base_s 5" in message


def test_rejection_never_shows_a_secret(tmp_path):
    text = MINIMAL.replace("https://hooks.example.com/in", "ftp://h/${HOOK_TOKEN}")
    message = rejection(tmp_path, text, env={"HOOK_TOKEN": "tok-abcdef"})
    assert "tok-abcdef" not in message
    assert '"ftp://h/***" is not supported' in message


def test_rejection_hides_values_of_secret_looking_keys(tmp_path):
    text = with_lines("authorizations: {crm: {url: 'https://a/t', form: {client_secret: 12345}}}")
    message = rejection(tmp_path, text)
    assert "- authorizations.crm.form.client_secret: the value is not text" in message
    assert "12345" not in message


# --- environment expansion ---------------------------------------------------------------


def test_env_is_expanded_in_nested_dicts_and_lists_with_surrounding_text(tmp_path):
    text = """\
        name: envjob
        webhook:
          url: "https://${HOST}/in"
          headers: {X-Key: "k-${KEY}-end"}
        payload:
          identities: ["${IDT}", other]
          custom: {deep: {list: ["a${KEY}b"]}}
        audience: {source: data.parquet}
    """
    env = {"HOST": "hooks.example.com", "KEY": "key-1234", "IDT": "wechat.openId"}
    spec = load_text(tmp_path, text, env=env).spec
    assert spec.webhook.url == "https://hooks.example.com/in"
    assert spec.webhook.headers == {"X-Key": "k-key-1234-end"}
    assert spec.payload.identities == ("wechat.openId", "other")
    assert spec.payload.custom == {"deep": {"list": ["akey-1234b"]}}


def test_double_dollar_escapes_a_reference(tmp_path):
    text = with_lines("payload: {custom: {literal: 'cost $${PRICE}'}}")
    assert load_text(tmp_path, text, env={}).spec.payload.custom == {"literal": "cost ${PRICE}"}


def test_auth_wildcards_are_left_untouched(tmp_path):
    spec = load_text(tmp_path, EXAMPLE).spec
    assert spec.webhook.headers["Authorization"] == "Bearer #{auth.crm.access_token}"


def test_keys_are_not_expanded(tmp_path):
    text = with_lines("payload: {custom: {'${K}': v}}")
    assert load_text(tmp_path, text, env={}).spec.payload.custom == {"${K}": "v"}


def test_substituted_values_are_collected_as_secrets(tmp_path):
    text = with_lines("payload: {custom: {a: '${ONE}', b: ['${TWO}', '${ONE}']}}")
    job = load_text(tmp_path, text, env={"ONE": "first-secret", "TWO": "second-secret"})
    assert job.secrets == frozenset({"first-secret", "second-secret"})


def test_raw_text_is_the_file_unexpanded(tmp_path):
    job = load_text(tmp_path, EXAMPLE)
    assert job.raw_text == EXAMPLE
    assert "${CRM_SECRET}" in job.raw_text
    assert "s3cr3t-value" not in job.raw_text
    assert job.secrets == frozenset({"s3cr3t-value"})


def test_environ_is_the_default_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKCAST_TEST_HOST", "from-environ.example.com")
    text = MINIMAL.replace("hooks.example.com", "${HOOKCAST_TEST_HOST}")
    job = load_job(write(tmp_path, text))
    assert job.spec.webhook.url == "https://from-environ.example.com/in"


# --- audience paths ----------------------------------------------------------------------


def test_source_is_resolved_relative_to_the_job_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, MINIMAL, name="jobs/job.yaml")
    job = load_job(Path("jobs/job.yaml"), env={})
    assert job.path == path.resolve()
    assert job.source == str(tmp_path.resolve() / "jobs" / "data" / "contacts.parquet")
    assert job.ids_path is None


def test_source_glob_and_ids_are_resolved_keeping_glob_characters(tmp_path):
    text = with_lines("audience: {source: '../data/part-*.parquet', ids: vip.parquet}")
    job = load_job(write(tmp_path, text, name="jobs/job.yaml"), env={})
    assert job.source == str(tmp_path.resolve() / "data" / "part-*.parquet")
    assert job.ids_path == str(tmp_path.resolve() / "jobs" / "vip.parquet")


def test_remote_source_is_untouched(tmp_path):
    job = load_text(tmp_path, with_lines("audience: {source: 's3://bucket/contacts/*.parquet'}"))
    assert job.source == "s3://bucket/contacts/*.parquet"


def test_home_in_source_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    job = load_text(tmp_path, with_lines("audience: {source: ~/contacts.parquet}"))
    assert job.source == str(tmp_path / "home" / "contacts.parquet")
