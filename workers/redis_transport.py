"""kombu's Redis transport, with channels that survive a restart of the Redis server.

Celery 5.7 / kombu 5.7: when the broker connection is lost, the worker's
consumer calls ``Connection.collect()`` and then ``Connection.close()``
(celery/worker/consumer/consumer.py, ``on_connection_error_after_connected``).
``collect()`` detaches the transport (``transport.client = None``) and closes
the task channel, but a BRPOP in flight makes that first close stop half way
(``redis.Channel.close`` calls ``_brpop_read``, which fails on the dead
socket). The second close then runs in full: it drops the channel's pools and
restores its unacknowledged messages (``QoS.restore_unacked``), which rebuilds a
pool from ``Channel._connparams``, which reads ``self.connection.client.hostname``
of the detached transport: ``AttributeError: 'NoneType' object has no attribute
'hostname'``. That is not a connection error to anyone upstream, so the worker
stops ("Unrecoverable error") and exits 1. A late acknowledgement of a task that
finishes on the old channel takes the same path (``QoS.ack`` →
``_remove_from_indices``). No released kombu or celery version changes this.

The fix: a channel remembers the pool parameters it computed while its transport
was attached, and reuses them once it is detached. The restore or the ack then
reaches Redis (or, while Redis is still down, fails with redis-py's
``ConnectionError``, which kombu and Celery already handle), and the worker
reconnects and goes on consuming. ``tests/workers/test_broker_restarts.py``
restarts a Redis server under a working worker to show it.

What a restarted Redis without persistence has lost (queued messages, and the
unacknowledged ones of its ``unacked`` hash) the dispatcher's recovery pass
releases again from the database (``services.steps_recover``).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis import exceptions as redis_exceptions


class Channel(kombu_redis.Channel):
    """A Redis channel that can still build its pools after its transport was closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._saved_connparams: dict[bool, dict[str, Any]] = {}
        super().__init__(*args, **kwargs)
        # The asynchronous pool's parameters were saved by the PING in __init__; save
        # the synchronous ones (acks, restores) now too. No I/O.
        self._connparams(asynchronous=False)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is not None and transport.client is not None:
            params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
            self._saved_connparams[asynchronous] = dict(params)
            return params
        saved = self._saved_connparams.get(asynchronous)
        if saved is None:
            raise redis_exceptions.ConnectionError(
                "the broker connection of this channel was closed"
            )
        return dict(saved)


class Transport(kombu_redis.Transport):
    Channel = Channel
