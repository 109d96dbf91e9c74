"""Render the configuration reference (docs/configuration.md) from ``Settings``."""

from __future__ import annotations

from pydantic import AliasChoices

from notiflow.settings import KAFKA_OPTION_PREFIX, Settings


def _variable(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return " / ".join(f"`{choice}`" for choice in alias.choices)
    return f"`NOTIFLOW_{name.upper()}`"


def render_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `notiflow/settings.py` by `notiflow config --markdown`; a test fails",
        "when this file and the settings drift. Every variable can also go in a `.env` file.",
        "",
        "| variable | default | description |",
        "| --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{getattr(default, 'value', default)}`"
        lines.append(f"| {_variable(name)} | {shown} | {field.description or ''} |")
    lines += [
        "",
        f"Any librdkafka property: `{KAFKA_OPTION_PREFIX}<NAME>` with dots as underscores,",
        f"e.g. `{KAFKA_OPTION_PREFIX}SASL_MECHANISMS=PLAIN` sets `sasl.mechanisms`;",
        "or list them in the file named by `NOTIFLOW_KAFKA_CONFIG_FILE`.",
        "",
    ]
    return "\n".join(lines)
