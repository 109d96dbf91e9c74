"""A/B experiments: deterministic, weighted, balanced assignment and per-variant overrides."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.events import note_event
from operators.experiments import (
    Experiment,
    ExperimentBook,
    Variant,
    apply_experiments,
    assign,
    bucket_point,
)
from tests.operators.test_user_pipeline import T0, note

BOOK = {
    "experiments": [
        {
            "name": "welcome-copy",
            "tenants": ["acme"],
            "categories": ["orders"],
            "variants": [
                {"name": "control", "weight": 50},
                {"name": "v2", "weight": 50, "template": "welcome_v2"},
            ],
        },
        {
            "name": "channel-strategy",
            "variants": [
                {"name": "static", "weight": 1, "strategy": "immediate"},
                {"name": "smart", "weight": 1, "strategy": "smart"},
            ],
        },
    ]
}


def templated(**overrides) -> dict:
    return note(template="welcome", content=None, **overrides)


def test_book_parses_and_rejects_bad_config():
    book = ExperimentBook.from_dict(BOOK)
    assert [e.name for e in book.experiments] == ["welcome-copy", "channel-strategy"]
    assert book.experiments[0].tenants == {"acme"}
    assert ExperimentBook.from_dict(None).experiments == ()
    bad = [
        {"experiments": [{"name": "x", "variants": []}]},
        {"experiments": [{"name": "x", "variants": [{"name": "a", "weight": 0}]}]},
        {"experiments": [{"name": "x:y", "variants": [{"name": "a"}]}]},
        {"experiments": [{"name": "x", "variants": [{"name": "a"}, {"name": "a"}]}]},
        {"experiments": [{"name": "x", "variants": [{"name": "a", "strategy": "loud"}]}]},
        {"experiments": [{"name": "x", "variants": [{"name": "a", "colour": "red"}]}]},
        {"experiments": [{"name": "x", "variants": [{"name": "a"}], "owner": "me"}]},
        {"experiments": [{"name": "x", "variants": [{"name": "a"}]}] * 2},
        {"tests": []},
    ]
    for config in bad:
        with pytest.raises(ValueError):
            ExperimentBook.from_dict(config)


def test_assignment_is_stable_across_processes():
    # A golden value: a change in hashing would silently reshuffle running experiments.
    assert bucket_point("welcome-copy", "acme", "u1") == pytest.approx(0.3579434706)
    experiment = ExperimentBook.from_dict(BOOK).experiments[0]
    assert [assign(experiment, "acme", f"u{i}").name for i in range(8)] == GOLDEN


GOLDEN = ["control", "control", "v2", "v2", "control", "v2", "control", "control"]


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_assignment_is_a_pure_function_of_experiment_tenant_and_user(name, tenant, user):
    experiment = Experiment(
        name.replace(":", "_"), (Variant("a", 1), Variant("b", 2), Variant("c", 0.5))
    )
    first = assign(experiment, tenant, user)
    assert assign(experiment, tenant, user) == first
    assert 0 <= bucket_point(experiment.name, tenant, user) < 1


def test_fifty_fifty_is_balanced_within_one_percent_over_100k_users():
    experiment = Experiment("balance", (Variant("A", 50), Variant("B", 50)))
    counts = Counter(assign(experiment, "acme", f"user-{i}").name for i in range(100_000))
    assert abs(counts["A"] / 100_000 - 0.5) < 0.01, counts


def test_weights_are_honoured_and_zero_weight_variants_never_chosen():
    experiment = Experiment(
        "weights", (Variant("a", 70), Variant("off", 0), Variant("b", 20), Variant("c", 10))
    )
    counts = Counter(assign(experiment, "acme", f"user-{i}").name for i in range(100_000))
    assert counts["off"] == 0
    for name, share in (("a", 0.7), ("b", 0.2), ("c", 0.1)):
        assert abs(counts[name] / 100_000 - share) < 0.01, counts


def test_experiments_are_independent_of_each_other():
    one = Experiment("one", (Variant("A", 1), Variant("B", 1)))
    two = Experiment("two", (Variant("A", 1), Variant("B", 1)))
    pairs = Counter(
        (assign(one, "t", f"u{i}").name, assign(two, "t", f"u{i}").name) for i in range(40_000)
    )
    assert all(abs(count / 40_000 - 0.25) < 0.01 for count in pairs.values()), pairs


def test_apply_records_the_variant_and_overrides_template():
    book = ExperimentBook.from_dict(BOOK)
    original = templated()
    applied = apply_experiments(original, book)
    variant = assign(book.experiments[0], "acme", "u1")
    assert applied["metadata"]["variant"] == f"welcome-copy:{variant.name}"
    assert applied["template"] == (variant.template or "welcome")
    assert original["metadata"] == {}  # the input note is not modified
    event = note_event(applied, "accepted", T0 * 1000)
    assert event["variant"] == applied["metadata"]["variant"]


def test_apply_overrides_strategy_and_takes_only_the_first_matching_experiment():
    book = ExperimentBook.from_dict(BOOK)
    applied = apply_experiments(note(tenant_id="globex"), book)  # outside welcome-copy's scope
    variant = assign(book.experiments[1], "globex", "u1")
    assert applied["metadata"]["variant"] == f"channel-strategy:{variant.name}"
    assert applied["strategy"] == variant.strategy


def test_enrolment_rules():
    book = ExperimentBook.from_dict(BOOK)
    # inline content: not enrolled in the template experiment; falls to the strategy one
    assert apply_experiments(note(), book)["metadata"]["variant"].startswith("channel-strategy:")
    # an explicit strategy and inline content: no experiment applies
    assert apply_experiments(note(strategy="cost"), book)["metadata"] == {}
    # a variant set by the producer wins
    preset = templated(metadata={"variant": "campaign:B"})
    assert apply_experiments(preset, book) is preset
    inactive = ExperimentBook((Experiment("off", (Variant("A", 1),), active=False),))
    assert apply_experiments(templated(), inactive)["metadata"] == {}
    assert apply_experiments(templated(), ExperimentBook()) is not None


def test_the_same_user_gets_the_same_variant_on_every_notification():
    book = ExperimentBook.from_dict(BOOK)
    variants = {
        apply_experiments(templated(id=f"n{i}"), book)["metadata"]["variant"] for i in range(50)
    }
    assert len(variants) == 1
