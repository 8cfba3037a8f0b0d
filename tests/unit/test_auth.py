"""Authorizations: wildcards, token answers, fetching from a real local endpoint, the cache."""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hookcast.actors.auth import (
    AuthorizationConfig,
    Template,
    Token,
    TokenCache,
    TokenError,
    TokenExpiryError,
    TokenRequestError,
    TokenResponseError,
    TokenUnavailableError,
    Wildcard,
    fetch_token,
    fetch_token_async,
    find_wildcard_errors,
    parse_template,
    read_token,
    redact_token,
)
from hookcast.actors.errors import HookcastError, JobFileError
from hookcast.cluster.compile import authorization_config as compiled_authorization
from hookcast.cluster.job import AuthorizationSpec, load_job_text


def authorization_config(auth_id: str, definition: Any) -> AuthorizationConfig:
    """The config of a definition checked by the job model, as a run compiles it."""
    if not isinstance(definition, AuthorizationSpec):
        definition = AuthorizationSpec.model_validate(definition)
    return compiled_authorization(auth_id, definition)


TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2VuLXBheWxvYWQ.sig-0123456789"
CLIENT_SECRET = "cs-very-secret-4711"
APP_SECRET = "app-secret-in-url-9876"
SECRETS = (TOKEN, CLIENT_SECRET, APP_SECRET, "hunter2-env-value")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret[:4]}… leaked into: {text}"


def raised(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc_info.value) + repr(exc_info.value)
    assert_no_secret(text)
    return str(exc_info.value)


# --- templates --------------------------------------------------------------------------------


def test_text_around_a_wildcard_is_kept():
    template = parse_template("Bearer #{auth.crm.access_token}", "webhook.headers.Authorization")
    assert template.references == {("crm", "access_token")}
    assert template.render({("crm", "access_token"): "abc"}) == "Bearer abc"


def test_two_wildcards_in_one_value_are_both_filled():
    template = parse_template("#{auth.crm.a}:#{auth.erp.data.b} (x)", "webhook.query.sig")
    assert template.references == {("crm", "a"), ("erp", "data.b")}
    assert template.render({("crm", "a"): "1", ("erp", "data.b"): "2"}) == "1:2 (x)"


def test_dotted_token_keys_are_one_key_path():
    template = parse_template("#{auth.ak.result.credentials.accessKey}", "w")
    assert template.parts == (Wildcard("ak", "result.credentials.accessKey"),)


def test_value_without_wildcards_is_static_and_unchanged():
    template = parse_template("application/json; #{not auth}", "w")
    assert template.is_static
    assert template.references == set()
    assert template.render({}) == "application/json; #{not auth}"
    assert parse_template("", "w").render({}) == ""


def test_template_repr_shows_references_not_text():
    template = parse_template("Basic hunter2-env-value #{auth.crm.t}", "webhook.headers.X")
    assert repr(template) == "Template(webhook.headers.X: #{auth.crm.t})"


def test_render_without_the_token_fails_closed():
    template = parse_template("Bearer #{auth.crm.access_token}", "webhook.headers.Authorization")
    with pytest.raises(TokenError) as exc_info:
        template.render({("crm", "other"): TOKEN})
    assert raised(exc_info).startswith(
        'authorization "crm": webhook.headers.Authorization needs #{auth.crm.access_token}'
    )


def test_malformed_wildcard_message_names_the_key_and_shows_the_form():
    with pytest.raises(JobFileError) as exc_info:
        parse_template("Bearer #{auth.crm}", "webhook.headers.Authorization")
    assert str(exc_info.value) == (
        "webhook.headers.Authorization: #{auth.crm} is not a wildcard: write "
        "#{auth.<authorization id>.<token key>}, like #{auth.crm.access_token}"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("#{auth.crm}", "#{auth.crm}"),
        ("#{auth..x}", "#{auth..x}"),
        ("#{auth.crm.}", "#{auth.crm.}"),
        ("#{auth.}", "#{auth.}"),
        ("#{auth.crm.a..b}", "#{auth.crm.a..b}"),
        ("#{auth.crm.token.}", "#{auth.crm.token.}"),
        ("Bearer #{auth.crm.token", "#{auth.crm.token"),
        ("#{auth.crm. token}", "#{auth.crm."),
        ("#{auth.crm.{x}}", "#{auth.crm.{x}"),
        ("ok #{auth.crm.t} then #{auth.erp}", "#{auth.erp}"),
    ],
)
def test_every_malformed_wildcard_is_rejected(value: str, shown: str):
    with pytest.raises(JobFileError) as exc_info:
        parse_template(value, "webhook.query.token")
    assert str(exc_info.value).startswith(f"webhook.query.token: {shown} is not a wildcard")


