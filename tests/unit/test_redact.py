from hookcast.actors.redact import redact


def test_every_occurrence_of_a_secret_is_masked():
    assert redact("token=abcd1234&again=abcd1234", ["abcd1234"]) == "token=***&again=***"


def test_longest_secret_is_masked_first():
    assert redact("key sekret-long and sekret", ["sekret", "sekret-long"]) == "key *** and ***"


def test_short_and_empty_secrets_are_ignored():
    assert redact("on 1 abc", ["", "on", "1", "abc"]) == "on 1 abc"


def test_regex_characters_in_a_secret_are_literal():
    assert redact("p.a*s+s(1) pXass", ["p.a*s+s(1)"]) == "*** pXass"


def test_no_secrets_leaves_text_alone():
    assert redact("nothing to hide", []) == "nothing to hide"
