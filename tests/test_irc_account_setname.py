"""Issue 20 wave 3, "account": who someone is, changing, in every protocol.

* ``account-notify``: a session that identifies (``NickServ IDENTIFY``, ``/identify``, a
  ``/register`` that identifies) or stops being identified (``/drop``) is told, and so is
  each member of its rooms whose IRC client asked for the capability, once, as
  ``:nick!user@host ACCOUNT name`` (``ACCOUNT *``); jsonl bots get an ``account``
  object; the line protocol shows nobody (docs/protocols.md says why); SASL, before
  the session, is no change.
* The real name: kept from ``USER`` (checked like a name: refused, with a notice, if it
  holds controls or is too long), shown by WHOIS 311, WHO 352, extended-join's JOIN,
  jsonl's ``whois`` and the line protocol's ``/whois``; changed by ``SETNAME`` (IRC) or
  ``/setname`` (every protocol): ``SETNAME`` to the client and its co-members with the
  ``setname`` capability, ``FAIL SETNAME INVALID_REALNAME`` for a bad one.

Real chatd processes with a line (0), an irc (1) and a jsonl (2) listener, raw-socket
IRC clients whose every line is parsed strictly (tests/test_irc_session.py's
``IrcClient``); "nothing arrives" is always fenced by a request whose answer comes
after anything the change could have sent (a PING, a ``/whois``), never by a sleep.
Plus unit tests of the rule, the codec and the renderer.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from test_accounts import PASSWORD
from test_irc_session import IrcClient

from chatd import codec
from chatd.chat.identity import REALNAME_MAX, realname_problem
from chatd.events import AccountChange, Join, RealnameChange, Source
from chatd.protocols.irc import caps
from chatd.protocols.irc.render import renderer_for
from chatd.protocols.irc.wire import Message, parse
from chatd.protocols.jsonl import RENDERER as JSONL
from chatd.protocols.line import RENDERER as LINE

WATCH = ("account-notify", "extended-join", "setname")


@pytest.fixture
def three(chatd_server):
    """A chatd with a line (0), an irc (1) and a jsonl (2) listener."""
    return chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "irc"},
                                {"port": 0, "protocol": "jsonl"}])


def irc(server: Any, nick: str, caps_wanted: tuple[str, ...] = (), *,
        realname: str | None = None, rooms: tuple[str, ...] = ()) -> IrcClient:
    """A registered IRC client with ``caps_wanted``, ``realname`` in its USER, in
    #lobby and ``rooms``."""
    client = IrcClient((server.host, server.ports[1]))
    before = [f"CAP REQ :{' '.join(caps_wanted)}", "CAP END"] if caps_wanted else []
    client.send(*before, f"NICK {nick}",
                f"USER {nick} 0 * :{realname if realname is not None else nick + ' Realname'}")
    if caps_wanted:
        assert client.expect("CAP").params[1] == "ACK", client.seen[-3:]
    client.until("376", "422")
    client.until("366")
    for room in rooms:
        client.send(f"JOIN {room}")
        client.until("366")
    return client


def fenced(client: IrcClient) -> list[Message]:
    """Everything ``client`` is sent before the answer to a PING sent now."""
    client.send("PING :fence")
    seen = client.until("PONG")
    assert seen[-1].params[-1] == "fence"
    return seen[:-1]


def line_fenced(person: Any, nick: str) -> list[str]:
    """Every line ``person`` (a line client) reads before the answer to ``/whois nick``."""
    person.send(f"/whois {nick}")
    lines = []
    while True:
        line = person.recv_line()
        if line.startswith(f"*** {nick}: in "):
            return lines
        lines.append(line)


def jsonl_fenced(bot: Any, tag: str) -> list[dict[str, Any]]:
    """Every object ``bot`` reads before the answer to a tagged ``rooms`` request."""
    bot.send(cmd="rooms", id=tag)
    seen = []
    while (obj := bot.recv()).get("re") != tag:
        seen.append(obj)
    return seen


def commands(messages: list[Message], command: str) -> list[Message]:
    return [m for m in messages if m.command == command]


def expect_from(client: IrcClient, command: str, nick: str) -> Message:
    """The next ``command`` whose source is ``nick`` (others' joins are skipped)."""
    while True:
        message = client.expect(command)
        if message.source is not None and message.source.split("!")[0] == nick:
            return message


