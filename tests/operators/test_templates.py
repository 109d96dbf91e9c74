"""Templates: locale fallback, the sandbox, all-or-nothing rendering, channel checks, Redis."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.steps import Planner
from notiflow.devservices import RedisServer, free_port
from notiflow.messages import DeadLetter
from notiflow.settings import Settings
from notiflow.templates_cli import add_templates_commands
from operators.routing import plan_deliveries
from operators.templates import (
    REDIS_KEY,
    ContentInvalid,
    ContentLimits,
    RedisTemplates,
    RenderedContent,
    TemplateMissing,
    TemplateRenderError,
    TemplateStore,
    load_directory_into_redis,
    locale_chain,
    normalize_locale,
    parse_path,
    validate,
)


def write(directory: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return directory


def note(**overrides: Any) -> dict[str, Any]:
    recipient = {"user_id": "u1", "email": "u1@example.test", "phone": "+15551234567"}
    base = {
        "id": "n-1",
        "tenant_id": "acme",
        "user_id": "u1",
        "key": "acme/u1",
        "category": "orders",
        "priority": "normal",
        "channels": None,
        "content": None,
        "template": "t",
        "data": {"name": "Ada"},
        "recipient": recipient,
        "metadata": {},
        "requested_at_ms": 1.0,
    }
    if "locale" in overrides:
        base["recipient"] = {**recipient, "locale": overrides.pop("locale")}
    return {**base, **overrides}


def store_with(tmp_path: Path, files: dict[str, str], **kw: Any) -> TemplateStore:
    return TemplateStore(write(tmp_path, files), **kw)


# --- lookup and locale fallback ----------------------------------------------------------

LOCALES = {
    "t/sms.pt-BR.text.j2": "br",
    "t/sms.pt.text.j2": "pt",
    "t/sms.en.text.j2": "en",
    "t/sms.text.j2": "none",
}


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("pt-BR", "br"),
        ("pt_br", "br"),
        ("pt_BR.UTF-8", "br"),
        ("pt-PT", "pt"),
        ("pt", "pt"),
        ("fr-FR", "en"),
        (None, "en"),
        ("not a locale!", "en"),
    ],
)
def test_locale_falls_back_to_language_then_default(tmp_path, locale, expected):
    assert store_with(tmp_path, LOCALES).render(note(locale=locale), "sms").text == expected


def test_locale_chain_ends_with_the_locale_less_file(tmp_path):
    store = store_with(tmp_path, LOCALES, default_locale="de")
    assert store.render(note(locale="fr"), "sms").text == "none"
    (tmp_path / "t/sms.pt-BR.text.j2").unlink()
    store.invalidate()
    assert store.render(note(locale="pt-BR"), "sms").text == "pt"


def test_channel_own_template_beats_any_then_any_serves_every_channel(tmp_path):
    store = store_with(tmp_path, {"t/sms.en.text.j2": "sms en", "t/_any.pt.text.j2": "any pt"})
    assert store.render(note(locale="pt"), "sms").text == "sms en"
    assert store.render(note(locale="pt"), "voice").text == "any pt"
    with pytest.raises(TemplateMissing):  # pt is not in an English reader's chain
        store.render(note(locale="en"), "webhook")


def test_missing_template_and_unsafe_names(tmp_path):
    store = store_with(tmp_path, {"t/email.text.j2": "x"})
    with pytest.raises(TemplateMissing, match=r"'t' for channel 'sms'.*pt-BR, pt, en, \(none\)"):
        store.render(note(locale="pt-BR"), "sms")
    for name in ("../t", "t/../t", ".hidden", "a" * 200):
        with pytest.raises(TemplateMissing):
            store.render(note(template=name), "email")


def test_name_falls_back_to_category(tmp_path):
    store = store_with(tmp_path, {"orders/_any.text.j2": "by category"})
    assert store.render(note(template=None), "sms").text == "by category"


def test_locale_helpers():
    assert locale_chain("pt-BR") == ("pt-BR", "pt", "en", None)
    assert locale_chain("zh-hant-tw", "en-US") == (
        "zh-Hant-TW",
        "zh-Hant",
        "zh",
        "en-US",
        "en",
        None,
    )
    assert locale_chain(None, "en") == ("en", None) and locale_chain("en", "en") == ("en", None)
    assert normalize_locale("PT_br") == "pt-BR" and normalize_locale("../x") is None
    assert parse_path("welcome/email.pt-br.subject.j2") == ("welcome", "email", "pt-BR", "subject")
    assert parse_path("welcome/_any.text.j2") == ("welcome", "_any", None, "text")
    assert parse_path("_partials/footer.j2") is None


subtag = st.from_regex(r"[A-Za-z]{2}|[0-9]{3}|[A-Za-z]{4}", fullmatch=True)
tags = st.builds(
    lambda lang, rest: "-".join([lang, *rest]),
    st.from_regex(r"[A-Za-z]{2,3}", fullmatch=True),
    st.lists(subtag, max_size=3),
)


@settings(max_examples=40, deadline=None)
@given(locale=st.one_of(st.none(), tags), default=tags, data=st.data())
def test_fallback_picks_the_first_available_locale_of_the_chain(locale, default, data):
    chain = locale_chain(locale, default)
    assert chain[-1] is None and len(set(chain)) == len(chain)
    assert chain[0] == (normalize_locale(locale) or normalize_locale(default))
    for tag in chain[:-1]:  # every entry is a subtag prefix of the locale or the default
        prefixes = (normalize_locale(locale) or "", normalize_locale(default))
        assert any(p == tag or p.startswith(tag + "-") for p in prefixes)
    available = data.draw(st.sets(st.sampled_from(chain), min_size=1))
    with tempfile.TemporaryDirectory() as tmp:
        files = {f"t/sms{'.' + loc if loc else ''}.text.j2": loc or "none" for loc in available}
        store = TemplateStore(write(Path(tmp), files), default_locale=default)
        expected = next(loc for loc in chain if loc in available)
        assert store.render(note(locale=locale), "sms").text == (expected or "none")


# --- rendering: strictness, sandbox, escaping, all-or-nothing ------------------------------


def test_undefined_variable_is_an_error_naming_the_file(tmp_path):
    store = store_with(tmp_path, {"t/sms.text.j2": "Hi {{ name }}, {{ user.nickname }}"})
    with pytest.raises(TemplateRenderError, match=r"t/sms\.text\.j2: UndefinedError: .*nickname"):
        store.render(note(), "sms")


def test_syntax_error_names_file_and_line(tmp_path):
    store = store_with(tmp_path, {"t/sms.text.j2": "ok\n{% if %}"})
    with pytest.raises(TemplateRenderError, match=r"t/sms\.text\.j2:2: syntax error"):
        store.render(note(), "sms")


def test_context_has_data_user_notification_and_top_level_data(tmp_path):
    source = (
        "{{ name }} {{ data.name }} {{ user.email }} {{ notification.tenant_id }}/{{ data['a b'] }}"
    )
    store = store_with(tmp_path, {"t/sms.text.j2": source})
    rendered = store.render(note(data={"name": "Ada", "a b": 1}), "sms")
    assert rendered.text == "Ada Ada u1@example.test acme/1"


SANDBOXED = "blocked by the sandbox"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", SANDBOXED),
        ("{{ cycler.__init__.__globals__ }}", SANDBOXED),
        ("{{ data.__class__ }}", SANDBOXED),
        ("{{ data|attr('__class__') }}", SANDBOXED),
        ("{{ '{0.__class__}'.format(data) }}", SANDBOXED),
        ("{{ namespace(a=1)._Namespace__attrs }}", SANDBOXED),  # a real _private attribute
        ("{{ data.update({'name': 'Eve'}) }}", SANDBOXED),
        ("{{ data.pop('name') }}", SANDBOXED),
        ("{% for x in range(10**9) %}{% endfor %}", SANDBOXED),
        ("{{ 'x' * 10**9 }}", SANDBOXED),
        ("{{ [0] * 10**8 }}", SANDBOXED),
        ("{{ 2 ** 100000 }}", SANDBOXED),
        ("{{ lipsum(10**6) }}", "'lipsum' is undefined"),
        ("{% include '../secret.j2' %}", "TemplateNotFound"),
        ("{% include '/etc/passwd' %}", "TemplateNotFound"),
        ("{% include 'other\\x00t/secret.j2' %}", "TemplateNotFound"),  # another tenant
        ("{% import 'os' as os %}", "TemplateNotFound"),
    ],
)
def test_sandbox_escapes_are_blocked(tmp_path, source, reason):
    (tmp_path / "secret.j2").write_text("SECRET")
    store = store_with(tmp_path / "dir", {"t/sms.text.j2": source})
    with pytest.raises(TemplateRenderError, match=r"^template t/sms\.text\.j2: ") as caught:
        store.render(note(), "sms")
    assert reason in str(caught.value) and "SECRET" not in str(caught.value)


def test_data_is_never_evaluated_and_includes_stay_in_the_store(tmp_path):
    files = {
        "t/sms.text.j2": "{{ name }} {% include '_partials/sig.j2' %}",
        "_partials/sig.j2": "-- x",
    }
    rendered = store_with(tmp_path, files).render(note(data={"name": "{{ 7*7 }}"}), "sms")
    assert rendered.text == "{{ 7*7 }} -- x"


def test_output_is_capped(tmp_path):
    source = "{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}"
    store = store_with(tmp_path, {"t/webhook.text.j2": source}, max_output_chars=100_000)
    with pytest.raises(TemplateRenderError, match="output exceeds"):
        store.render(note(), "webhook")


def test_html_parts_are_autoescaped_text_parts_are_not(tmp_path):
    files = {
        "t/email.subject.j2": "Hi {{ name }}",
        "t/email.text.j2": "Hi {{ name }}",
        "t/email.html.j2": "<p>Hi {{ name }}</p>",
    }
    rendered = store_with(tmp_path, files).render(note(data={"name": "<i>Ada</i>"}), "email")
    assert rendered.text == "Hi <i>Ada</i>" and rendered.subject == "Hi <i>Ada</i>"
    assert rendered.html == "<p>Hi &lt;i&gt;Ada&lt;/i&gt;</p>"


def test_a_failing_part_fails_the_channel_and_nothing_half_rendered_is_sent(tmp_path):
    files = {
        "t/email.subject.j2": "Hi {{ name }}",
        "t/email.text.j2": "Total: {{ total }}",
        "t/_any.text.j2": "Hi {{ name }}",
    }
    store = store_with(tmp_path, files)
    with pytest.raises(TemplateRenderError, match="total"):
        store.render(note(), "email")
    deliveries, [bad] = plan_deliveries(note(channels=["email", "sms"]), store)
    assert [d.channel for d in deliveries] == ["sms"] and deliveries[0].body == "Hi Ada"
    assert (bad.channel, bad.kind) == ("email", "template_error") and "total" in bad.reason


def test_planner_dead_letters_with_the_undeliverable_kind(tmp_path):
    write(tmp_path, {"t/email.subject.j2": "{{ nope }}", "t/email.text.j2": "x"})
    planner = Planner(Settings(templates_dir=tmp_path, redis_url=None))
    out = planner(
        (note(channels=["email", "voice"], recipient={"user_id": "u1", "email": "a@b.c"}), None)
    )
    letters = {x.context["channel"]: x for x in out if isinstance(x, DeadLetter)}
    assert letters["email"].kind == "template_error" and "nope" in letters["email"].reason
    assert letters["voice"].kind == "undeliverable"
    events = [x for x in out if isinstance(x, dict)]
    assert {e["status"] for e in events} == {"dead_lettered"} and len(events) == 2


def test_push_title_becomes_the_delivery_subject(tmp_path):
    store = store_with(tmp_path, {"t/push.title.j2": "Hey {{ name }}", "t/push.text.j2": "Body"})
    recipient = {"user_id": "u1", "push_tokens": [{"platform": "fcm", "token": "a"}]}
    [delivery], _ = plan_deliveries(note(channels=["push"], recipient=recipient), store)
    assert (delivery.subject, delivery.body) == ("Hey Ada", "Body")


def test_builtin_templates_render_in_english_and_portuguese():
    store = TemplateStore()
    data = {"name": "Ana", "order_id": "O-1"}
    en = store.render(note(template="welcome", data=data), "email")
    assert en.subject == "Welcome to acme, Ana!" and en.text.startswith("Hi Ana,\n\n")
    br = store.render(note(template="welcome", data=data, locale="pt-BR"), "email")
    pt = store.render(note(template="welcome", data=data, locale="pt-PT"), "email")
    assert br.text.startswith("Oi Ana") and pt.text.startswith("Olá Ana")
    assert store.render(note(template="welcome", data=data, locale="pt-BR"), "sms").text == (
        "Bem-vindo a bordo, Ana!"
    )
    assert (
        store.render(note(template="order_shipped", data=data), "push").text == "Order O-1 shipped."
    )


def test_compiled_templates_are_cached_until_invalidated(tmp_path):
    store = store_with(tmp_path, {"t/sms.text.j2": "one"})
    assert store.render(note(), "sms").text == "one"
    (tmp_path / "t/sms.text.j2").write_text("two")
    assert store.render(note(), "sms").text == "one"
    store.invalidate("acme")  # the directory is shared: only a full invalidation re-reads it
    store.invalidate()
    assert store.render(note(), "sms").text == "two"


# --- per-channel validation ----------------------------------------------------------------

LIMITS = ContentLimits()


def test_sms_segments():
    assert validate("sms", RenderedContent("x" * 153 * 10), LIMITS)
    with pytest.raises(ContentInvalid, match="11 GSM-7 segments; the limit is 10"):
        validate("sms", RenderedContent("x" * (153 * 10 + 1)), LIMITS)
    with pytest.raises(ContentInvalid, match="UCS-2"):
        validate("sms", RenderedContent("ü" + "ç" * 70 * 3), ContentLimits(sms_max_segments=3))
    with pytest.raises(ContentInvalid, match="empty"):
        validate("sms", RenderedContent("  "), LIMITS)


def test_push_payload_limit():
    fits = RenderedContent("b", title="t", data={"pad": "x" * 4000})
    assert validate("push", fits, LIMITS) is fits
    with pytest.raises(ContentInvalid, match=r"payload is 4\d+ bytes; the limit is 4096"):
        validate("push", RenderedContent("b" * 10, title="t", data={"pad": "x" * 4070}), LIMITS)


def test_email_parts_and_header_injection():
    ok = validate("email", RenderedContent("Hi <you>\nline 2\n\npara", subject="S"), LIMITS)
    assert "<p>Hi &lt;you&gt;<br>\nline 2</p>\n<p>para</p>" in ok.html
    kept = RenderedContent("t", subject="S", html="<b>mine</b>")
    assert validate("email", kept, LIMITS).html == "<b>mine</b>"
    for bad, reason in (
        (RenderedContent("t", subject=" "), "subject is empty"),
        (RenderedContent("t", subject="Hi\r\nBcc: eve@example.test"), "line break"),
        (RenderedContent("t", subject="Hi\nX-Evil: 1"), "line break"),
        (RenderedContent("", subject="S", html="<p>only html</p>"), "text part is empty"),
    ):
        with pytest.raises(ContentInvalid, match=reason):
            validate("email", bad, LIMITS)


def test_subject_injection_through_data_is_refused(tmp_path):
    store = store_with(tmp_path, {"t/email.subject.j2": "Hi {{ name }}", "t/email.text.j2": "x"})
    with pytest.raises(ContentInvalid, match="line break"):
        store.render(note(data={"name": "Ada\r\nBcc: eve@example.test"}), "email")


def test_voice_and_body_limits():
    assert validate("voice", RenderedContent("x" * 4000), LIMITS)
    with pytest.raises(ContentInvalid, match="4001 characters"):
        validate("voice", RenderedContent("x" * 4001), LIMITS)
    with pytest.raises(ContentInvalid, match="empty"):
        validate("voice", RenderedContent(""), LIMITS)
    assert validate("webhook", RenderedContent(""), LIMITS)  # data-only webhooks are fine
    for channel in ("webhook", "in_app"):
        with pytest.raises(ContentInvalid, match="65537 bytes"):
            validate(channel, RenderedContent("x" * (64 * 1024 + 1)), LIMITS)


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.flushall()
    client.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_redis_templates_shadow_the_directory_for_their_tenant(tmp_path, client):
    base = write(tmp_path / "base", {"t/sms.text.j2": "base {{ name }}", "t/email.text.j2": "e"})
    override = write(tmp_path / "acme", {"t/sms.pt.text.j2": "acme pt {{ name }}"})
    assert load_directory_into_redis(client, "acme", override) == 1
    clock = Clock()
    store = TemplateStore(base, redis=RedisTemplates(client, refresh_s=10, clock=clock))
    assert store.render(note(locale="pt-BR"), "sms").text == "acme pt Ada"
    assert store.render(note(locale="pt-BR", tenant_id="other"), "sms").text == "base Ada"

    client.hset(REDIS_KEY.format(tenant="acme"), "t/sms.pt.text.j2", "changed")
    assert store.render(note(locale="pt"), "sms").text == "acme pt Ada"  # until refresh_s
    clock.now = 11
    assert store.render(note(locale="pt"), "sms").text == "changed"

    write(override, {"t/sms.pt.text.j2": "reloaded"})
    load_directory_into_redis(client, "acme", override)
    store.invalidate("acme")
    assert store.render(note(locale="pt"), "sms").text == "reloaded"


def test_a_refreshed_index_resolves_anew(tmp_path, client):
    """Lookups are remembered per index: a locale file added in Redis wins after the refresh."""
    base = write(tmp_path, {"t/sms.text.j2": "base {{ name }}"})
    client.hset(REDIS_KEY.format(tenant="acme"), "t/email.text.j2", "acme email")
    clock = Clock()
    store = TemplateStore(base, redis=RedisTemplates(client, refresh_s=10, clock=clock))
    assert store.render(note(locale="pt"), "sms").text == "base Ada"
    assert store.render(note(locale="pt"), "sms").text == "base Ada"  # remembered

    client.hset(REDIS_KEY.format(tenant="acme"), "t/sms.pt.text.j2", "acme pt {{ name }}")
    clock.now = 11
    assert store.render(note(locale="pt"), "sms").text == "acme pt Ada"
    assert store.render(note(locale="pt", tenant_id="other"), "sms").text == "base Ada"


def test_redis_partials_override_per_tenant(tmp_path, client):
    files = {"t/sms.text.j2": "{% include '_p/sig.j2' %}", "_p/sig.j2": "base sig"}
    base = write(tmp_path, files)
    client.hset(REDIS_KEY.format(tenant="acme"), "_p/sig.j2", "acme sig")
    store = TemplateStore(base, redis=RedisTemplates(client))
    assert store.render(note(), "sms").text == "acme sig"
    assert store.render(note(tenant_id="other"), "sms").text == "base sig"


def test_errors_in_redis_templates_name_their_origin(tmp_path, client):
    client.hset(REDIS_KEY.format(tenant="acme"), "t/sms.text.j2", "{{ nope }}")
    store = TemplateStore(tmp_path, redis=RedisTemplates(client))
    with pytest.raises(TemplateRenderError, match=r"^template redis:acme:t/sms\.text\.j2: "):
        store.render(note(), "sms")


def test_load_refuses_broken_templates_and_keeps_the_old_ones(tmp_path, client):
    good = write(tmp_path / "good", {"t/sms.text.j2": "ok", "t/email.text.j2": "ok"})
    assert load_directory_into_redis(client, "acme", good) == 2
    bad = write(tmp_path / "bad", {"t/sms.text.j2": "{% for %}"})
    with pytest.raises(TemplateRenderError, match=r"t/sms\.text\.j2:1: syntax error"):
        load_directory_into_redis(client, "acme", bad)
    assert client.hlen(REDIS_KEY.format(tenant="acme")) == 2
    extra = write(tmp_path / "extra", {"t/voice.text.j2": "v"})
    assert load_directory_into_redis(client, "acme", extra, replace=False) == 1
    assert client.hlen(REDIS_KEY.format(tenant="acme")) == 3


def test_unreachable_redis_falls_back_to_the_directory(tmp_path, caplog):
    store = TemplateStore(
        write(tmp_path, {"t/sms.text.j2": "dir"}),
        redis=RedisTemplates(redis.Redis(port=free_port(), socket_connect_timeout=0.2)),
    )
    assert store.render(note(), "sms").text == "dir"
    assert "not read from Redis" in caplog.text


# --- CLI -------------------------------------------------------------------------------------


def run_cli(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="notiflow")
    add_templates_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args, settings)


def test_cli_load_list_and_render(tmp_path, redis_server, client, capsys):
    directory = write(tmp_path, {"t/sms.text.j2": "Hi {{ name }}", "t/sms.pt.text.j2": "Oi"})
    no_redis = Settings(redis_url=None)
    assert run_cli(["templates", "load", str(directory), "--tenant", "acme"], no_redis) == 2
    assert "REDIS_URL" in capsys.readouterr().out
    with_redis = Settings(redis_url=redis_server.url)
    assert run_cli(["templates", "load", str(directory), "--tenant", "acme"], with_redis) == 0
    assert "loaded 2" in capsys.readouterr().out
    assert run_cli(["templates", "list", "--dir", str(directory)], no_redis) == 0
    assert "t: sms [-, pt]" in capsys.readouterr().out
    render = ["templates", "render", "t", "--channel", "sms", "--dir", str(directory)]
    assert run_cli([*render, "--data", '{"name": "Ada"}'], no_redis) == 0
    assert "Hi Ada" in capsys.readouterr().out
    assert run_cli(render, no_redis) == 1
    assert "'name' is undefined" in capsys.readouterr().out.replace("\n", " ")