def test_a_long_malformed_wildcard_is_cut_short():
    errors = find_wildcard_errors({"X": "#{auth." + "a" * 200}, {}, ["crm"])
    assert len(errors) == 1
    assert "a" * 60 not in errors[0]
    assert "… is not a wildcard" in errors[0]


# --- validating a job's wildcards ------------------------------------------------------------


def test_undefined_authorization_is_named_with_the_defined_ones():
    errors = find_wildcard_errors(
        {"Authorization": "Bearer #{auth.crm2.access_token}"}, {}, ["crm", "erp"]
    )
    assert errors == [
        "webhook.headers.Authorization: #{auth.crm2.access_token} refers to authorization "
        '"crm2", which is not defined (defined: crm, erp); did you mean "crm"?'
    ]


def test_undefined_authorization_with_none_defined_says_where_to_add_it():
    errors = find_wildcard_errors({}, {"token": "#{auth.crm.t}"}, [])
    assert errors == [
        'webhook.query.token: #{auth.crm.t} refers to authorization "crm", which is not '
        "defined (no authorizations are defined): add it under authorizations.crm"
    ]


def test_every_problem_is_listed_headers_first():
    errors = find_wildcard_errors(
        {"A": "#{auth.erp}", "B": "#{auth.crm.t} #{auth.nope.t}"},
        {"q": "#{auth..x}"},
        ["crm"],
    )
    assert [e.split(":")[0] for e in errors] == [
        "webhook.headers.A",
        "webhook.headers.B",
        "webhook.query.q",
    ]
    assert errors[0].endswith("like #{auth.crm.access_token}")


def test_sound_wildcards_give_no_errors():
    headers = {"Authorization": "Bearer #{auth.crm.access_token}", "X-Plain": "1"}
    assert find_wildcard_errors(headers, {"sig": "#{auth.crm.data.sig}"}, ["crm"]) == []


def test_wildcard_errors_never_show_the_rest_of_the_value():
    errors = find_wildcard_errors({"X": "Basic hunter2-env-value #{auth.crm}"}, {}, ["crm"])
    assert len(errors) == 1
    assert_no_secret(errors[0])


# --- authorization configs -------------------------------------------------------------------


def crm_definition(url: str = "https://auth.example.com/oauth/token", **changes: Any) -> dict:
    definition: dict[str, Any] = {
        "url": url,
        "method": "POST",
        "headers": {"X-Client": "hookcast"},
        "form": {"grant_type": "client_credentials", "client_secret": CLIENT_SECRET},
        "expires_in_key": "expires_in",
    }
    definition.update(changes)
    return definition


def test_config_from_the_job_model_and_from_a_dict_agree():
    spec = AuthorizationSpec.model_validate(crm_definition())
    from_model = authorization_config("crm", spec)
    from_dict = authorization_config("crm", crm_definition())
    assert from_model == from_dict
    assert from_model.form == (
        ("grant_type", "client_credentials"),
        ("client_secret", CLIENT_SECRET),
    )


def test_json_body_is_read_from_the_json_key():
    spec = AuthorizationSpec.model_validate({"url": "https://a/t", "json": {"user": "u"}})
    assert authorization_config("crm", spec).json_body == {"user": "u"}
    assert authorization_config("crm", {"url": "https://a/t", "json": {"u": 1}}).json_body == {
        "u": 1
    }


def test_fingerprint_is_stable_changes_with_any_edit_and_hides_secrets():
    config = authorization_config("crm", crm_definition())
    assert config.fingerprint == authorization_config("crm", crm_definition()).fingerprint
    assert len(config.fingerprint) == 64
    edited = crm_definition(form={"grant_type": "client_credentials", "client_secret": "new"})
    assert authorization_config("crm", edited).fingerprint != config.fingerprint
    assert authorization_config("crm", crm_definition(ttl_s=60)).fingerprint != (config.fingerprint)
    assert authorization_config("erp", crm_definition()).fingerprint != config.fingerprint
    assert_no_secret(config.fingerprint + repr(config))


def test_config_repr_hides_the_url_query_and_the_body():
    config = authorization_config(
        "wx", {"url": f"https://api.example.com/token?secret={APP_SECRET}", "method": "GET"}
    )
    assert repr(config).startswith(
        "AuthorizationConfig(id='wx', GET https://api.example.com/token, fingerprint="
    )
    assert APP_SECRET in config.secret_values


