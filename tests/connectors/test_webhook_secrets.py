"""Per-endpoint webhook signing secrets, and cost estimates on every sent event."""

from __future__ import annotations

from connectors.dispatch import Dispatcher
from connectors.retry import RetryPolicy
from connectors.webhook.standard import WebhookConnector, verify
from notiflow.devservices import WebhookReceiver
from notiflow.settings import Settings

DEFAULT = "whsec_ZGVmYXVsdC1zZWNyZXQtZm9yLXRlc3Rz"
ACME = "whsec_YWNtZS1lbmRwb2ludC1zZWNyZXQtMTIz"
ORIGIN = "whsec_b3JpZ2luLXNlY3JldC1mb3ItdGVzdHM="


def test_each_endpoint_is_signed_with_its_own_secret(run, make_delivery):
    with WebhookReceiver() as receiver:
        origin = receiver.url("/").rstrip("/")
        connector = WebhookConnector(
            DEFAULT,
            endpoint_secrets={receiver.url("/acme"): ACME, "tenant-b": ACME, origin: ORIGIN},
        )
        deliveries = [
            make_delivery(channel="webhook", address=receiver.url("/acme")),  # exact URL
            make_delivery(channel="webhook", address=receiver.url("/other")),  # origin
        ]
        dispatcher = Dispatcher({"webhook": connector}, RetryPolicy(max_attempts=1))

        async def go():
            try:
                return await dispatcher.deliver(deliveries)
            finally:
                await dispatcher.close()

        result = run(go())
        received = {r.path: r for r in receiver.received}
    assert [e["status"] for e in result.events] == ["sent", "sent"]
    assert verify(ACME, received["/acme"].headers, received["/acme"].body)
    assert not verify(DEFAULT, received["/acme"].headers, received["/acme"].body)
    assert verify(ORIGIN, received["/other"].headers, received["/other"].body)
    assert all(e.get("cost_usd") is None for e in result.events)  # no cost table given


def test_tenant_secret_and_cost_from_settings(run, make_delivery, monkeypatch):
    monkeypatch.setenv("NOTIFLOW_WEBHOOK_ENDPOINT_SECRETS", f'{{"tenant-b": "{ACME}"}}')
    from connectors.registry import build_connectors

    connectors = {c.provider: c for c in build_connectors(Settings())}
    webhook = connectors["webhook"]
    assert webhook.cost_per_message == 0 and connectors["smtp"].cost_per_message == 0.0001
    delivery = make_delivery(
        channel="webhook", address="https://hooks.example/x", tenant_id="tenant-b"
    )
    assert webhook.secret_for(delivery) == ACME
    other = make_delivery(channel="webhook", address="https://hooks.example/x")
    assert webhook.secret_for(other) == Settings().webhook_secret
