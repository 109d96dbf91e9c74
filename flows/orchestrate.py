"""The orchestration dataflow: requests → per-user decisions → deliveries → events.

Run: ``python -m bytewax.run "flows.orchestrate:build_flow()"`` (``notiflow run`` does this,
with ``-i/-a`` for several processes). Wiring only: decisions are in ``operators/``, sends in
``connectors/``, Bytewax adapters in ``flows/logic.py`` and ``flows/steps.py``.
"""

from __future__ import annotations

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow

from connectors.base import Delivery
from flows.enrich import (
    Enricher,
    ProfileUpdater,
    ReleaseRecheck,
    feedback_event,
    wants_feedback,
)
from flows.logic import CampaignLogic, UserLogic
from flows.steps import (
    Deliverer,
    Parser,
    Planner,
    encode_dead_letter,
    encode_events,
    encode_rejection,
    rejection_event,
)
from notiflow.kafka.sink import KafkaProducerSink
from notiflow.kafka.source import KafkaRecordSource
from notiflow.runtime import init_process, snapshots_discarded
from notiflow.segments import segment_fetchers
from notiflow.settings import Settings, StartOffset, get_settings
from operators.campaign import CampaignSplitter
from operators.parse import Campaign
from operators.rate_limit import PolicyBook
from operators.strategy import StrategyConfig, StrategyEngine
from operators.user_pipeline import PipelineConfig, UserPipeline


def user_pipeline(s: Settings) -> UserPipeline:
    config = PipelineConfig(
        idempotency_window_s=s.dedup_window_seconds,
        content_window_s=s.content_dedup_window_seconds,
        critical_skips_content_dedup=s.critical_skips_content_dedup,
        default_timezone=s.default_timezone,
        default_quiet_hours=s.default_quiet_hours,
        max_held=s.max_held_per_user,
    )
    return UserPipeline(config, PolicyBook.from_dict(orjson.loads(s.rate_limits)))


def build_flow(settings: Settings | None = None) -> Dataflow:
    s = settings or get_settings()
    init_process("orchestrate", s)
    kafka = s.kafka_config()
    pipeline = user_pipeline(s)
    strategy = StrategyEngine(
        StrategyConfig.from_dict(orjson.loads(s.strategies)),
        default_quiet_hours=s.default_quiet_hours,
    )
    splitter = CampaignSplitter(s.campaign_chunk_size)
    segments = segment_fetchers(s.redis_url)
    flow = Dataflow("notiflow_orchestrate")

    records = op.input(
        "requests",
        flow,
        KafkaRecordSource(
            kafka,
            s.requests_topic,
            s.start_offset.value,
            s.source_batch_size,
            linger_ms=s.source_linger_ms,
        ),
    )  # Record | SourceError
    parsed = op.flat_map_batch("parse", records, Parser(s))
    # notification dict | Campaign | Rejection
    notes = op.branch("split_notes", parsed, lambda item: isinstance(item, dict))
    others = op.branch("split_campaigns", notes.falses, lambda item: isinstance(item, Campaign))
    campaigns = op.key_on(
        "key_by_campaign",
        others.trues,
        lambda c: f"{c.body['tenant_id']}/{c.body['campaign_id']}",
    )  # (tenant/campaign, Campaign)
    split = op.stateful(
        "split_campaign", campaigns, lambda snap: CampaignLogic(splitter, segments, snap)
    )  # (tenant/campaign, notification dict) — a chunk per activation
    all_notes = op.merge(
        "all_notes", notes.trues, op.map("drop_campaign_key", split, lambda kv: kv[1])
    )
    enriched = op.flat_map_batch("enrich", all_notes, Enricher(s))
    # notification dict (profile merged, eligible channels) | suppressed event dict
    usable = op.branch("split_suppressed", enriched, lambda item: "event_id" not in item)
    keyed = op.key_on("key_by_user", usable.trues, lambda note: note["key"])
    # (tenant/user, notification dict)
    if s.strategy_feedback:  # this user's delivery events and receipts, read back
        feedback = op.input(
            "feedback",
            flow,
            KafkaRecordSource(
                kafka, s.events_topic, StartOffset.LATEST, s.source_batch_size, wants_feedback
            ),
        )
        keyed = op.merge(
            "user_inputs",
            keyed,
            op.flat_map("feedback_events", feedback, feedback_event),
        )  # (tenant/user, notification dict | event dict)
    keep = not snapshots_discarded(s)  # no pickling of user state that nobody stores
    decided = op.stateful(
        "user_pipeline",
        keyed,
        lambda snap: UserLogic(pipeline, strategy, snap, keep_snapshots=keep),
    )
    if s.redis_url:  # preferences again for what was held: a later opt-out wins
        decided = op.flat_map_batch("recheck_preferences", decided, ReleaseRecheck(s))
    # (tenant/user, event dict | Release)
    planned = op.flat_map_batch("plan", decided, Planner(s).plan_batch)
    # event dict | DeadLetter | Delivery
    deliveries = op.branch("split_deliveries", planned, lambda x: type(x) is Delivery)
    delivered = op.flat_map_batch("deliver", deliveries.trues, Deliverer(s))
    outcomes = op.merge("outcomes", deliveries.falses, delivered)  # event dict | DeadLetter
    by_type = op.branch("split_dead_letters", outcomes, lambda item: isinstance(item, dict))

    rejected = others.falses  # Rejection
    events = op.merge(
        "all_events",
        by_type.trues,
        usable.falses,
        op.map("reject_event", rejected, rejection_event),
    )
    op.output(
        "events_out",
        op.flat_map_batch("encode_events", events, encode_events),
        KafkaProducerSink(kafka, s.events_topic, s.producer_linger_ms),
    )
    dead = op.merge(
        "all_dead_letters",
        op.map("encode_dead_letters", by_type.falses, encode_dead_letter),
        op.map("encode_rejections", rejected, encode_rejection),
    )  # OutMessage
    if s.redis_url:  # services change profiles and preferences through Kafka too
        updates = op.input(
            "profile_updates",
            flow,
            KafkaRecordSource(
                kafka, s.profile_updates_topic, s.start_offset.value, s.source_batch_size
            ),
        )
        bad_updates = op.flat_map_batch("apply_profile_updates", updates, ProfileUpdater(s))
        dead = op.merge(
            "dead_letters", dead, op.map("encode_bad_updates", bad_updates, encode_rejection)
        )
    op.output("dlq_out", dead, KafkaProducerSink(kafka, s.dlq_topic, s.producer_linger_ms))
    return flow