def test_configs_survive_pickling():
    config = authorization_config("crm", crm_definition(json=None))
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    ("auth_id", "definition", "message"),
    [
        (
            "crm",
            {"url": "ftp://auth.example.com/token"},
            '- authorizations.crm.url: "ftp://auth.example.com/token" is not supported: only '
            "http and https URLs are supported",
        ),
        (
            "crm",
            {"url": "https:///token"},
            '- authorizations.crm.url: "https:///token" has no host: only http and https URLs',
        ),
        (
            "crm",
            {"url": "https://a/t", "method": "PUT"},
            "- authorizations.crm.method: PUT is not supported: give GET or POST.",
        ),
        (
            "crm",
            {"url": "https://a/t", "method": "GET", "form": {"a": "b"}},
            "- authorizations.crm: method GET sends no body",
        ),
        (
            "crm",
            {"url": "https://a/t", "form": {"a": "b"}, "json": {"a": "b"}},
            "- authorizations.crm: form and json are alternatives",
        ),
        (
            "crm",
            {"url": "https://a/t", "ttl_s": 0},
            "- authorizations.crm.ttl_s: 0 is out of range",
        ),
        (
            "crm",
            {"url": "https://a/t", "expires_in_key": "a..b"},
            '- authorizations.crm.expires_in_key: "a..b" is not a key path',
        ),
        (
            "my.crm",
            {"url": "https://a/t"},
            '- authorizations: the id "my.crm" cannot be named in a wildcard',
        ),
        ("crm", {"url": "https://a/t", "token": "x"}, "- authorizations.crm.token: unknown key"),
    ],
)
def test_bad_definitions_are_rejected_naming_the_key(auth_id, definition, message, tmp_path):
    job = {
        "name": "j",
        "webhook": {"url": "https://hooks.example.com/in"},
        "audience": {"source": "a.parquet"},
        "authorizations": {auth_id: definition},
    }
    with pytest.raises(JobFileError) as exc_info:
        load_job_text(json.dumps(job), tmp_path / "job.yaml", env={})
    assert message in str(exc_info.value)
    assert exc_info.value.problems[0][0].startswith("authorizations")


# --- reading the endpoint's answer ------------------------------------------------------------


def read(answer: Any, keys: set[str] | None = None, **options: Any) -> Token:
    options.setdefault("expires_in_key", "expires_in")
    options.setdefault("ttl_s", None)
    return read_token("crm", answer, keys or {"access_token"}, now=1000.0, **options)


def test_token_and_lifetime_are_read():
    token = read({"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"})
    assert token.values == {"access_token": TOKEN}
    assert (token.fetched_at, token.expires_at, token.lifetime_s) == (1000.0, 4600.0, 3600.0)
    assert token.version == 0
    assert token.wildcard_values() == {("crm", "access_token"): TOKEN}
    assert (token.refresh_at, token.is_fresh(4539.9), token.is_fresh(4540.0)) == (
        4540.0,
        True,
        False,
    )
    assert pickle.loads(pickle.dumps(token)) == token
    assert_no_secret(repr(token))


def test_dotted_keys_reach_into_nested_answers_and_lists():
    answer = {"code": 0, "data": {"token": TOKEN, "ttl": 60, "keys": ["k0", "k1"]}}
    token = read(answer, {"data.token", "data.keys.1"}, expires_in_key="data.ttl")
    assert token.values == {"data.token": TOKEN, "data.keys.1": "k1"}
    assert token.expires_at == 1060.0


def test_a_numeric_string_lifetime_is_accepted():
    assert read({"access_token": TOKEN, "expires_in": " 7200 "}).lifetime_s == 7200.0


def test_ttl_s_caps_expires_in_and_stands_alone_without_it():
    assert read({"access_token": TOKEN, "expires_in": 7200}, ttl_s=600).lifetime_s == 600
    assert read({"access_token": TOKEN}, expires_in_key=None, ttl_s=600).lifetime_s == 600


def test_without_ttl_or_expires_in_a_token_lasts_until_a_401():
    token = read({"access_token": TOKEN}, expires_in_key=None)
    assert math.isinf(token.expires_at)
    assert token.is_fresh(1e12)


def test_numeric_tokens_are_text():
    assert read({"access_token": 12345678, "expires_in": 60}).values == {"access_token": "12345678"}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([{"access_token": TOKEN}], "answered a JSON list, not a JSON object"),
        (TOKEN, "answered a string, not a JSON object"),
        (None, "answered null, not a JSON object"),
    ],
)
def test_an_answer_that_is_not_an_object_is_refused(answer, message):
    with pytest.raises(TokenResponseError) as exc_info:
        read(answer)
    assert message in raised(exc_info)
    assert not exc_info.value.retryable


