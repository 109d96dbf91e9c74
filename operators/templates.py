"""Notification templates: lookup by name × channel × locale, sandboxed Jinja2, per-channel checks.

Layout (a directory, and optionally a Redis hash per tenant with the same relative paths)::

    <dir>/<name>/<channel>[.<locale>].<part>.j2      e.g. welcome/email.pt-BR.subject.j2
    <dir>/<name>/_any[.<locale>].<part>.j2           one text for every channel
    <dir>/<anything>.j2                              partials for {% include %} / {% extends %}

Parts: ``subject``, ``text``, ``html`` (email); ``title``, ``text`` (push, in_app); ``text``
(others). A variant exists when its ``text`` part exists; its other parts come with it.
Lookup order: the channel's own variants first, then ``_any``; within each, the locale chain
``pt-BR`` → ``pt`` → default locale (``en``) → the locale-less file. The name is the request's
``template``, else its ``category``.

Redis: the hash ``notiflow:templates:{tenant}`` (field = relative path, value = source)
shadows same-path files of the directory for that tenant; re-read every ``refresh_s`` and, if
Redis is unreachable, the last copy read (or none) is used. Compiled templates are cached per
tenant and path until ``TemplateStore.invalidate``.

Sandbox: ``ImmutableSandboxedEnvironment`` (no ``_private`` or dunder attributes, no mutation
of data), ``StrictUndefined`` (a missing variable is an error), autoescape for ``.html.j2``
only, ``range`` capped, ``*``/``**`` capped, output capped. Templates can only include from
this store. It does not bound CPU time: templates are authored by operators; data is untrusted.

Rendering renders every part before returning anything and then runs ``validate``: a failure
raises a ``TemplateError`` subclass, never returns a half-rendered message.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import orjson
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from connectors.sms.segments import count_segments

log = logging.getLogger(__name__)

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "notiflow" / "templates"
ANY_CHANNEL = "_any"
DEFAULT_LOCALE = "en"
REDIS_KEY = "notiflow:templates:{tenant}"
PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "push": ("title", "text"),
    "in_app": ("title", "text"),
}
DEFAULT_PARTS = ("text",)
MAX_RANGE = 10_000
MAX_SEQUENCE = 100_000  # longest string/list a ``*`` may build
MAX_OUTPUT_CHARS = 256 * 1024

_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_SAFE_PATH = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*\.j2$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_FILE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)/(?P<channel>[a-z_]+)"
    r"(?:\.(?P<locale>[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*))?\.(?P<part>subject|text|html|title)\.j2$"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SEP = "\x00"  # between tenant and path in Jinja template names


class TemplateError(Exception):
    """Content for a channel could not be produced. The message says why, for the DLQ."""


class TemplateMissing(TemplateError):
    """No template for the name and channel in any locale of the chain."""


class TemplateRenderError(TemplateError):
    """Syntax error, undefined variable or sandbox violation; names the file."""


class ContentInvalid(TemplateError):
    """Rendered (or inline) content fails the channel's checks."""


@dataclass(frozen=True, slots=True)
class RenderedContent:
    """One channel's content. ``title`` is the push/in-app title."""

    text: str
    subject: str | None = None
    html: str | None = None
    title: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContentLimits:
    """Per-channel limits checked by ``validate``."""

    sms_max_segments: int = 10
    push_max_bytes: int = 4096
    voice_max_chars: int = 4000
    body_max_bytes: int = 64 * 1024  # webhook and in_app


_RESOLVED_MAX = 10_000  # remembered lookups per index (locales come from user profiles)


def normalize_locale(locale: str | None) -> str | None:
    """``pt_br.UTF-8`` → ``pt-BR``; None when not a usable BCP 47-ish tag."""
    if not locale:
        return None
    tag = locale.strip().split(".")[0].split("@")[0].replace("_", "-")
    if not _LOCALE.match(tag):
        return None
    lang, *rest = tag.split("-")
    subtags = [lang.lower()]
    for s in rest:
        subtags.append(s.upper() if len(s) == 2 else s.title() if len(s) == 4 else s.lower())
    return "-".join(subtags)


@functools.lru_cache(maxsize=4096)
def locale_chain(locale: str | None, default: str = DEFAULT_LOCALE) -> tuple[str | None, ...]:
    """Locales to try: ``pt-BR`` → ``pt`` → the default's chain → None (locale-less)."""
    chain: list[str | None] = []
    for tag in (normalize_locale(locale), normalize_locale(default)):
        if tag:
            subtags = tag.split("-")
            chain += ["-".join(subtags[:i]) for i in range(len(subtags), 0, -1)]
    chain.append(None)
    return tuple(dict.fromkeys(chain))


