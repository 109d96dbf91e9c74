"""Twilio Programmable Voice: a text-to-speech call, ``POST .../Calls.json`` with inline TwiML.

The TwiML is ``<Response><Say language="..">text</Say></Response>``; the language comes from
``delivery.metadata["locale"]`` (see ``say_language``). Transport and error classification are
shared with the SMS connector (``connectors.sms.twilio.TwilioRestClient``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar
from xml.sax.saxutils import escape, quoteattr

from connectors.base import Connector, Delivery, InvalidRequest, SendResult
from connectors.sms.twilio import TwilioRestClient

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["TwilioVoiceConnector", "say_language"]

log = logging.getLogger(__name__)

#: Languages Twilio's <Say> speaks, and the default variant for a bare language code.
SAY_LANGUAGES: Mapping[str, str] = {
    "ca": "ca-ES",
    "da": "da-DK",
    "de": "de-DE",
    "en": "en-US",
    "es": "es-ES",
    "fi": "fi-FI",
    "fr": "fr-FR",
    "it": "it-IT",
    "ja": "ja-JP",
    "ko": "ko-KR",
    "nb": "nb-NO",
    "no": "nb-NO",
    "nl": "nl-NL",
    "pl": "pl-PL",
    "pt": "pt-BR",
    "ru": "ru-RU",
    "sv": "sv-SE",
    "zh": "zh-CN",
}
SAY_VARIANTS: frozenset[str] = frozenset(
    {*SAY_LANGUAGES.values(), "en-AU", "en-CA", "en-GB", "en-IN", "es-MX", "fr-CA", "pt-PT"}
    | {"zh-HK", "zh-TW"}
)
DEFAULT_LANGUAGE = "en-US"
#: Characters XML 1.0 cannot carry at all (everything below 0x20 but tab, LF and CR).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def say_language(locale: str | None) -> str:
    """Twilio <Say> language for a locale: exact variant, else the language's default, else
    ``en-US``. ``"de"`` → ``de-DE``, ``"pt_BR"`` → ``pt-BR``, ``"en-NZ"`` → ``en-US``."""
    if not locale:
        return DEFAULT_LANGUAGE
    parts = locale.replace("_", "-").split("-")
    language = parts[0].lower()
    if len(parts) > 1:
        variant = f"{language}-{parts[1].upper()}"
        if variant in SAY_VARIANTS:
            return variant
    return SAY_LANGUAGES.get(language, DEFAULT_LANGUAGE)


class TwilioVoiceConnector(Connector):
    """Calls ``delivery.address`` from ``sender`` and reads ``delivery.body`` aloud.

    ``cost_usd`` is an estimate: minutes of speech at ``SPEECH_CHARS_PER_MINUTE``, rounded up,
    × ``PRICE_PER_MINUTE_USD`` (the call's real length and price are known only afterwards).
    """

    channel: ClassVar[str] = "voice"
    provider: ClassVar[str] = "twilio"

    #: Longest text read aloud; longer deliveries are refused (InvalidRequest).
    MAX_TEXT_CHARS: ClassVar[int] = 3000
    #: Twilio's limit on the ``Twiml`` parameter.
    MAX_TWIML_CHARS: ClassVar[int] = 4000
    #: Estimated US outbound price per started minute (USD).
    PRICE_PER_MINUTE_USD: ClassVar[float] = 0.014
    #: About 150 spoken words a minute.
    SPEECH_CHARS_PER_MINUTE: ClassVar[int] = 900

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        sender: str,
        base_url: str = TwilioRestClient.DEFAULT_BASE_URL,
        timeout: float = TwilioRestClient.DEFAULT_TIMEOUT_S,
        max_connections: int = TwilioRestClient.DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not sender:
            raise ValueError("a sender (caller id) number is required for calls")
        self.sender = sender
        self.client = TwilioRestClient(
            account_sid,
            auth_token,
            base_url=base_url,
            timeout=timeout,
            max_connections=max_connections,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioVoiceConnector:
        return cls(
            settings.twilio_account_sid or "",
            settings.twilio_auth_token or "",
            sender=settings.twilio_from or "",
            base_url=settings.twilio_base_url,
            max_connections=max(settings.delivery_concurrency, 1),
        )

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    @classmethod
    def twiml(cls, text: str, language: str = DEFAULT_LANGUAGE) -> str:
        """``<Response><Say language="..">text</Say></Response>`` with ``text`` escaped."""
        if not text.strip():
            raise InvalidRequest("empty_body")
        if len(text) > cls.MAX_TEXT_CHARS:
            raise InvalidRequest(f"text_too_long: {len(text)} > {cls.MAX_TEXT_CHARS}")
        spoken = escape(_XML_INVALID.sub(" ", text))
        twiml = f"<Response><Say language={quoteattr(language)}>{spoken}</Say></Response>"
        if len(twiml) > cls.MAX_TWIML_CHARS:
            raise InvalidRequest(f"twiml_too_long: {len(twiml)} > {cls.MAX_TWIML_CHARS}")
        return twiml

    def form(self, delivery: Delivery) -> dict[str, str]:
        """The form fields POSTed for ``delivery``."""
        return self._form(delivery, say_language(delivery.metadata.get("locale")))

    def _form(self, delivery: Delivery, language: str) -> dict[str, str]:
        if not delivery.address:
            raise InvalidRequest("missing_address")
        twiml = self.twiml(delivery.body, language)
        return {"To": delivery.address, "From": self.sender, "Twiml": twiml}

    async def send(self, delivery: Delivery) -> SendResult:
        language = say_language(delivery.metadata.get("locale"))
        call = await self.client.create("Calls", self._form(delivery, language))
        minutes = max(1, math.ceil(len(delivery.body) / self.SPEECH_CHARS_PER_MINUTE))
        return SendResult(
            provider_message_id=call["sid"],
            cost_usd=round(minutes * self.PRICE_PER_MINUTE_USD, 8),
            detail={
                "language": language,
                "status": call.get("status"),
                "estimated_minutes": minutes,
            },
        )

    def __repr__(self) -> str:
        return f"TwilioVoiceConnector(account_sid={self.client.account_sid!r})"
