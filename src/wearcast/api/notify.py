"""Alarm notifications: the outbox delivered to the webhook by a task of the API's lifespan.

Delivery is at-least-once. The prediction and its notification are written in one
transaction (:meth:`wearcast.prediction_log.PredictionLog.commit`), so a notification exists
for every logged alarm change whatever happens to the process after. The deliverer claims due
rows with a lease (one worker of several gets each row), POSTs them, and marks them delivered
only after a 2xx; a failure is retried after ``webhook_backoff_s`` doubled per attempt (up to
``webhook_max_backoff_s``). A worker that dies after sending but before marking sends the event
again once its lease expires: receivers deduplicate on ``event_id``, which a redelivery keeps.

Each POST carries ``X-Wearcast-Event-Id`` and ``X-Wearcast-Signature: sha256=<hex>``, the
HMAC-SHA256 of the raw body under ``webhook_secret``; a receiver recomputes it over the bytes it
received (:func:`signature`) and compares in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta

import httpx

from wearcast.api.metrics import Metrics
from wearcast.config import Settings
from wearcast.prediction_log import ClaimedEvent, PredictionLog

__all__ = ["EVENT_HEADER", "SIGNATURE_HEADER", "Notifier", "signature"]

log = logging.getLogger("wearcast.api")

SIGNATURE_HEADER = "X-Wearcast-Signature"
EVENT_HEADER = "X-Wearcast-Event-Id"
_BATCH = 20  # events claimed per poll
_PURGE_EVERY_S = 3600.0


def signature(secret: str, body: bytes) -> str:
    """The value of the signature header for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """Delivers the outbox to the webhook until cancelled."""

    def __init__(
        self,
        settings: Settings,
        log_: PredictionLog,
        metrics: Metrics,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.settings = settings
        self.log = log_
        self.metrics = metrics
        self._transport = transport
        self._purged_at = -_PURGE_EVERY_S  # purge at the first idle pass

    def _backoff(self, attempts: int) -> float:
        """Delay before the next try of an event that failed ``attempts`` times."""
        s = self.settings
        return min(s.webhook_backoff_s * 2 ** (attempts - 1), s.webhook_max_backoff_s)

    async def run(self) -> None:
        s = self.settings
        async with httpx.AsyncClient(
            timeout=s.webhook_timeout_s, transport=self._transport
        ) as client:
            while True:
                try:
                    sent = await self.deliver_due(client)
                except Exception:  # noqa: BLE001 - a database hiccup must not end delivery
                    log.exception("notifications: reading the outbox failed")
                    sent = 0
                if not sent:
                    await self._purge()
                    await asyncio.sleep(s.webhook_poll_s)

    async def _purge(self) -> None:
        """Delivered events older than ``outbox_keep_days`` go, at most once an hour, so the
        outbox stays as small as the undelivered backlog plus a week of history."""
        now = time.monotonic()
        if now - self._purged_at < _PURGE_EVERY_S:
            return
        self._purged_at = now
        keep = timedelta(days=self.settings.outbox_keep_days)
        try:
            gone = await asyncio.to_thread(self.log.purge_delivered, keep)
        except Exception:  # noqa: BLE001 - the next purge tries again
            log.exception("notifications: purging the outbox failed")
            return
        if gone:
            log.info("notifications: %d delivered events older than %s purged", gone, keep)

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """One pass over the due events; returns how many were claimed."""
        events = await asyncio.to_thread(
            self.log.claim_events, _BATCH, self.settings.webhook_lease_s
        )
        for event in events:
            await self._send(client, event)
        self.metrics.outbox_pending.set(await asyncio.to_thread(self.log.outbox_pending))
        return len(events)

    async def _send(self, client: httpx.AsyncClient, event: ClaimedEvent) -> None:
        s = self.settings
        body = json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", EVENT_HEADER: event.event_id}
        if s.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = signature(s.webhook_secret.get_secret_value(), body)
        try:
            response = await client.post(s.webhook_url, content=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            await asyncio.to_thread(self.log.event_delivered, event)
            self.metrics.notifications.labels("delivered").inc()
            return
        delay = self._backoff(event.attempts + 1)
        await asyncio.to_thread(self.log.event_failed, event, error, delay)
        self.metrics.notifications.labels("failed").inc()
        log.warning(
            "notification %s failed (attempt %d): %s; retry in %.0f s",
            event.event_id,
            event.attempts + 1,
            error,
            delay,
        )
