"""IRC: an ``irc`` listener for irssi, WeeChat, HexChat and bots (docs/irc.md).

``listen: [{port: 6667, protocol: irc}]`` (over TLS with ``tls:``, by convention on
6697).  The package: :mod:`.wire` (the message grammar), :mod:`.registration` and
:mod:`.caps` (the handshake), :mod:`.protocol` (the connection), the renderer and
the command mapping.  :class:`IrcOptions` are the listener's own keys; the
registry (:mod:`chatd.protocols.registry`) registers the protocol with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config_rules import setting
from ..base import ListenerOptions
from .protocol import DEFAULT_NETWORK, IrcProtocol


@dataclass(frozen=True, slots=True)
class IrcOptions(ListenerOptions):
    """The keys of a listener with ``protocol: irc``, beside every listener's."""

    password: str | None = setting(
        None,
        "The server password an IRC client must give with PASS before NICK and USER "
        "(irssi: /connect host port PASSWORD; WeeChat: the server's password option); a "
        "wrong or missing one is answered 464 and the connection is closed. Keep it out "
        "of the file with ${NAME} or password_file. Compared in constant time, never "
        "logged; wrong ones are limited per address. null: no password.",
        pattern=r"[^\x00-\x1f\x7f ]{1,512}",
        describe="1 to 512 characters, no spaces or control characters",
    )
    network: str = setting(
        DEFAULT_NETWORK,
        "The network's name IRC clients show (001 and ISUPPORT NETWORK).",
        pattern=r"[A-Za-z0-9._-]{1,64}",
        describe="1 to 64 letters, digits, '.', '_' or '-'",
    )
    server_name: str | None = setting(
        None,
        "The server's name in the source of its IRC messages (a host name, say "
        "irc.example.org); null: chatd.local.",
        pattern=r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}\.[A-Za-z0-9.-]*[A-Za-z0-9]",
        describe="a host name with at least one dot",
    )
    motd: str | None = setting(
        None,
        "The message of the day shown after registration (several lines allowed); null: "
        "motd_file, or none (422).",
    )
    motd_file: str | None = setting(
        None,
        "A UTF-8 text file read for the message of the day each time a client registers "
        "(its first 64 KiB); unreadable: no MOTD (422). Used when motd is null.",
        path=True,
    )
    ping_seconds: float = setting(
        120.0,
        "After this long without a line from a registered client, the server sends it a "
        "PING; 0: never.",
        ge=0,
        le=86400,
    )
    ping_timeout_seconds: float = setting(
        60.0,
        "How long a client has to answer the server's PING (any line will do) before it "
        "is disconnected with ERROR :Closing link: Ping timeout.",
        gt=0,
        le=86400,
    )
    max_tag_bytes: int = setting(
        8191,
        "Most bytes of IRCv3 message tags on one incoming line, beside its 512 bytes of "
        "message; a longer line is answered 417 and dropped.",
        ge=0,
        le=8191,
    )


__all__ = ["IrcOptions", "IrcProtocol"]