def test_a_missing_key_lists_the_keys_that_were_there_never_their_values():
    answer = {"data": {"accessToken": TOKEN, "expires": 60}, "errcode": 0, "msg": CLIENT_SECRET}
    with pytest.raises(TokenResponseError) as exc_info:
        read(answer, {"data.access_token"})
    assert raised(exc_info) == (
        'authorization "crm": the token endpoint\'s answer has no data.access_token '
        "(keys in the answer: data.accessToken, data.expires, errcode, msg; it says errcode=0): "
        "did you mean #{auth.crm.data.accessToken}? fix the token key in the wildcard "
        "#{auth.crm.data.access_token}."
    )
    assert exc_info.value.auth_id == "crm"
    assert not exc_info.value.retryable


def test_a_missing_key_in_an_empty_answer_says_so():
    with pytest.raises(TokenResponseError) as exc_info:
        read({})
    assert "(the answer is an empty object)" in raised(exc_info)


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_an_empty_token_is_refused(empty):
    with pytest.raises(TokenResponseError) as exc_info:
        read({"access_token": empty, "expires_in": 60, "errcode": 40013})
    message = raised(exc_info)
    assert "access_token in the token endpoint's answer is empty" in message
    assert "keys in the answer: access_token, errcode, expires_in; it says errcode=40013" in (
        message
    )


@pytest.mark.parametrize(
    ("value", "kind"), [({"v": TOKEN}, "a JSON object"), ([TOKEN], "a JSON list"), (True, "true")]
)
def test_a_token_that_is_not_text_is_refused(value, kind):
    with pytest.raises(TokenResponseError) as exc_info:
        read({"access_token": value, "expires_in": 60})
    assert f"is {kind}" in raised(exc_info)


def test_a_token_with_a_line_break_is_refused():
    with pytest.raises(TokenResponseError) as exc_info:
        read({"access_token": TOKEN + "\r\nX-Evil: 1", "expires_in": 60})
    assert "line break or control character" in raised(exc_info)


@pytest.mark.parametrize(
    ("expires_in", "message"),
    [
        (None, "has no expires_in, the token's lifetime (keys in the answer: access_token"),
        (0, "expires_in in the token endpoint's answer is 0: a token must live"),
        (-5, "expires_in in the token endpoint's answer is -5: a token must live"),
        ("-1", "is -1: a token must live"),
        ("soon", "is a string that is not a number of seconds"),
        ("", "is a string that is not a number of seconds"),
        ("nan", "is a string that is not a number of seconds"),
        (True, "is true/false that is not a number of seconds"),
        ([60], "is a JSON list that is not a number of seconds"),
    ],
)
def test_a_bad_lifetime_is_refused(expires_in, message):
    answer = {"access_token": TOKEN}
    if expires_in is not None:
        answer["expires_in"] = expires_in
    with pytest.raises(TokenExpiryError) as exc_info:
        read(answer)
    text = raised(exc_info)
    assert text.startswith('authorization "crm": ')
    assert message in text
    assert text.endswith("check the endpoint, or set ttl_s instead of expires_in_key.")
    assert not exc_info.value.retryable


def test_token_errors_survive_pickling():
    error = TokenRequestError("crm", 'authorization "crm": boom', True)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TokenRequestError
    assert isinstance(copy, HookcastError)
    assert (copy.auth_id, copy.message, copy.retryable, str(copy)) == (
        "crm",
        'authorization "crm": boom',
        True,
        'authorization "crm": boom',
    )


def test_redacted_tokens_show_their_start_and_length():
    assert redact_token("eyJh" + "x" * 808) == "eyJh…(812 chars)"
    assert redact_token("short-tok") == "…(9 chars)"


# --- fetching from a real endpoint -----------------------------------------------------------