def parse_path(path: str) -> tuple[str, str, str | None, str] | None:
    """``(name, channel, locale, part)`` of a template file path; None for partials."""
    match = _FILE.match(path)
    if not match:
        return None
    return match["name"], match["channel"], normalize_locale(match["locale"]), match["part"]


def text_to_html(text: str) -> str:
    """The generated HTML part of an email without one: escaped paragraphs, ``<br>`` lines."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    body = "\n".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>' + chr(10))}</p>" for p in paragraphs
    )
    head = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>'
    return f"{head}\n{body}\n</body></html>\n"


def validate(channel: str, content: RenderedContent, limits: ContentLimits) -> RenderedContent:
    """``content`` ready to send on ``channel`` (email gains a generated HTML part if it has
    none); raises ``ContentInvalid``."""

    def fail(reason: str) -> ContentInvalid:
        return ContentInvalid(f"{channel} content invalid: {reason}")

    text = content.text
    if channel == "sms":
        if not text.strip():
            raise fail("text is empty")
        info = count_segments(text)
        if info.segments > limits.sms_max_segments:
            raise fail(
                f"{info.segments} {info.encoding} segments; the limit is {limits.sms_max_segments}"
            )
    elif channel == "push":
        title = content.title or content.subject
        try:
            size = len(orjson.dumps({"title": title, "body": text, "data": content.data}))
        except TypeError as error:
            raise fail(f"data is not JSON: {error}") from None
        if size > limits.push_max_bytes:
            raise fail(f"payload is {size} bytes; the limit is {limits.push_max_bytes}")
    elif channel == "email":
        subject = content.subject or ""
        if not subject.strip():
            raise fail("subject is empty")
        if "\r" in subject or "\n" in subject:
            raise fail("subject contains a line break")
        if not text.strip():
            raise fail("text part is empty")
        if content.html is None:
            return replace(content, html=text_to_html(text))
    elif channel == "voice":
        if not text.strip():
            raise fail("text is empty")
        if len(text) > limits.voice_max_chars:
            raise fail(f"text is {len(text)} characters; the limit is {limits.voice_max_chars}")
    elif channel in ("webhook", "in_app"):
        size = len(text.encode())
        if size > limits.body_max_bytes:
            raise fail(f"body is {size} bytes; the limit is {limits.body_max_bytes}")
    return content


def render_context(note: Mapping[str, Any]) -> dict[str, Any]:
    """Template variables: ``data``, ``user`` (the recipient, profile already merged in by
    ``operators.preferences``), ``notification``, and each identifier-named data key."""
    data = note.get("data") or {}
    user = note["recipient"]
    notification = {k: note.get(k) for k in ("id", "category", "priority", "tenant_id")}
    top = {k: v for k, v in data.items() if isinstance(k, str) and k.isidentifier()}
    return {**top, "data": data, "user": user, "notification": notification}


def scan_directory(directory: Path) -> dict[str, Path]:
    """Every ``*.j2`` file under ``directory`` by safe relative path (symlinks out are skipped)."""
    root = directory.resolve()
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.j2")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and _SAFE_PATH.match(relative) and path.resolve().is_relative_to(root):
            found[relative] = path
    return found


def _limited_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range of {len(rng)} items; the sandbox allows {MAX_RANGE}")
    return rng


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with ``*`` and ``**`` capped; includes stay in the parent's tenant."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and ints and right > 0 and abs(left).bit_length() * right > 4096:
            raise SecurityError("power too large for the sandbox")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(n, int)
                if sized and len(seq) * n > MAX_SEQUENCE:
                    raise SecurityError("repetition too large for the sandbox")
        return super().call_binop(context, operator, left, right)

    def join_path(self, template: str, parent: str) -> str:
        if _SEP in template:
            raise jinja2.TemplateNotFound(template)
        return f"{parent.partition(_SEP)[0]}{_SEP}{template}"


class RedisTemplates:
    """Per-tenant sources from the hash ``notiflow:templates:{tenant}``, re-read every
    ``refresh_s``. ``client`` is a sync ``redis.Redis`` or a URL (connected on first use).
    ``snapshot`` may block on Redis; it never raises."""

    def __init__(
        self, client: Any, *, refresh_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client, self.refresh_s, self._clock = client, refresh_s, clock
        self._snapshots: dict[str, tuple[float, dict[str, str]]] = {}

    def _redis(self) -> Any:
        if isinstance(self._client, str):
            import redis

            self._client = redis.Redis.from_url(self._client)
        return self._client

    def snapshot(self, tenant: str) -> dict[str, str]:
        """The tenant's sources; the same object until its content changes."""
        now = self._clock()
        fetched_at, current = self._snapshots.get(tenant, (float("-inf"), {}))
        if now - fetched_at < self.refresh_s:
            return current
        try:
            raw = self._redis().hgetall(REDIS_KEY.format(tenant=tenant))
            fresh = {_text(k): _text(v) for k, v in raw.items() if _SAFE_PATH.match(_text(k))}
        except Exception as error:  # redis is optional: keep the last copy
            log.warning("templates of tenant %r not read from Redis: %s", tenant, error)
            fresh = current
        self._snapshots[tenant] = (now, current if fresh == current else fresh)
        return self._snapshots[tenant][1]

    def forget(self, tenant: str | None = None) -> None:
        """Re-read ``tenant`` (or every tenant) on next use."""
        if tenant is None:
            self._snapshots.clear()
        else:
            self._snapshots.pop(tenant, None)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Loader(jinja2.BaseLoader):
    """``tenant\\0path`` from the tenant's Redis copy, else the directory; caches compiled
    templates by name, each with its globals flattened once into a dict (Jinja otherwise
    merges a ``ChainMap`` of globals into every render's context)."""

    def __init__(self, store: TemplateStore) -> None:
        self.store = store
        self.compiled: dict[str, tuple[jinja2.Template, dict[str, Any]]] = {}

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        tenant, _, path = template.partition(_SEP)
        if not _SAFE_PATH.match(path):
            raise jinja2.TemplateNotFound(path)
        if tenant and self.store.redis and path in (snap := self.store.redis.snapshot(tenant)):
            return snap[path], f"redis:{tenant}:{path}", lambda: True
        file = self.store.files().get(path)
        if file is None:
            raise jinja2.TemplateNotFound(path)
        return file.read_text(encoding="utf-8"), path, lambda: True

    def load(self, environment: jinja2.Environment, name: str, globals: Any = None) -> Any:
        found = self.compiled.get(name)
        if found is None:
            template = super().load(environment, name, globals)
            found = self.compiled[name] = (template, dict(template.globals))
        return found[0]