def registered_and_gone(server: Any, nick: str) -> None:
    """``nick`` registered (with PASSWORD) by a line client that then leaves."""
    owner = server.client()
    owner.send(f"/nick {nick}")
    owner.expect(rf"^\*\*\* \S+ is now known as {nick}$")
    owner.send(f"/register {PASSWORD}")
    owner.expect(rf"^\*\*\* {nick} is registered to you")
    owner.close()


# -- account-notify ------------------------------------------------------------------------------


def test_identifying_and_dropping_reach_the_client_and_each_co_member_with_the_cap_once(three):
    watcher = irc(three, "watcher", WATCH, rooms=("#dev",))
    plain = irc(three, "plain", rooms=("#dev",))
    bot = three.json_client(listener=2)
    person = three.client()
    alice = irc(three, "alice", ("account-notify",), rooms=("#dev",))
    # The session itself registers (and so identifies) through NickServ.
    alice.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
    own = alice.expect("ACCOUNT")
    assert (own.source.split("!")[0], own.params) == ("alice", ("alice",))
    seen = fenced(watcher)
    told = commands(seen, "ACCOUNT")
    assert [(m.source, m.params) for m in told] == [(own.source, ("alice",))], seen
    assert not commands(fenced(plain), "ACCOUNT")  # no capability, no ACCOUNT
    logged = bot.expect(type="account", **{"from": "alice"})
    assert logged["new"] == "alice" and "old" not in logged
    assert sorted(logged["rooms"]) == ["#dev", "#lobby"]
    assert not [line for line in line_fenced(person, "alice")
                if "identif" in line or "account" in line]

    # Logged out (the account dropped): ACCOUNT *, once each again.
    alice.send(f"PRIVMSG NickServ :DROP {PASSWORD}")
    assert alice.expect("ACCOUNT").params == ("*",)
    told = commands(fenced(watcher), "ACCOUNT")
    assert [m.params for m in told] == [("*",)]
    dropped = bot.expect(type="account", **{"from": "alice"})
    assert dropped["old"] == "alice" and "new" not in dropped
    assert not commands(fenced(plain), "ACCOUNT")


def test_identify_from_the_line_protocol_reaches_irc_co_members(three):
    registered_and_gone(three, "carol")
    watcher = irc(three, "watcher", WATCH)
    carol = three.client()
    carol.send("/nick carol")  # a registered nick: its grace to /identify
    carol.expect(r"^\*\*\* \S+ is now known as carol$")
    carol.send(f"/identify {PASSWORD}")
    told = expect_from(watcher, "ACCOUNT", "carol")
    assert told.params == ("carol",)


def test_a_sasl_login_is_no_account_change(three):
    registered_and_gone(three, "dave")
    watcher = irc(three, "watcher", WATCH)
    bot = three.json_client(listener=2)
    dave = IrcClient((three.host, three.ports[1]))
    dave.send("CAP LS 302", "NICK dave", "USER dave 0 * :Dave", "CAP REQ :sasl account-notify",
              "AUTHENTICATE PLAIN")
    dave.expect("AUTHENTICATE")
    dave.send("AUTHENTICATE " + base64.b64encode(f"\0dave\0{PASSWORD}".encode()).decode())
    dave.expect("903")
    dave.send("CAP END")
    dave.until("366")
    joined = expect_from(watcher, "JOIN", "dave")
    assert joined.params[:2] == ("#lobby", "dave")  # extended-join: identified from the start
    fenced(watcher)
    fenced(dave)
    assert not commands(watcher.seen, "ACCOUNT")  # all either was sent, from the start
    assert not commands(dave.seen, "ACCOUNT")
    assert not [o for o in jsonl_fenced(bot, "f") if o["type"] == "account"]


# -- the real name ---------------------------------------------------------------------------------