class TokenEndpoint(BaseHTTPRequestHandler):
    """Answers by path; records (method, path, query, headers, body) of every request."""

    seen: list[tuple[str, str, dict, dict, bytes]]

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.seen.append(  # type: ignore[attr-defined]
            (self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
        )
        good = json.dumps({"access_token": TOKEN, "expires_in": 3600}).encode()
        status, content_type, payload, extra = 200, "application/json", good, {}
        if parts.path == "/500":
            status, payload = 500, b'{"error":"boom"}'
        elif parts.path == "/429":
            status, payload = 429, b'{"error":"slow down"}'
        elif parts.path == "/400":
            status, payload = 400, b'{"error":"invalid_request"}'
        elif parts.path == "/401":
            status, payload = 401, f'{{"error":"bad secret {CLIENT_SECRET}"}}'.encode()
        elif parts.path == "/html":
            content_type, payload = "text/html", b"<html>login</html>"
        elif parts.path == "/bare":
            content_type, payload = "text/plain", TOKEN.encode()
        elif parts.path == "/redirect":
            status, payload = 302, b""
            extra = {"Location": f"https://elsewhere.example.com/t?secret={APP_SECRET}"}
        elif parts.path == "/slow":
            time.sleep(1.0)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def config_for(url: str, **changes: Any) -> AuthorizationConfig:
    return authorization_config("crm", crm_definition(url, **changes))


def test_post_form_fetches_a_token(endpoint):
    base, seen = endpoint
    token = fetch_token(config_for(f"{base}/token"), {"access_token"}, now=50.0)
    assert token.values == {"access_token": TOKEN}
    assert token.expires_at == 3650.0
    method, path, _, headers, body = seen[0]
    assert (method, path) == ("POST", "/token")
    assert headers["X-Client"] == "hookcast"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_secret": [CLIENT_SECRET],
    }


def test_get_sends_the_query_and_no_body(endpoint):
    base, seen = endpoint
    config = authorization_config(
        "wx",
        {
            "url": f"{base}/token?grant_type=client_credential",
            "method": "GET",
            "query": {"appid": "wx1", "secret": APP_SECRET},
        },
    )
    token = fetch_token(config, {"access_token"})
    assert token.values == {"access_token": TOKEN}
    assert math.isinf(token.expires_at)
    method, _, query, _, body = seen[0]
    assert method == "GET"
    assert query == {"grant_type": ["client_credential"], "appid": ["wx1"], "secret": [APP_SECRET]}
    assert body == b""


def test_post_json_sends_the_json_body(endpoint):
    base, seen = endpoint
    config = config_for(f"{base}/token", form=None, json={"user": "u", "pass": CLIENT_SECRET})
    fetch_token(config, {"access_token"})
    _, _, _, headers, body = seen[0]
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"user": "u", "pass": CLIENT_SECRET}


def test_a_given_client_is_used(endpoint):
    base, seen = endpoint
    with httpx.Client() as client:
        for _ in range(3):
            fetch_token(config_for(f"{base}/token"), {"access_token"}, client=client)
    assert len(seen) == 3


def test_the_async_fetch_reads_the_same_token(endpoint):
    base, _ = endpoint

    async def both() -> tuple[Token, Token]:
        own = await fetch_token_async(config_for(f"{base}/token"), {"access_token"}, now=1.0)
        async with httpx.AsyncClient() as client:
            shared = await fetch_token_async(
                config_for(f"{base}/token"), {"access_token"}, client=client, now=1.0
            )
        return own, shared

    own, shared = asyncio.run(both())
    assert own == shared
    assert own.values == {"access_token": TOKEN}


@pytest.mark.parametrize("path", ["/500", "/429"])
def test_a_busy_or_failing_endpoint_is_retryable(endpoint, path):
    base, _ = endpoint
    with pytest.raises(TokenRequestError) as exc_info:
        fetch_token(config_for(f"{base}{path}"), {"access_token"})
    message = raised(exc_info)
    assert message.startswith(f'authorization "crm": the token endpoint {base}{path} answered ')
    assert exc_info.value.retryable


def test_a_400_is_not_retryable_and_shows_the_answer(endpoint):
    base, _ = endpoint
    with pytest.raises(TokenRequestError) as exc_info:
        fetch_token(config_for(f"{base}/400"), {"access_token"})
    assert raised(exc_info) == (
        f'authorization "crm": the token endpoint {base}/400 answered 400 (Bad Request): '
        '{"error":"invalid_request"}; check the authorization\'s URL, method and parameters.'
    )
    assert not exc_info.value.retryable


def test_a_401_that_echoes_the_client_secret_is_redacted(endpoint):
    base, _ = endpoint
    with pytest.raises(TokenRequestError) as exc_info:
        fetch_token(config_for(f"{base}/401"), {"access_token"})
    message = raised(exc_info)
    assert "bad secret ***" in message
    assert "check the authorization's credentials" in message
    assert not exc_info.value.retryable


