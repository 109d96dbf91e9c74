"""PushRouter over the three platform connectors and their local services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.base import (
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
    TokenInvalid,
)
from connectors.push.apns import ApnsConnector
from connectors.push.fcm import FcmConnector
from connectors.push.router import PushRouter
from connectors.push.webpush import WebPushConnector, b64url_encode
from notiflow.devservices.apns_api import ApnsApi
from notiflow.devservices.fcm_api import FcmApi
from notiflow.devservices.webpush_api import WebPushApi
from notiflow.settings import Settings
from tests.connectors.harness import batch

FCM_TOKEN = "fcm-registration-token:APA91bXYZ"
APNS_TOKEN = "b2" * 32


@pytest.fixture
def services() -> Iterator[tuple[FcmApi, ApnsApi, WebPushApi]]:
    with FcmApi() as fcm, ApnsApi() as apns, WebPushApi() as webpush:
        yield fcm, apns, webpush


@pytest.fixture
def router(services: tuple[FcmApi, ApnsApi, WebPushApi]) -> PushRouter:
    fcm, apns, _ = services
    return PushRouter(
        {
            "fcm": FcmConnector("notiflow-test", fcm.credentials(), base_url=fcm.base_url),
            "apns": ApnsConnector(
                apns.generate_key(),
                "KEY0000001",
                apns.team_id,
                apns.topic,
                base_url=apns.base_url,
                verify=apns.ca_file,
            ),
            "webpush": WebPushConnector(ec.generate_private_key(ec.SECP256R1()), "mailto:a@b.c"),
        }
    )


@pytest.fixture
def push(make_delivery: Callable[..., Delivery]) -> Callable[[str], Delivery]:
    def factory(address: str, **overrides: Any) -> Delivery:
        return make_delivery(channel="push", address=address, **overrides)

    return factory


async def _one(router: PushRouter, delivery: Delivery) -> Any:
    await router.open()
    try:
        return await router.send(delivery)
    except Exception as error:
        return error
    finally:
        await router.close()


def test_each_address_goes_to_its_platform_and_results_name_it(run, services, router, push):
    fcm, apns, webpush = services
    subscription = WebPushApi.address(webpush.subscribe())
    addresses = [f"fcm:{FCM_TOKEN}", f"apns:{APNS_TOKEN}", subscription] * 3
    outcomes = run(batch(router, *(push(a) for a in addresses), concurrency=4))
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert [o.detail["provider"] for o in outcomes] == ["fcm", "apns", "webpush"] * 3
    assert (fcm.count, apns.count, len(webpush.messages)) == (3, 3, 3)
    assert {m["token"] for m in fcm.messages} == {FCM_TOKEN}
    assert {r.device_token for r in apns.received} == {APNS_TOKEN}


def test_single_send_is_routed_too(run, services, router, push):
    result = run(_one(router, push(f"apns:{APNS_TOKEN}")))
    assert isinstance(result, SendResult) and result.detail == {"status": 200, "provider": "apns"}


def test_errors_carry_the_platform_and_keep_their_class(run, services, router, push):
    fcm, apns, _ = services
    fcm.kill_token(FCM_TOKEN)
    apns.throttle(4)
    outcomes = run(
        batch(router, push(f"fcm:{FCM_TOKEN}"), push(f"apns:{APNS_TOKEN}"), concurrency=4)
    )
    dead, throttled = outcomes
    assert isinstance(dead, TokenInvalid) and dead.reason.startswith("fcm: UNREGISTERED")
    assert dead.provider == "fcm"
    assert isinstance(throttled, RetryableError) and throttled.retry_after == 4
    assert throttled.reason == "apns: TooManyRequests" and throttled.provider == "apns"
    single = run(_one(router, push(f"fcm:{FCM_TOKEN}")))
    assert isinstance(single, TokenInvalid) and single.reason.startswith("fcm: ")


def test_unknown_prefix_and_unconfigured_platform(run, services, push):
    fcm, _, _ = services
    only_fcm = PushRouter(
        {"fcm": FcmConnector("notiflow-test", fcm.credentials(), base_url=fcm.base_url)}
    )
    outcomes = run(
        batch(
            only_fcm,
            push("sms:+15550100"),
            push("no-prefix"),
            push(f"apns:{APNS_TOKEN}"),
            push(f"fcm:{FCM_TOKEN}"),
            concurrency=4,
        )
    )
    assert type(outcomes[0]) is InvalidRequest and type(outcomes[1]) is InvalidRequest
    assert type(outcomes[2]) is PermanentError and outcomes[2].reason.startswith("apns: ")
    assert isinstance(outcomes[3], SendResult)
    with pytest.raises(ValueError, match="unknown push platforms"):
        PushRouter({"hms": only_fcm.connectors["fcm"]})


def test_from_settings_builds_the_configured_platforms(services, tmp_path: Path):
    fcm, apns, _ = services
    none = Settings(fcm_credentials_file=None, apns_key_file=None, webpush_vapid_private_key=None)
    assert PushRouter.from_settings(none).connectors == {}
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(apns.generate_key())
    vapid = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    settings = Settings(
        fcm_credentials_file=fcm.write_service_account(tmp_path / "sa.json"),
        apns_key_file=key_file,
        apns_key_id="KEY0000001",
        apns_team_id="TEAM000001",
        apns_topic="org.notiflow.app",
        webpush_vapid_private_key=b64url_encode(vapid.to_bytes(32, "big")),
    )
    router = PushRouter.from_settings(settings)
    assert sorted(router.connectors) == ["apns", "fcm", "webpush"]
    assert (router.channel, router.provider) == ("push", "push")
