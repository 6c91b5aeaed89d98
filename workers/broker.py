"""The embedded default broker: kombu's filesystem transport, made crash-safe.

A queue is a folder of files, so the broker needs no server and messages that
were published but not yet consumed survive a restart. Two changes to kombu's
transport keep a message whole and single-owned:

* a message is written to a temporary name and renamed into place, so a
  consumer never reads a half-written file;
* a consumer claims a message by renaming it inside the same folder (atomic on
  POSIX), so two consumer processes never read the same file.

A message lost with a consumer that died between claim and acknowledgement is
not lost to the product: the dispatcher republishes steps that were released
but never claimed (see ``SCHEDULES_REDELIVER_AFTER``).
"""

from __future__ import annotations

import os
import uuid
from queue import Empty
from time import monotonic_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

CLAIMED_SUFFIX = ".claimed"


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Per queue, the names of the last listing not yet served (newest first).
        self._listings: dict[str, list[str]] = {}
        super().__init__(*args, **kwargs)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        tmp = final + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(tmp, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """The oldest message of ``queue``, claimed by a rename so only one consumer reads it.

        The folder is listed once and the names served from that listing (oldest
        first) until it is used up; listing and sorting the whole folder for every
        message would make a backlog quadratic.
        """
        suffix = f".{queue}.msg"
        folder = self.data_folder_in
        listing = self._listings.get(queue) or []
        relisted = False
        while True:
            if not listing:
                if relisted:
                    raise Empty()  # a fresh listing ran out: the queue is empty
                listing = sorted(
                    (n for n in os.listdir(folder) if n.endswith(suffix)), reverse=True
                )
                self._listings[queue] = listing
                relisted = True
                continue
            name = listing.pop()  # the oldest left
            path = os.path.join(folder, name)
            claimed = f"{path}{CLAIMED_SUFFIX}.{os.getpid()}"
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
                os.remove(claimed)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            return loads(bytes_to_str(payload))

    def _size(self, queue: str) -> int:
        suffix = f".{queue}.msg"
        return sum(1 for n in os.listdir(self.data_folder_in) if n.endswith(suffix))


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # A folder has no host. kombu's virtual transports default to "localhost", and
        # kombu warns "No hostname was supplied. Reverting to default 'localhost'"
        # each time Celery copies a filesystem:// connection (every start, every
        # producer pool); like kombu's SQS transport, declare no default host.
        return {"port": self.default_port}