def test_a_refused_connection_is_retryable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TokenRequestError) as exc_info:
        fetch_token(config_for(f"http://127.0.0.1:{port}/token"), {"access_token"}, timeout_s=2)
    assert f"http://127.0.0.1:{port}/token cannot be reached" in raised(exc_info)
    assert exc_info.value.retryable


def test_a_timeout_is_retryable(endpoint):
    base, _ = endpoint
    with pytest.raises(TokenRequestError) as exc_info:
        fetch_token(config_for(f"{base}/slow"), {"access_token"}, timeout_s=0.2)
    assert "did not answer within 0.2 s" in raised(exc_info)
    assert exc_info.value.retryable


@pytest.mark.parametrize(
    ("path", "content_type"), [("/html", "text/html"), ("/bare", "text/plain")]
)
def test_an_answer_that_is_not_json_is_not_retryable(endpoint, path, content_type):
    base, _ = endpoint
    with pytest.raises(TokenResponseError) as exc_info:
        fetch_token(config_for(f"{base}{path}"), {"access_token"})
    assert f"answered 200 with {content_type}" in raised(exc_info)
    assert "that are not JSON" in str(exc_info.value)
    assert not exc_info.value.retryable


def test_a_redirect_is_not_followed_and_its_query_is_not_shown(endpoint):
    base, seen = endpoint
    with pytest.raises(TokenRequestError) as exc_info:
        fetch_token(config_for(f"{base}/redirect"), {"access_token"})
    assert "use the final URL (https://elsewhere.example.com/t)" in raised(exc_info)
    assert len(seen) == 1
    assert not exc_info.value.retryable


def test_a_missing_key_from_a_real_endpoint_names_the_authorization(endpoint):
    base, _ = endpoint
    with pytest.raises(TokenResponseError) as exc_info:
        fetch_token(config_for(f"{base}/token"), {"data.token"})
    assert "keys in the answer: access_token, expires_in" in raised(exc_info)


# --- the cache --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


class FakeEndpoint:
    """A fetch function: counts calls and concurrency, fails the first ``failures`` times."""

    def __init__(
        self, lifetime_s: float = 3600.0, failures: int = 0, error: TokenError | None = None
    ) -> None:
        self.lifetime_s = lifetime_s
        self.failures = failures
        self.error = error or TokenRequestError("crm", 'authorization "crm": 503', True)
        self.calls = 0
        self.active = 0
        self.most_active = 0
        self.keys_asked: list[frozenset[str]] = []

    async def __call__(
        self, config: AuthorizationConfig, key_paths: frozenset[str], *, now: float
    ) -> Token:
        self.calls += 1
        self.keys_asked.append(key_paths)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            for _ in range(3):  # a fetch takes a few loop turns: room for others to pile in
                await asyncio.sleep(0)
            if self.calls <= self.failures:
                raise self.error
            values = {key: f"{TOKEN}-{self.calls}" for key in key_paths}
            return Token(config.id, values, fetched_at=now, expires_at=now + self.lifetime_s)
        finally:
            self.active -= 1


CRM = authorization_config("crm", crm_definition())
KEYS = {"access_token"}


def make_cache(fake: FakeEndpoint, clock: FakeClock, **options: Any) -> TokenCache:
    return TokenCache(fake, clock=clock, sleep=clock.sleep, **options)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_fifty_concurrent_callers_cause_one_fetch():
    fake, clock = FakeEndpoint(), FakeClock()
    cache = make_cache(fake, clock)

    async def run() -> list[Token]:
        return await asyncio.gather(*(cache.get(CRM, KEYS) for _ in range(50)))

    tokens = asyncio.run(run())
    assert fake.calls == 1
    assert {t.version for t in tokens} == {1}
    assert {t.values["access_token"] for t in tokens} == {f"{TOKEN}-1"}


def test_a_cached_token_is_served_without_fetching():
    fake, clock = FakeEndpoint(), FakeClock()
    cache = make_cache(fake, clock)

    async def run() -> None:
        first = await cache.get(CRM, KEYS)
        clock.t += 3000
        assert await cache.get(CRM, KEYS) is first

    asyncio.run(run())
    assert fake.calls == 1


def test_refresh_starts_ahead_of_expiry_and_callers_do_not_wait():
    fake, clock = FakeEndpoint(lifetime_s=100.0), FakeClock(0.0)
    cache = make_cache(fake, clock)

    async def run() -> None:
        first = await cache.get(CRM, KEYS)
        assert first.refresh_at == 90.0  # 10% of 100 s
        clock.t = 89.9
        assert await cache.get(CRM, KEYS) is first
        assert fake.calls == 1
        clock.t = 90.0
        assert await cache.get(CRM, KEYS) is first  # still valid: served while refreshing
        await settle()
        assert fake.calls == 2
        second = await cache.get(CRM, KEYS)
        assert second.version == 2
        assert second.expires_at == 190.0

    asyncio.run(run())


