"""Which providers serve a channel, in failover order, per tenant.

``NOTIFLOW_PROVIDERS`` (JSON) names provider chains: ``{"default": {"email": ["smtp",
"sendgrid"], "sms": ["twilio", "vonage"]}, "tenants": {"acme": {"sms": ["vonage"]}}}``. A
tenant's entry overrides the default for the channels it names. Channels not named use every
configured provider for that channel, in registration order. Providers named but not
configured (no credentials) are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import Connector


class ProviderRoutes:
    """Connectors by provider name, and the failover chain for (tenant, channel)."""

    def __init__(self, connectors: Sequence[Connector], table: Mapping[str, Any] | None = None):
        self.connectors: dict[str, Connector] = {c.provider: c for c in connectors}
        self._by_channel: dict[str, list[Connector]] = {}
        for connector in connectors:
            self._by_channel.setdefault(connector.channel, []).append(connector)
        table = table or {}
        self._default: dict[str, list[str]] = dict(table.get("default", {}))
        self._tenants: dict[str, dict[str, list[str]]] = dict(table.get("tenants", {}))
        self._cache: dict[tuple[str, str], list[Connector]] = {}

    def chain(self, tenant_id: str, channel: str) -> list[Connector]:
        """Providers to try for ``channel``, first choice first (empty: none configured)."""
        key = (tenant_id, channel)
        found = self._cache.get(key)
        if found is None:
            names = self._tenants.get(tenant_id, {}).get(channel) or self._default.get(channel)
            if names:
                found = [
                    self.connectors[n]
                    for n in names
                    if n in self.connectors and self.connectors[n].channel == channel
                ]
            else:
                found = list(self._by_channel.get(channel, []))
            self._cache[key] = found
        return found

    def all(self) -> list[Connector]:
        return list(self.connectors.values())