def test_the_real_name_from_user_is_kept_and_shown_by_whois_who_and_extended_join(three):
    watcher = irc(three, "watcher", WATCH)
    alice = irc(three, "alice", realname="Alice Liddell, Wonderland")
    joined = expect_from(watcher, "JOIN", "alice")
    assert joined.params == ("#lobby", "*", "Alice Liddell, Wonderland")
    watcher.send("WHOIS alice")
    assert watcher.expect("311").params[-1] == "Alice Liddell, Wonderland"
    watcher.send("WHO #lobby")
    rows = {m.params[5]: m.params[-1] for m in watcher.until("315") if m.command == "352"}
    assert rows["alice"] == "0 Alice Liddell, Wonderland"
    person = three.client()  # the line protocol gives no real name: the nick stands in
    watcher.send("WHO #lobby")
    rows = {m.params[5]: m.params[-1] for m in watcher.until("315") if m.command == "352"}
    assert rows[person.nick] == f"0 {person.nick}"
    bot = three.json_client(listener=2)
    bot.send(cmd="whois", args="alice")
    assert bot.expect(type="whois")["real_name"] == "Alice Liddell, Wonderland"
    line_fenced(person, "alice")  # up to the first sentence of /whois; the next:
    assert person.recv_line() == "*** alice's real name: Alice Liddell, Wonderland"
    alice.close()


@pytest.mark.parametrize("realname", ["\x0304red\x03 name", "a\u202eb", "x" * (REALNAME_MAX + 1)])
def test_a_bad_real_name_at_registration_is_not_kept_and_the_client_is_told(three, realname):
    alice = IrcClient((three.host, three.ports[1]))
    alice.send("NICK alice", f"USER alice 0 * :{realname}")
    alice.until("366")
    notes = [m.params[-1] for m in fenced(alice) if m.command == "NOTICE"]
    assert any(n.startswith("your real name was not kept: a real name ") for n in notes), notes
    alice.send("WHOIS alice")
    assert alice.expect("311").params[-1] == "alice"  # none kept: the nick stands in


def test_setname_changes_it_for_the_client_and_its_co_members_with_the_cap(three):
    watcher = irc(three, "watcher", WATCH, rooms=("#dev",))
    plain = irc(three, "plain", rooms=("#dev",))
    bot = three.json_client(listener=2)
    person = three.client()
    alice = irc(three, "alice", ("setname",), rooms=("#dev",))
    alice.send("SETNAME :Alice P. Liddell")
    own = alice.expect("SETNAME")
    assert own.params == ("Alice P. Liddell",) and own.source.startswith("alice!")
    told = commands(fenced(watcher), "SETNAME")
    assert [(m.source, m.params) for m in told] == [(own.source, ("Alice P. Liddell",))]
    assert not commands(fenced(plain), "SETNAME")
    changed = bot.expect(type="realname", **{"from": "alice"})
    assert changed["text"] == "Alice P. Liddell"
    assert not [line for line in line_fenced(person, "alice") if "real name" in line]
    watcher.send("WHOIS alice")
    assert watcher.expect("311").params[-1] == "Alice P. Liddell"


@pytest.mark.parametrize("bad", ["\x02bold\x02", "left\u202eright", "zero\u200bwidth",
                                 "x" * (REALNAME_MAX + 1), " padded"])
def test_a_bad_setname_is_fail_invalid_realname_and_changes_nothing(three, bad):
    watcher = irc(three, "watcher", WATCH)
    alice = irc(three, "alice", ("setname",), realname="Alice")
    alice.send(f"SETNAME :{bad}")
    failed = alice.expect("FAIL")
    assert failed.params[:2] == ("SETNAME", "INVALID_REALNAME")
    assert failed.params[-1].startswith("a real name ")
    assert not commands(fenced(watcher), "SETNAME")
    watcher.send("WHOIS alice")
    assert watcher.expect("311").params[-1] == "Alice"


def test_setname_without_the_cap_changes_it_silently_and_co_members_are_still_told(three):
    watcher = irc(three, "watcher", WATCH)
    alice = irc(three, "alice")
    alice.send("SETNAME :Quiet Alice")
    assert watcher.expect("SETNAME").params == ("Quiet Alice",)
    assert not commands(fenced(alice), "SETNAME")  # IRCv3: never to a client without it


def test_setname_from_the_line_protocol_and_jsonl(three):
    watcher = irc(three, "watcher", WATCH)
    person = three.client()
    person.send("/setname Person Of Interest")
    person.expect(r"^\*\*\* your real name is now: Person Of Interest$")
    assert watcher.expect("SETNAME").params == ("Person Of Interest",)
    person.send("/setname " + "y" * (REALNAME_MAX + 1))
    person.expect(rf"^! a real name is at most {REALNAME_MAX} characters$")
    bot = three.json_client(listener=2)
    bot.send(cmd="setname", args="Helper Bot", id="s")
    own = bot.expect(type="realname", re="s")
    assert own["self"] is True and own["text"] == "Helper Bot"
    bot.send(cmd="setname", args="z" * (REALNAME_MAX + 1), id="t")
    error = bot.expect(type="error", re="t")
    assert error["code"] == "invalid_realname"
    # (a control character never reaches /setname from jsonl: the protocol refuses the
    # request as malformed, as it refuses any value the sanitiser would change)
    assert watcher.expect("SETNAME").params == ("Helper Bot",)