def test_long_lived_tokens_refresh_a_minute_ahead():
    fake, clock = FakeEndpoint(lifetime_s=7200.0), FakeClock(0.0)
    token = asyncio.run(make_cache(fake, clock).get(CRM, KEYS))
    assert token.refresh_at == 7140.0


def test_an_expired_token_makes_callers_wait_for_a_new_one():
    fake, clock = FakeEndpoint(lifetime_s=100.0), FakeClock(0.0)
    cache = make_cache(fake, clock)

    async def run() -> list[Token]:
        await cache.get(CRM, KEYS)
        clock.t = 150.0
        return await asyncio.gather(*(cache.get(CRM, KEYS) for _ in range(10)))

    tokens = asyncio.run(run())
    assert fake.calls == 2
    assert {t.version for t in tokens} == {2}


def test_eight_reports_of_the_same_401_cause_one_fetch():
    fake, clock = FakeEndpoint(), FakeClock()
    cache = make_cache(fake, clock)

    async def run() -> list[Token]:
        used = await cache.get(CRM, KEYS)
        return await asyncio.gather(
            *(cache.invalidate(CRM.id, CRM.fingerprint, used.version) for _ in range(8))
        )

    tokens = asyncio.run(run())
    assert fake.calls == 2
    assert {t.version for t in tokens} == {2}


def test_a_401_for_an_old_version_fetches_nothing():
    fake, clock = FakeEndpoint(), FakeClock()
    cache = make_cache(fake, clock)

    async def run() -> None:
        old = await cache.get(CRM, KEYS)
        new = await cache.invalidate(CRM.id, CRM.fingerprint, old.version)
        assert new.version == 2
        assert await cache.invalidate(CRM.id, CRM.fingerprint, old.version) is new

    asyncio.run(run())
    assert fake.calls == 2


def test_a_401_during_a_refresh_joins_it():
    fake, clock = FakeEndpoint(lifetime_s=100.0), FakeClock(0.0)
    cache = make_cache(fake, clock)

    async def run() -> Token:
        used = await cache.get(CRM, KEYS)
        clock.t = 95.0
        await cache.get(CRM, KEYS)  # starts the refresh ahead
        return await cache.invalidate(CRM.id, CRM.fingerprint, used.version)

    assert asyncio.run(run()).version == 2
    assert fake.calls == 2


def test_a_401_for_an_unknown_definition_is_an_error():
    cache = make_cache(FakeEndpoint(), FakeClock())
    with pytest.raises(TokenError) as exc_info:
        asyncio.run(cache.invalidate("crm", "f" * 64, 1))
    assert raised(exc_info).startswith('authorization "crm": no token was fetched')


def test_an_edited_definition_is_not_served_the_old_token():
    fake, clock = FakeEndpoint(), FakeClock()
    cache = make_cache(fake, clock)
    edited = authorization_config("crm", crm_definition(ttl_s=60))

    async def run() -> tuple[Token, Token]:
        return await cache.get(CRM, KEYS), await cache.get(edited, KEYS)

    old, new = asyncio.run(run())
    assert fake.calls == 2
    assert old.values != new.values


def test_keys_asked_for_later_are_fetched_with_the_earlier_ones():
    fake, clock = FakeEndpoint(), FakeClock()
    cache = make_cache(fake, clock)

    async def run() -> Token:
        await cache.get(CRM, {"a"})
        return await cache.get(CRM, {"b"})

    token = asyncio.run(run())
    assert set(token.values) == {"a", "b"}
    assert fake.keys_asked == [frozenset({"a"}), frozenset({"a", "b"})]


def test_a_fetch_failing_twice_then_succeeding_gives_a_token_after_backoff():
    fake, clock = FakeEndpoint(failures=2), FakeClock(0.0)
    cache = make_cache(fake, clock, backoff_base_s=0.5)

    token = asyncio.run(cache.get(CRM, KEYS))
    assert token.values == {"access_token": f"{TOKEN}-3"}
    assert fake.calls == 3
    assert len(clock.slept) == 2
    assert 0.25 <= clock.slept[0] <= 0.5
    assert 0.5 <= clock.slept[1] <= 1.0


