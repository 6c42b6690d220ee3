"""Cookie exports as people have them: flags written as strings, odd expiries, and files that are
broken in every way, each answered with one readable line that names where the file is wrong."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from quaero.cookies.files import CookieFileError, read_cookie_file


def write(tmp_path: Path, content: str | bytes, name: str = "cookies.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_string_and_numeric_flags_are_read_as_what_they_say(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps([
        {"name": "a", "value": "1", "domain": "app.test", "secure": "false", "httpOnly": "true", "hostOnly": "TRUE"},
        {"name": "b", "value": "2", "domain": ".app.test", "secure": 1, "session": "false",
         "expirationDate": "1900000000.5"}]))
    _kind, [a, b] = read_cookie_file(path)
    assert (a.secure, a.http_only, a.host_only) == (False, True, True)
    assert b.secure and not b.host_only and b.expires is not None and int(b.expires.timestamp()) == 1900000000


@pytest.mark.parametrize("content,expected", [
    ('[{"name": "sid"}]', "cookie 1 ('sid') has no 'value'"),
    ('[{"name": 5, "value": "v"}]', "cookie 1: 'name' must be a string"),
    ('[{"name": "a", "value": "v", "secure": "maybe"}]', "cookie 1 ('a'): 'secure' must be true or false"),
    ('[{"name": "a", "value": "v", "expirationDate": "soon"}]', "not a number of seconds"),
    ('[{"name": "a", "value": "v", "expirationDate": 1e400}]', "not a number of seconds"),
    ('[{"name": "a", "value": "v", "expirationDate": [1]}]', "not a number of seconds"),
    ('["sid=v"]', "cookie 1 is not a JSON object"),
    ('{"cookies": {"name": "a"}}', "'cookies' is not a list"),
    ('{"origins": []}', "neither a list of cookies nor a storageState"),
    ("[" * 100_000, "not valid JSON"),
    ('[{"name": "a", "value": "v"}, 7]', "cookie 2 is not a JSON object"),
    ("a.test\tMAYBE\t/\tFALSE\t0\tsid\tv\n", "line 1: the subdomains flag must be TRUE or FALSE"),
    ("a.test\tFALSE\t/\tFALSE\tnever\tsid\tv\n", "line 1: the expiry 'never' is not a number of seconds"),
    ("a.test\tFALSE\t/\n", "line 1 is not a cookies.txt line"),
    ("hello world", "not a cookie export"),
    (b"\xff\xfe\x00garbage", "not a text file"),
])
def test_a_broken_file_is_one_readable_error(tmp_path: Path, content: str | bytes, expected: str) -> None:
    with pytest.raises(CookieFileError) as caught:
        read_cookie_file(write(tmp_path, content))
    message = str(caught.value)
    assert expected in message and "Traceback" not in message and "Error" not in message.split(":", 1)[1]


def test_a_directory_is_not_a_cookie_file(tmp_path: Path) -> None:
    with pytest.raises(CookieFileError, match="is a directory"):
        read_cookie_file(tmp_path)