# -- the rule, the codec, the renderer ----------------------------------------------------------


@pytest.mark.parametrize("name", ["Alice", "José Müller", "Bruce Wayne <bruce@wayne.example>",
                                  "李小龍", "👨\u200d👩\u200d👧 family", "x" * REALNAME_MAX])
def test_real_names_of_every_script_are_fine(name):
    assert realname_problem(name) is None


@pytest.mark.parametrize("name", ["", "   ", " lead", "trail ", "x" * (REALNAME_MAX + 1),
                                  "\x02b", "\x03" "4red", "a\tb", "a\x7fb", "a\u202eb",
                                  "a\u200bb", "a\u200db", "\ud800", "a\ue000", "a\u00a0b",
                                  "e\u0301\u0301\u0301\u0301"])
def test_what_could_change_how_a_line_reads_is_refused(name):
    assert realname_problem(name), name


def test_the_real_name_crosses_nodes_in_the_codec_and_stays_out_of_jsonl():
    source = Source("alice", 3, None, None, "chat1", "alice", "h.cloak", "alice",
                    "Alice Liddell")
    join = Join(7, 1796119080.0, source, "#lobby", "")
    data = codec.to_dict(join)
    assert data["realname"] == "Alice Liddell"
    assert codec.from_dict(data) == join
    assert "realname" not in codec.to_dict(join, internal=False)
    assert "realname" not in codec.to_dict(Join(8, 1.0, Source("bob", 4, node="n"), "#a", ""))
    out = AccountChange(9, 2.0, source, "", "", old=None, new="alice", rooms=("#lobby",))
    assert codec.from_dict(codec.to_dict(out)) == out
    gone = AccountChange(10, 2.0, source, "", "", old="alice", new=None)
    public = codec.to_dict(gone, internal=False)
    assert (public["type"], public["old"], "new" in public) == ("account", "alice", False)
    assert codec.from_dict(codec.to_dict(gone)) == gone


def _lines(data: bytes) -> list[Message]:
    return [parse(line, strict=True) for line in data.decode().split("\r\n") if line]


def test_the_irc_renderer_writes_account_and_setname_only_with_their_caps():
    source = Source("alice", 3, None, None, "n", "alice", "h.cloak", "alice", "Alice")
    login = AccountChange(1, 1.0, source, "", "", new="alice")
    logout = AccountChange(2, 1.0, source, "", "", old="alice")
    rename = RealnameChange(3, 1.0, source, "", "Alice\r\nPRIVMSG #x :forged")
    with_caps = renderer_for(frozenset({"account-notify", "setname"}), "chat.test")
    without = renderer_for(frozenset({"away-notify"}), "chat.test")
    assert [(m.source, m.command, m.params) for m in _lines(with_caps.render(login))] == [
        ("alice!alice@h.cloak", "ACCOUNT", ("alice",))]
    assert _lines(with_caps.render(logout))[0].params == ("*",)
    [setname] = _lines(with_caps.render(rename))  # a line break from another node: one line
    assert setname.command == "SETNAME" and setname.params == ("Alice PRIVMSG #x :forged",)
    assert _lines(with_caps.render_for(login, "n:3")) == _lines(with_caps.render(login))
    for event in (login, logout, rename):
        assert without.render(event) == b"" and without.render_for(event, "n:3") == b""
        assert LINE.render(event) == b""
    assert LINE.render_for(rename, "n:3").startswith(b"*** your real name is now: Alice")
    assert LINE.render_for(login, "n:3") == b""
    assert re.search(rb'"type":"account".*"new":"alice"', JSONL.render(login))


def test_account_notify_and_setname_are_offered():
    offered = caps.advertised(302)
    assert "account-notify" in offered and "setname" in offered
    assert caps.request(frozenset(), "account-notify setname") == {"account-notify", "setname"}
