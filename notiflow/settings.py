"""Typed settings, read from environment variables (and an optional ``.env`` file).

Every knob notiflow has is a field here: this class is the configuration reference.
``docs/configuration.md`` is generated from it (``notiflow config --markdown``) and a test
fails when the two drift. Variables use the ``NOTIFLOW_`` prefix, except the three service
locations that deployments conventionally set without one: ``KAFKA_BOOTSTRAP_SERVERS``,
``CLICKHOUSE_URL`` and ``REDIS_URL``.

Any librdkafka property can be passed through as ``NOTIFLOW_KAFKA_OPT_<NAME>`` where the
name is the property with dots replaced by underscores (``NOTIFLOW_KAFKA_OPT_SASL_MECHANISMS
=PLAIN`` sets ``sasl.mechanisms``), or from a Java-style properties file named by
``NOTIFLOW_KAFKA_CONFIG_FILE``.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

KAFKA_OPTION_PREFIX = "NOTIFLOW_KAFKA_OPT_"
#: Defaults: at most 3 SMS and 2 voice calls an hour, 10 pushes a day per user and category.
DEFAULT_RATE_LIMITS = (
    '{"default": {"action": "defer", "caps": ['
    '{"channel": "sms", "limit": 3, "window_s": 3600},'
    '{"channel": "voice", "limit": 2, "window_s": 3600},'
    '{"channel": "push", "limit": 10, "window_s": 86400}]}}'
)


class StartOffset(StrEnum):
    """Where a flow starts reading a partition that has no recovery snapshot."""

    EARLIEST = "earliest"
    LATEST = "latest"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


def _env(name: str) -> AliasChoices:
    """Accept both ``NAME`` and ``NOTIFLOW_NAME``."""
    return AliasChoices(name, f"NOTIFLOW_{name}")


class Settings(BaseSettings):
    """All notiflow configuration. Field descriptions double as the documentation."""

    model_config = SettingsConfigDict(
        env_prefix="NOTIFLOW_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers. Unset: start the embedded Tansu broker.",
    )
    kafka_config_file: Path | None = Field(
        None, description="Properties file (key=value lines) of extra librdkafka settings."
    )
    topic_prefix: str = Field("", description="Prefix for every topic name, e.g. 'prod.'.")
    partitions: int = Field(4, ge=1, description="Partitions for topics notiflow creates.")
    replication_factor: int = Field(1, ge=1, description="Replication for created topics.")
    create_topics: bool = Field(True, description="Create missing topics at start-up.")
    start_offset: StartOffset = Field(
        StartOffset.EARLIEST,
        description="Where to start a partition with no recovery snapshot.",
    )
    source_batch_size: int = Field(1000, ge=1, description="Max records per source poll.")
    source_linger_ms: float = Field(
        10.0,
        ge=0,
        description="Hold a partial poll of the requests topic up to this long for more "
        "records: fewer, larger batches at moderate rates (p99 at 1,000/s ~300 → ~165 ms "
        "here), at most this much added latency. 0: never hold.",
    )
    max_request_bytes: int = Field(
        64 * 1024, ge=256, description="Requests larger than this go to the DLQ."
    )
    producer_linger_ms: int = Field(5, ge=0, description="librdkafka linger.ms for outputs.")

    # --- Engine --------------------------------------------------------------------------
    processes: int = Field(1, ge=1, description="Orchestration processes (bytewax -i/-a).")
    cluster_base_port: int = Field(
        0, ge=0, description="First port for bytewax inter-process links (0: pick free)."
    )
    recovery_dir: Path | None = Field(
        None, description="Enable bytewax recovery with SQLite partitions in this directory."
    )
    snapshot_interval_seconds: int = Field(
        2,
        ge=1,
        description="Bytewax epoch: the recovery snapshot interval, also without recovery "
        "(whole seconds). Every key touched in an epoch is snapshotted at its end: shorter "
        "epochs, shorter pauses (latency tail) and less to replay after a crash.",
    )
    data_dir: Path = Field(Path(".notiflow"), description="Where embedded state is kept.")
    dedup_window_seconds: float = Field(
        24 * 3600, gt=0, description="How long a request id is remembered for idempotency."
    )
    content_dedup_window_seconds: float = Field(
        600, gt=0, description="Same user + dedup_key/content within this window is sent once."
    )
    critical_skips_content_dedup: bool = Field(
        True, description="Critical notifications are never merged by content dedup."
    )
    rate_limits: str = Field(
        DEFAULT_RATE_LIMITS,
        description="Fatigue caps as JSON (see docs/operators.md); per tenant and category.",
    )
    default_timezone: str = Field("UTC", description="Recipient timezone when none is known.")
    default_quiet_hours: str | None = Field(
        None, description="Quiet hours for recipients without their own, e.g. '22:00-07:00'."
    )
    max_held_per_user: int = Field(
        1000, ge=1, description="Held (scheduled/deferred/quiet) notifications kept per user."
    )
    campaign_chunk_size: int = Field(1000, ge=1, description="Users emitted per campaign step.")
    max_campaign_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Campaign requests larger than this go to the DLQ."
    )
    templates_dir: Path | None = Field(
        None,
        description="Templates directory, '<name>/<channel|_any>[.<locale>].<part>.j2' "
        "(docs/templates.md; default: built-in).",
    )
    default_locale: str = Field("en", description="Last locale tried before locale-less files.")
    sms_max_segments: int = Field(10, ge=1, description="Most SMS segments a message may take.")
    templates_refresh_seconds: float = Field(
        30.0, gt=0, description="How often each tenant's Redis templates are re-read."
    )

    # --- Users: profiles, preferences, strategies (docs/users.md, docs/strategies.md) -----
    profile_cache_ttl_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a user profile is cached in-process (0: no cache); updates "
        "invalidate it sooner.",
    )
    profile_cache_max_entries: int = Field(
        100_000, ge=1, description="Profiles cached per process (least recently used dropped)."
    )
    strategies: str = Field(
        '{"default": "immediate"}',
        description="Delivery strategies as JSON (docs/strategies.md): per tenant/category "
        "defaults, channel costs, sequential timeouts/order, smart, priority and engagement "
        "options.",
    )
    experiments: str = Field(
        '{"experiments": []}',
        description="A/B experiments as JSON (docs/strategies.md): weighted variants "
        "overriding template and/or strategy.",
    )
    strategy_feedback: bool = Field(
        True,
        description="Read the events topic back into the flow (sequential fallback and smart "
        "engagement need it); off: those strategies see no receipts.",
    )
    preference_policy: str = Field(
        "{}",
        description='Per-tenant preference rules, JSON {"*": {"consent_required": ["sms"]}, '
        '"acme": {"mandatory_categories": ["security"]}}.',
    )

    # --- Delivery ------------------------------------------------------------------------
    delivery_max_attempts: int = Field(3, ge=1, description="Attempts per delivery.")
    retry_base_delay_seconds: float = Field(0.2, ge=0, description="First retry backoff.")
    retry_max_delay_seconds: float = Field(5.0, ge=0, description="Backoff cap per retry.")
    delivery_concurrency: int = Field(64, ge=1, description="Concurrent sends per process.")
    delivery_batch_size: int = Field(
        500, ge=1, description="Most deliveries dispatched at once (larger batches are split)."
    )
    provider_costs: str = Field(
        '{"smtp": 0.0001, "sendgrid": 0.0006, "mailgun": 0.0008, "fcm": 0, "apns": 0, '
        '"webpush": 0, "push": 0, "redis_inbox": 0, "webhook": 0}',
        description="Estimated USD per message by provider, when the provider reports none.",
    )
    send_ledger: bool = Field(
        True, description="With Redis: never resend a delivery already sent (crash replays)."
    )
    ledger_in_flight: Literal["resend", "skip"] = Field(
        "resend",
        description="After a crash, a send whose outcome is unknown is resent (at-least-once) "
        "or skipped and reported failed (no duplicates).",
    )
    provider_limits: str = Field(
        "{}",
        description='Account-wide provider rates, JSON {"twilio": [rate_per_s, burst]} (Redis).',
    )

    smtp_host: str = Field("127.0.0.1", description="SMTP server host.")
    smtp_port: int = Field(1025, description="SMTP server port.")
    smtp_username: str | None = Field(None, description="SMTP AUTH user.")
    smtp_password: str | None = Field(None, description="SMTP AUTH password.")
    smtp_starttls: bool = Field(False, description="Upgrade with STARTTLS.")
    smtp_use_tls: bool = Field(False, description="Implicit TLS (port 465 style).")
    smtp_validate_certs: bool = Field(True, description="Verify the SMTP server certificate.")
    smtp_from: str = Field("notiflow <noreply@notiflow.local>", description="Envelope sender.")
    smtp_pool_size: int = Field(8, ge=1, description="Pooled SMTP connections per process.")
    smtp_timeout_seconds: float = Field(15.0, gt=0, description="SMTP operation timeout.")

    webhook_endpoint_secrets: str = Field(
        "{}",
        description='Per-endpoint signing secrets, JSON {"https://host": "whsec_..."} keyed by '
        "endpoint URL, origin or tenant id.",
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="Webhook request timeout.")
    webhook_secret: str = Field(
        "whsec_bm90aWZsb3ctZGV2LXNlY3JldA==",
        description="Standard Webhooks signing secret ('whsec_' + base64).",
    )

    # --- Providers (a connector is built only when its credentials are set) -------------
    providers: str = Field(
        "{}",
        description='Provider order per channel (failover), JSON {"default": {"sms": '
        '["twilio", "vonage"]}, "tenants": {"acme": {...}}}; see docs/connectors.md.',
    )
    twilio_account_sid: str | None = Field(None, description="Twilio Account SID (AC...).")
    twilio_auth_token: str | None = Field(None, description="Twilio auth token.")
    twilio_from: str | None = Field(None, description="Twilio sender number (E.164).")
    twilio_messaging_service_sid: str | None = Field(
        None, description="Twilio Messaging Service SID (MG...), instead of a From number."
    )
    twilio_status_callback_url: str | None = Field(
        None, description="URL Twilio posts delivery receipts to."
    )
    twilio_base_url: str = Field("https://api.twilio.com", description="Twilio API base URL.")
    vonage_api_key: str | None = Field(None, description="Vonage API key.")
    vonage_api_secret: str | None = Field(None, description="Vonage API secret.")
    vonage_from: str | None = Field(None, description="Vonage sender id or number.")
    vonage_base_url: str = Field("https://rest.nexmo.com", description="Vonage SMS API URL.")
    fcm_project_id: str | None = Field(None, description="Firebase project id.")
    fcm_credentials_file: Path | None = Field(
        None, description="Google service-account JSON for FCM."
    )
    fcm_base_url: str = Field("https://fcm.googleapis.com", description="FCM API base URL.")
    apns_key_file: Path | None = Field(None, description="APNs auth key (.p8, ES256).")
    apns_key_id: str | None = Field(None, description="APNs key id.")
    apns_team_id: str | None = Field(None, description="Apple developer team id.")
    apns_topic: str | None = Field(None, description="APNs topic (the app bundle id).")
    apns_base_url: str = Field("https://api.push.apple.com", description="APNs base URL.")
    apns_validate_certs: bool = Field(True, description="Verify the APNs TLS certificate.")
    webpush_vapid_private_key: str | None = Field(
        None, description="VAPID private key (PEM file path or base64url raw key)."
    )
    webpush_vapid_subject: str = Field(
        "mailto:ops@notiflow.local", description="VAPID subject (mailto: or https:)."
    )
    sendgrid_api_key: str | None = Field(None, description="SendGrid API key.")
    sendgrid_base_url: str = Field("https://api.sendgrid.com", description="SendGrid API URL.")
    mailgun_api_key: str | None = Field(None, description="Mailgun API key.")
    mailgun_domain: str | None = Field(None, description="Mailgun sending domain.")
    mailgun_base_url: str = Field("https://api.mailgun.net", description="Mailgun API URL.")
    inapp_max_messages: int = Field(
        1000, ge=1, description="In-app inbox length per user (older entries trimmed)."
    )

    # --- Analytics -----------------------------------------------------------------------
    clickhouse_url: str | None = Field(
        None,
        validation_alias=_env("CLICKHOUSE_URL"),
        description="ClickHouse DSN, e.g. http://user:pass@host:8123/db. Unset: embedded chDB.",
    )
    clickhouse_database: str = Field("notiflow", description="ClickHouse database.")
    analytics_batch_size: int = Field(50_000, ge=1, description="Max events per insert.")
    analytics_source_batch_size: int = Field(
        5_000,
        ge=1,
        description="Max events per poll of one events partition; each poll is parsed and "
        "checked as one Arrow table (larger is cheaper per event, ~0.5 ms per poll).",
    )
    analytics_allowed_lateness_seconds: float = Field(
        30.0,
        ge=0,
        description="Event-time lateness before a rollup minute closes; later "
        "events are merged in and counted.",
    )
    analytics_max_retry_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a failing ClickHouse write is retried before the "
        "analytics flow stops (it resumes from Kafka).",
    )
    analytics_retention_days: int | None = Field(
        None, ge=0, description="Days of raw events kept (TTL); 0 removes the TTL."
    )
    analytics_rollup_retention_days: int | None = Field(
        None, ge=0, description="Days of per-minute rollups kept (TTL); 0 removes the TTL."
    )
    analytics_flush_seconds: float = Field(0.5, gt=0, description="Max wait before an insert.")

    # --- Redis (rate limits, ledger, in-app, profiles) -----------------------------------
    redis_url: str | None = Field(
        None, validation_alias=_env("REDIS_URL"), description="Redis URL (later features)."
    )

    # --- Operations ----------------------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="Bind address of /metrics and /healthz.")
    metrics_port: int = Field(
        9400, ge=0, description="Port of the first process; process N uses port+N. 0: off."
    )
    gc_gen0_threshold: int = Field(
        50_000,
        ge=0,
        description="Allocations between young-generation garbage collections in the flow "
        "processes (Python's default 700; 0 keeps it).",
    )
    log_level: str = Field("INFO", description="Python log level.")
    log_format: LogFormat = Field(LogFormat.JSON, description="json (structured) or text.")

    # --- derived -----------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """Full topic name for ``requests``, ``events``, ``dlq`` or ``profile-updates``."""
        return f"{self.topic_prefix}notifications.{name}"

    @property
    def requests_topic(self) -> str:
        return self.topic("requests")

    @property
    def events_topic(self) -> str:
        return self.topic("events")

    @property
    def dlq_topic(self) -> str:
        return self.topic("dlq")

    @property
    def profile_updates_topic(self) -> str:
        return self.topic("profile-updates")

    @property
    def flow_topics(self) -> list[str]:
        """Every topic the orchestration flow reads or writes (created at start-up)."""
        return [self.requests_topic, self.events_topic, self.dlq_topic, self.profile_updates_topic]

    @property
    def clickhouse_dsn(self) -> str:
        """The configured server DSN, or the embedded chDB path under ``data_dir``."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    def kafka_config(self, **overrides: str | int | bool) -> dict[str, str | int | bool]:
        """librdkafka configuration: bootstrap + config file + pass-through env + overrides."""
        config: dict[str, str | int | bool] = {}
        if self.kafka_bootstrap_servers:
            config["bootstrap.servers"] = self.kafka_bootstrap_servers
        if self.kafka_config_file:
            config.update(read_properties(self.kafka_config_file))
        config.update(kafka_options_from_env(os.environ))
        config.update(overrides)
        return config


def read_properties(path: Path) -> dict[str, str]:
    """Parse a Java-style ``key=value`` properties file (``#`` comments)."""
    options: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: expected key=value, got {raw!r}")
        options[key.strip()] = value.strip()
    return options


def kafka_options_from_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """``NOTIFLOW_KAFKA_OPT_SASL_MECHANISMS=PLAIN`` → ``{"sasl.mechanisms": "PLAIN"}``."""
    return {
        key[len(KAFKA_OPTION_PREFIX) :].lower().replace("_", "."): value
        for key, value in environ.items()
        if key.startswith(KAFKA_OPTION_PREFIX)
    }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once from the environment."""
    return Settings()


def env_names() -> set[str]:
    """Every environment variable name the settings accept (for checking deploy files)."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        else:
            names.add(f"NOTIFLOW_{name.upper()}")
    return names
