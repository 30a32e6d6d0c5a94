"""syncgate: an asyncio client for the syncgate sync server, and a backend helper (``syncgate.api``).

``Client`` keeps an offline replica with an outbox in SQLite, follows the
protocol's close-code table, refreshes its token in band, and replays
queued writes after every reconnect; see the README in ``clients/python``.
"""

from .backoff import Backoff
from .client import Client, InvalidValueError, RequestError
from .codec import Value
from .codes import CloseAction, close_action, is_final_op_code
from .collection import Collection
from .host import ConnectionLostError, NotConnectedError, TokenProvider
from .events import (
    Change,
    ClientError,
    Connected,
    Connecting,
    Disconnected,
    Member,
    Message,
    OpRetrying,
    OpSettled,
    PresenceJoin,
    PresenceLeave,
    Refreshed,
    Stopped,
    Synced,
    UnreadableData,
)
from .hlc import Hlc, HlcClock, compare_hlc, parse_hlc
from .subscription import Subscription, SubscriptionError

__all__ = [
    "Backoff",
    "Change",
    "Client",
    "ClientError",
    "CloseAction",
    "Collection",
    "Connected",
    "Connecting",
    "ConnectionLostError",
    "Disconnected",
    "Hlc",
    "HlcClock",
    "InvalidValueError",
    "Member",
    "Message",
    "NotConnectedError",
    "OpRetrying",
    "OpSettled",
    "PresenceJoin",
    "PresenceLeave",
    "Refreshed",
    "RequestError",
    "Stopped",
    "Subscription",
    "SubscriptionError",
    "Synced",
    "TokenProvider",
    "UnreadableData",
    "Value",
    "close_action",
    "compare_hlc",
    "is_final_op_code",
    "parse_hlc",
]