def test_persistent_failure_raises_naming_the_authorization():
    fake, clock = FakeEndpoint(failures=10**6), FakeClock(0.0)
    cache = make_cache(fake, clock, backoff_base_s=0.5, backoff_max_s=4.0, deadline_s=20.0)

    async def run() -> None:
        results = await asyncio.gather(
            *(cache.get(CRM, KEYS) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, TokenUnavailableError) for r in results)
        raise results[0]

    with pytest.raises(TokenUnavailableError) as exc_info:
        asyncio.run(run())
    message = raised(exc_info)
    assert message.startswith(f'authorization "crm": no token after {fake.calls} attempts in ')
    assert message.endswith("the last: 503")
    assert 4 <= fake.calls <= 10
    assert clock.t <= 20.0
    assert fake.most_active == 1
    assert cache.current(CRM.id, CRM.fingerprint) is None


def test_a_non_retryable_failure_is_raised_at_once():
    error = TokenResponseError("crm", 'authorization "crm": no access_token', False)
    fake, clock = FakeEndpoint(failures=1, error=error), FakeClock()
    cache = make_cache(fake, clock)
    with pytest.raises(TokenResponseError):
        asyncio.run(cache.get(CRM, KEYS))
    assert fake.calls == 1
    assert clock.slept == []


def test_a_failed_refresh_ahead_keeps_serving_the_valid_token():
    fake, clock = FakeEndpoint(lifetime_s=100.0), FakeClock(0.0)
    cache = make_cache(fake, clock, deadline_s=1.0)

    async def run() -> None:
        first = await cache.get(CRM, KEYS)
        fake.failures = 10**6
        clock.t = 95.0
        assert await cache.get(CRM, KEYS) is first
        await settle()
        clock.t = 95.0
        assert await cache.get(CRM, KEYS) is first

    asyncio.run(run())


def test_a_condemned_token_is_never_served_again():
    fake, clock = FakeEndpoint(), FakeClock(0.0)
    cache = make_cache(fake, clock, deadline_s=1.0)

    async def run() -> None:
        used = await cache.get(CRM, KEYS)
        fake.failures = 10**6
        with pytest.raises(TokenUnavailableError):
            await cache.invalidate(CRM.id, CRM.fingerprint, used.version)
        with pytest.raises(TokenUnavailableError):
            await cache.get(CRM, KEYS)

    asyncio.run(run())


def test_a_caller_that_gives_up_does_not_cancel_the_shared_fetch():
    fake, clock = FakeEndpoint(), FakeClock()
    cache = make_cache(fake, clock)

    async def run() -> Token:
        impatient = asyncio.ensure_future(cache.get(CRM, KEYS))
        patient = asyncio.ensure_future(cache.get(CRM, KEYS))
        await asyncio.sleep(0)
        impatient.cancel()
        return await patient

    assert asyncio.run(run()).version == 1
    assert fake.calls == 1


def test_a_two_second_token_over_ten_seconds_is_fetched_about_five_times_one_at_a_time():
    fake, clock = FakeEndpoint(lifetime_s=2.0), FakeClock(0.0)
    cache = make_cache(fake, clock)

    async def run() -> set[int]:
        versions: set[int] = set()
        for tick in range(100):
            clock.t = tick * 0.1
            tokens = await asyncio.gather(*(cache.get(CRM, KEYS) for _ in range(8)))
            assert all(clock.t < t.expires_at for t in tokens)
            versions |= {t.version for t in tokens}
        return versions

    versions = asyncio.run(run())
    assert 5 <= fake.calls <= 6  # at 0, ~1.8, ~3.6, ~5.4, ~7.2, ~9.0
    assert fake.most_active == 1
    assert versions == set(range(1, fake.calls + 1))


def test_the_cache_works_with_the_real_fetch(endpoint):
    base, seen = endpoint
    config = config_for(f"{base}/token")

    async def fetch(config: AuthorizationConfig, key_paths: frozenset[str], *, now: float):
        return await fetch_token_async(config, key_paths, now=now, timeout_s=5)

    async def run() -> list[Token]:
        cache = TokenCache(fetch)
        return await asyncio.gather(*(cache.get(config, KEYS) for _ in range(20)))

    tokens = asyncio.run(run())
    assert len(seen) == 1
    assert {t.values["access_token"] for t in tokens} == {TOKEN}


def test_templates_render_from_a_cached_token():
    fake, clock = FakeEndpoint(), FakeClock()
    token = asyncio.run(make_cache(fake, clock).get(CRM, KEYS))
    template: Template = parse_template("Bearer #{auth.crm.access_token}", "w")
    assert template.render(token.wildcard_values()) == f"Bearer {TOKEN}-1"