class _Index(dict):
    """``(name, channel, locale, part)`` → relative path, and the ``resolve`` answers made
    from it (``(name, channel, locale)`` → part → path)."""

    __slots__ = ("resolved",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.resolved: dict[tuple[str, str, str | None], dict[str, str]] = {}


class TemplateStore:
    """Templates from ``directory`` (default: built-in), optionally shadowed per tenant by Redis.

    ``render`` may block on Redis (one read per tenant per ``refresh_s``) and on file reads the
    first time a template is used.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        redis: RedisTemplates | None = None,
        default_locale: str = DEFAULT_LOCALE,
        limits: ContentLimits | None = None,
        max_output_chars: int = MAX_OUTPUT_CHARS,
    ) -> None:
        self.directory = directory or BUILTIN_TEMPLATES
        self.redis, self.default_locale = redis, default_locale
        self.limits = limits or ContentLimits()
        self.max_output_chars = max_output_chars
        self._loader = _Loader(self)
        self.env = _Sandbox(
            loader=self._loader,
            undefined=jinja2.StrictUndefined,
            autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
            cache_size=0,  # the loader caches, per tenant and path
            auto_reload=False,
        )
        self.env.globals.pop("lipsum", None)
        self.env.globals["range"] = _limited_range
        self._files: dict[str, Path] | None = None
        self._indexes: dict[str, _Index] = {}
        self._seen: dict[str, dict[str, str]] = {}

    def files(self) -> dict[str, Path]:
        """The directory's template files by relative path (scanned once)."""
        if self._files is None:
            self._files = scan_directory(self.directory) if self.directory.is_dir() else {}
        return self._files

    def invalidate(self, tenant: str | None = None) -> None:
        """Drop cached lookups and compiled templates of ``tenant`` (None: everything)."""
        if tenant is None:
            self._files = None
            self._indexes.clear()
            self._seen.clear()
            self._loader.compiled.clear()
        else:
            self._forget(tenant)
            self._seen.pop(tenant, None)
        if self.redis:
            self.redis.forget(tenant)

    def _forget(self, tenant: str) -> None:
        self._indexes.pop(tenant, None)
        for name in [n for n in self._loader.compiled if n.startswith(tenant + _SEP)]:
            del self._loader.compiled[name]

    def _prefix(self, tenant: str) -> str:
        """``tenant`` when it has Redis templates (refreshing them), else "" (directory only)."""
        if not self.redis or not tenant:
            return ""
        snapshot = self.redis.snapshot(tenant)
        if self._seen.get(tenant) is not snapshot:
            self._forget(tenant)
            self._seen[tenant] = snapshot
        return tenant if snapshot else ""

    def index(self, tenant: str = "") -> _Index:
        """``(name, channel, locale, part)`` → relative path, Redis shadowing the directory."""
        prefix = self._prefix(tenant)
        if prefix not in self._indexes:
            paths: Iterable[str] = self.files()
            if prefix and self.redis:
                paths = [*paths, *self.redis.snapshot(prefix)]
            self._indexes[prefix] = _Index((key, p) for p in paths if (key := parse_path(p)))
        return self._indexes[prefix]

    def resolve(self, tenant: str, name: str, channel: str, locale: str | None) -> dict[str, str]:
        """Part → relative path of the first variant in lookup order; raises TemplateMissing.
        The answer is remembered with the index it came from (a new index, a new memo)."""
        index = self.index(tenant)
        found = index.resolved.get((name, channel, locale))
        if found is not None:
            return found
        chain = locale_chain(locale, self.default_locale)
        if _NAME.match(name) and ".." not in name:
            for variant in (channel, ANY_CHANNEL):
                for loc in chain:
                    if (name, variant, loc, "text") in index:
                        parts = PARTS.get(channel, DEFAULT_PARTS)
                        keys = {part: (name, variant, loc, part) for part in parts}
                        found = {part: index[key] for part, key in keys.items() if key in index}
                        if len(index.resolved) >= _RESOLVED_MAX:
                            index.resolved.clear()
                        index.resolved[(name, channel, locale)] = found
                        return found
        tried = ", ".join(loc or "(none)" for loc in chain)
        raise TemplateMissing(
            f"no template {name!r} for channel {channel!r} or {ANY_CHANNEL}; locales tried: {tried}"
        )

    def render_file(self, tenant: str, path: str, context: Mapping[str, Any]) -> str:
        """One template file rendered; raises TemplateRenderError naming it."""
        origin, out, size = path, [], 0
        try:
            template, flat_globals = self._compiled(f"{self._prefix(tenant)}{_SEP}{path}")
            origin = template.filename or path  # "redis:<tenant>:<path>" when from Redis
            # What Template.generate does, minus walking the globals' ChainMap per render.
            ctx = self.env.context_class(
                self.env,
                {**flat_globals, **context},
                template.name,
                template.blocks,
                globals=flat_globals,
            )
            for chunk in template.root_render_func(ctx):
                size += len(chunk)
                if size > self.max_output_chars:
                    raise SecurityError(f"output exceeds {self.max_output_chars} characters")
                out.append(chunk)
        except jinja2.TemplateSyntaxError as error:
            where = f"{error.filename or path}:{error.lineno}"
            raise TemplateRenderError(f"template {where}: syntax error: {error.message}") from None
        except SecurityError as error:
            raise TemplateRenderError(
                f"template {origin}: blocked by the sandbox: {error}"
            ) from None
        except Exception as error:  # template code failed: the template's error
            kind = type(error).__name__
            raise TemplateRenderError(f"template {origin}: {kind}: {error}") from None
        return "".join(out)

    def _compiled(self, name: str) -> tuple[jinja2.Template, dict[str, Any]]:
        """The loader's cached template and flat globals (compiled through Jinja first)."""
        ready = self._loader.compiled.get(name)
        if ready is None:
            self.env.get_template(name)  # compiles through the loader, which caches it
            ready = self._loader.compiled[name]
        return ready

    def render(self, note: Mapping[str, Any], channel: str) -> RenderedContent:
        """Every part of ``note``'s template for ``channel``, validated (all or nothing)."""
        context = render_context(note)
        name = note.get("template") or note["category"]
        tenant = note["tenant_id"]
        paths = self.resolve(tenant, name, channel, context["user"].get("locale"))
        parts = {part: self.render_file(tenant, path, context) for part, path in paths.items()}
        content = RenderedContent(
            text=parts["text"],
            subject=parts.get("subject"),
            html=parts.get("html"),
            title=parts.get("title"),
            data=dict(note.get("data") or {}),
        )
        return validate(channel, content, self.limits)


def check_sources(sources: Mapping[str, str]) -> None:
    """Raise TemplateRenderError for the first unsafe path or syntax error in ``sources``."""
    env = _Sandbox()
    for path, source in sources.items():
        if not _SAFE_PATH.match(path):
            raise TemplateRenderError(f"template {path}: not a safe relative path ending .j2")
        try:
            env.parse(source, path, path)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateRenderError(
                f"template {path}:{error.lineno}: syntax error: {error.message}"
            ) from None


def load_directory_into_redis(
    client: Any, tenant: str, directory: Path, *, replace: bool = True
) -> int:
    """Copy ``directory``'s templates into the tenant's hash (atomically replacing it unless
    ``replace`` is False); every file is syntax-checked first. Returns how many."""
    sources = {p: f.read_text(encoding="utf-8") for p, f in scan_directory(directory).items()}
    check_sources(sources)
    key = REDIS_KEY.format(tenant=tenant)
    pipe = client.pipeline(transaction=True)
    if replace:
        pipe.delete(key)
    if sources:
        pipe.hset(key, mapping=sources)
    pipe.execute()
    return len(sources)
