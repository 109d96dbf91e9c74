"""``notiflow users`` commands against a real ``redis-server``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import orjson
import pytest
import redis

from connectors.tokens import tokens_key
from notiflow.devservices import RedisServer
from notiflow.settings import Settings
from notiflow.users_cli import add_users_commands, main, parse_assignments


@pytest.fixture
def settings(redis_server: RedisServer) -> Iterator[Settings]:
    yield Settings(redis_url=redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()


def run(settings: Settings, *argv: str) -> int:
    return main(list(argv), settings)


def test_import_show_set_erase(settings, tmp_path, capsys):
    lines = [
        orjson.dumps(
            {
                "tenant_id": "acme",
                "user_id": "u1",
                "email": "u1@x.test",
                "push_tokens": [{"platform": "fcm", "token": "tok"}],
            }
        ),
        b'{"tenant_id": "acme", "user_id": "u2", "phone": "0151"}',
        orjson.dumps({"tenant_id": "acme", "user_id": "u3"}),
    ]
    path = tmp_path / "users.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert run(settings, "import", str(path)) == 1  # one invalid line
    out = capsys.readouterr().out
    assert "imported 2 profile(s); 1 invalid line(s)" in out
    assert "line 2: phone" in out

    assert run(settings, "show", "acme", "u1") == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["email"] == "u1@x.test" and shown["push_tokens"] == [
        {"platform": "fcm", "token": "tok"}
    ]
    assert run(settings, "show", "acme", "u2") == 1
    assert "no profile" in capsys.readouterr().out

    consent = {"channel": "sms", "granted": True, "at": "2026-01-01T00:00:00Z", "source": "cli"}
    assert (
        run(
            settings,
            "set",
            "acme",
            "u1",
            "phone=+4915112345678",
            "quiet_hours=22:00-07:00",
            "email=null",
            "--json",
            orjson.dumps(
                {"consents": [consent], "opt_outs": {"categories": ["marketing"]}}
            ).decode(),
        )
        == 0
    )
    updated = orjson.loads(capsys.readouterr().out)
    assert updated["phone"] == "+4915112345678" and updated["quiet_hours"] == "22:00-07:00"
    assert "email" not in updated and updated["consents"][0]["source"] == "cli"
    assert updated["opt_outs"]["categories"] == ["marketing"]
    assert updated["push_tokens"] == shown["push_tokens"]

    assert run(settings, "erase", "acme", "u1") == 0
    assert "erased" in capsys.readouterr().out
    client = redis.Redis.from_url(settings.redis_url)
    assert client.exists(tokens_key("acme", "u1")) == 0
    client.close()
    assert run(settings, "show", "acme", "u1") == 1
    assert run(settings, "erase", "acme", "u1") == 0
    assert "nothing stored" in capsys.readouterr().out


def test_set_rejects_invalid_values(settings, capsys):
    assert run(settings, "set", "acme", "u1", "phone=12") == 2
    assert "phone" in capsys.readouterr().out
    assert run(settings, "set", "acme", "u1", "nickname=bob") == 2
    assert "nickname" in capsys.readouterr().out
    assert run(settings, "set", "acme", "u1", "novalue") == 2
    assert run(settings, "set", "acme", "u1") == 2
    assert run(settings, "show", "acme", "u1") == 1


def test_without_redis_url_says_so(capsys):
    assert main(["show", "acme", "u1"], Settings(redis_url=None)) == 2
    assert "REDIS_URL" in capsys.readouterr().out


def test_commands_register_on_a_parent_parser():
    parser = argparse.ArgumentParser(prog="notiflow")
    add_users_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["users", "set", "t", "u", "a=1", "--json", "{}"])
    assert (args.command, args.users_command, args.fields) == ("users", "set", ["a=1"])


def test_parse_assignments():
    assert parse_assignments(["a=1", "b=x y", "c=null", 'd={"k": [1]}', "e="]) == {
        "a": 1,
        "b": "x y",
        "c": None,
        "d": {"k": [1]},
        "e": "",
    }
    with pytest.raises(ValueError):
        parse_assignments(["=x"])
