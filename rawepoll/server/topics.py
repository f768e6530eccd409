"""Topics: which connections of this worker subscribe to what, in 8 bytes a subscription.

A subscription is one entry of its topic's ``array('q')``: the connection's
*token*, ``generation << 32 | fd`` (the generation changes every time the
kernel hands the fd number to a new connection, so a token never names a
stranger).  Nothing else is allocated per subscription in the common case of
one topic per connection: two flat ``array('I')`` indexed by fd, allocated
once for the whole descriptor range, say which topic an fd subscribed to
first and where its entry sits in that topic's array.  A connection's second
and later topics are kept in a small dict for that fd only.

So every operation is O(1) (but ``unsubscribe`` of a second-or-later topic,
O(its topics)): subscribe appends, unsubscribe and :meth:`Topics.drop` (on
close) move the topic's last entry into the hole and fix that entry's
position.  No operation scans all topics or all connections.

Delivery walks a *snapshot* of the topic's array (a C-level copy, 8 bytes an
entry), so a fan-out sliced over several loop turns sees exactly the
subscribers of the moment of the publish; each entry's generation is checked
against the fd's current one before anything is written.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_TOPIC_BYTES", "Topics", "check_topic", "token_of"]

_NONE: Final = array("I")  # the per-fd arrays before the first subscription: empty

MAX_TOPIC_BYTES: Final = 255  # UTF-8 bytes of a topic name (a Redis channel may be longer)
_FD_MASK: Final = 0xFFFFFFFF


def token_of(generation: int, fd: int) -> int:
    """The 64-bit token of connection ``fd`` in its ``generation``."""
    return generation << 32 | fd


def check_topic(topic: object) -> str:
    """``topic`` if it is a usable topic name; ``TypeError``/``ValueError`` saying why not.

    A topic is a non-empty ``str`` of at most :data:`MAX_TOPIC_BYTES` UTF-8
    bytes, without whitespace or control characters (it travels in text
    protocols: the control socket, a WebSocket path, a Redis channel).
    """
    if not isinstance(topic, str):
        raise TypeError(f"a topic is a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("a topic name cannot be empty")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise ValueError(f"a topic name is at most {MAX_TOPIC_BYTES} bytes of UTF-8")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in topic):
        raise ValueError(f"a topic name has no whitespace or control characters: {topic!r}")
    return topic


class _Topic:
    __slots__ = ("ident", "members", "name")

    def __init__(self, name: str, ident: int) -> None:
        self.name = name
        self.ident = ident
        self.members = array("q")


class Topics:
    """The subscriptions of one worker's connections.

    ``on_first(name)`` and ``on_last(name)`` are told when a topic gets its
    first subscriber here and loses its last one (the Redis link subscribes
    and unsubscribes by them).
    """

    def __init__(
        self,
        fd_limit: int,
        on_first: Callable[[str], None] | None = None,
        on_last: Callable[[str], None] | None = None,
    ) -> None:
        self._by_name: dict[str, _Topic] = {}
        self._by_ident: list[_Topic | None] = [None]  # ident 0 means "none"
        self._free: list[int] = []
        # Allocated at the first subscription (a server without push never pays for them).
        self._fd_limit = fd_limit
        self._first = _NONE  # ident of the fd's first topic
        self._pos = _NONE  # its entry's index in that topic
        self._more: dict[int, dict[int, int]] = {}  # fd -> {ident: index}, 2nd+ topics
        self.on_first = on_first
        self.on_last = on_last
        self.subscriptions = 0

    # -- reading -------------------------------------------------------------

    def __len__(self) -> int:
        """How many topics have a subscriber here."""
        return len(self._by_name)

    def names(self) -> list[str]:
        """The topics with a subscriber here."""
        return list(self._by_name)

    def count(self, name: str) -> int:
        """Subscribers of ``name`` here."""
        topic = self._by_name.get(name)
        return 0 if topic is None else len(topic.members)

    def snapshot(self, name: str) -> array[int] | None:
        """A copy of ``name``'s tokens (None if nobody here subscribes)."""
        topic = self._by_name.get(name)
        if topic is None:
            return None
        return topic.members[:]

    def topics_of(self, fd: int) -> list[str]:
        """The topics connection ``fd`` subscribes to."""
        if not self._first:
            return []
        idents = [self._first[fd]] if self._first[fd] else []
        idents += list(self._more.get(fd, ()))
        return [topic.name for i in idents if (topic := self._by_ident[i]) is not None]

    def subscribed(self, fd: int, name: str) -> bool:
        topic = self._by_name.get(name)
        if topic is None or not self._first:
            return False
        return self._first[fd] == topic.ident or topic.ident in self._more.get(fd, ())

    # -- changing ----------------------------------------------------------

    def subscribe(self, fd: int, token: int, name: str) -> bool:
        """Subscribe connection ``fd`` (``token``) to ``name``; False if it already was."""
        if not self._first:
            self._first = array("I", bytes(4 * self._fd_limit))
            self._pos = array("I", bytes(4 * self._fd_limit))
        topic = self._by_name.get(name)
        if topic is None:
            topic = self._create(name)
        elif self.subscribed(fd, name):
            return False
        index = len(topic.members)
        topic.members.append(token)
        if not self._first[fd]:
            self._first[fd] = topic.ident
            self._pos[fd] = index
        else:
            self._more.setdefault(fd, {})[topic.ident] = index
        self.subscriptions += 1
        return True

    def unsubscribe(self, fd: int, name: str) -> bool:
        """Remove connection ``fd``'s subscription to ``name``; False if it had none."""
        topic = self._by_name.get(name)
        if topic is None:
            return False
        if self._first[fd] == topic.ident:
            index = self._pos[fd]
            self._first[fd] = 0
            self._promote(fd)
        else:
            more = self._more.get(fd)
            if more is None or topic.ident not in more:
                return False
            index = more.pop(topic.ident)
            if not more:
                del self._more[fd]
        self._remove(topic, index)
        return True

    def drop(self, fd: int) -> None:
        """Connection ``fd`` closed: remove every subscription it had."""
        if not self._first:
            return
        ident = self._first[fd]
        if not ident:
            return
        self._first[fd] = 0
        topic = self._by_ident[ident]
        assert topic is not None
        self._remove(topic, self._pos[fd])
        for other, index in self._more.pop(fd, {}).items():
            topic = self._by_ident[other]
            assert topic is not None
            self._remove(topic, index)

    # -- inside ------------------------------------------------------------

    def _create(self, name: str) -> _Topic:
        if self._free:
            ident = self._free.pop()
        else:
            ident = len(self._by_ident)
            self._by_ident.append(None)
        topic = self._by_ident[ident] = self._by_name[name] = _Topic(name, ident)
        if self.on_first is not None:
            self.on_first(name)
        return topic

    def _promote(self, fd: int) -> None:
        """The fd lost its first topic: make one of its others the first."""
        more = self._more.get(fd)
        if not more:
            return
        ident, index = more.popitem()
        if not more:
            del self._more[fd]
        self._first[fd] = ident
        self._pos[fd] = index

    def _remove(self, topic: _Topic, index: int) -> None:
        """Remove the entry at ``index``: the last entry moves into the hole."""
        members = topic.members
        last = members.pop()
        self.subscriptions -= 1
        if index < len(members):
            members[index] = last
            moved = last & _FD_MASK
            if self._first[moved] == topic.ident:
                self._pos[moved] = index
            else:
                self._more[moved][topic.ident] = index
        if not members:
            del self._by_name[topic.name]
            self._by_ident[topic.ident] = None
            self._free.append(topic.ident)
            if self.on_last is not None:
                self.on_last(topic.name)
