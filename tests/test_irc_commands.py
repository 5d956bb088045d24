"""IRC commands -> chatd requests (chatd/protocols/irc/commands.py), in-process.

``translate`` is pure: a parsed line and the connection's state in, requests and
immediate answers out.  Every answer it makes must be a message chatd can send:
each test's answers are encoded and parsed back with the strict parser, within
IRC's 512 bytes (``_run``)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.protocols.irc.commands import (
    _HANDLERS,
    CHANMODES,
    ECHO_MAX,
    MODES_MAX,
    PROTOCOL_COMMANDS,
    TARGMAX,
    translate,
)
from chatd.protocols.irc.wire import BODY_MAX, PARAMS_MAX, Message, parse
from chatd.requests import Invoke, Say
from chatd.version import __version__


@dataclass
class State:
    """A stand-in for the protocol's IrcState."""

    nick: str = "alice"
    caps: frozenset[str] = frozenset()
    server_name: str = "chat.test"
    commands: frozenset[str] | None = field(default=None)


def _run(line: str, state: State | None = None) -> list[object]:
    """translate(parse(line)), every answer checked as chatd must send it."""
    items = translate(parse(line), state or State())
    for item in items:
        if isinstance(item, Message):
            data = item.encode()
            assert len(data) <= BODY_MAX, data
            assert parse(data.decode()[:-2], strict=True) == item
    return items


def _numerics(items: list[object]) -> list[tuple[str, ...]]:
    return [(m.command, *m.params) for m in items if isinstance(m, Message)]


def _requests(items: list[object]) -> list[object]:
    return [item for item in items if not isinstance(item, Message)]


# -- keepalive, registration leftovers, server questions ---------------------------------------


def test_ping_is_answered_with_pong_from_the_server_with_the_token():
    assert _run("PING :token with spaces") == [
        Message("PONG", ("chat.test", "token with spaces"), source="chat.test")]
    assert _run("PING abc") == [Message("PONG", ("chat.test", "abc"), source="chat.test")]


def test_ping_without_a_token_is_409_and_pong_is_nothing():
    assert _numerics(_run("PING")) == [("409", "alice", "No origin specified")]
    assert _run("PONG :chat.test") == []


def test_tagmsg_relays_nothing_and_is_no_error():
    """chatd denies every client-only tag (CLIENTTAGDENY=*): a TAGMSG carries nothing."""
    assert _run("@+typing=active TAGMSG #lobby") == []
    assert _run("@+draft/react=x TAGMSG bob") == []


@pytest.mark.parametrize("line", ["PASS secret", "USER a 0 * :Real Name"])
def test_registration_commands_after_registration_are_462(line):
    assert _numerics(_run(line)) == [("462", "alice", "You may not reregister")]


@pytest.mark.parametrize("command", sorted(PROTOCOL_COMMANDS))
def test_the_protocols_own_commands_reaching_translate_are_421(command):
    assert _numerics(_run(f"{command} LS")) == [("421", "alice", command, "Unknown command")]


def test_version_and_time_are_answered_at_once():
    [version] = _run("VERSION")
    assert version.command == "351" and version.params[:3] == (
        "alice", f"chatd-{__version__}", "chat.test")
    [when] = _run("TIME")
    assert when.command == "391" and when.params[:2] == ("alice", "chat.test")
    assert "+00:00" in when.params[2]


def test_help_is_chatds_help():
    assert _run("HELP") == [Invoke("help", "")]
    assert _run("HELP join") == [Invoke("help", "join")]


# -- channels ------------------------------------------------------------------------------------


def test_join_several_channels_in_order_keys_ignored():
    assert _run("JOIN #a,#b,,#c key1,key2") == [
        Invoke("join", "#a"), Invoke("join", "#b"), Invoke("join", "#c")]


def test_join_0_parts_every_room():
    assert _run("JOIN 0") == [Invoke("partall", "")]


def test_join_of_a_name_that_is_no_channel_is_403_the_rest_still_join():
    items = _run("JOIN bob,#ok")
    assert _numerics(items) == [("403", "alice", "bob", "No such channel")]
    assert _requests(items) == [Invoke("join", "#ok")]
    assert _numerics(_run("JOIN :#a b")) == [("403", "alice", "*", "No such channel")]


@pytest.mark.parametrize("command", ["JOIN", "PART", "TOPIC", "KICK", "INVITE", "MODE",
                                     "OPER", "KILL"])
def test_missing_parameters_are_461(command):
    assert _numerics(_run(command)) == [("461", "alice", command, "Not enough parameters")]


@pytest.mark.parametrize("line", ["KICK #a", "INVITE bob", "KICK #a :", "KICK , bob",
                                  "KICK #a,#b x,y,z"])
def test_kick_and_invite_short_of_parameters_are_461(line):
    assert _numerics(_run(line))[0][1:] == ("alice", line.split()[0], "Not enough parameters")


def test_part_with_and_without_a_reason():
    assert _run("PART #a") == [Invoke("part", "#a")]
    assert _run("PART #a,#b :gone home") == [Invoke("part", "#a gone home"),
                                            Invoke("part", "#b gone home")]
    assert _numerics(_run("PART x")) == [("403", "alice", "x", "No such channel")]


def test_topic_shows_sets_and_refuses_to_clear():
    assert _run("TOPIC #a") == [Invoke("topic", "#a")]
    assert _run("TOPIC #a :new topic: here") == [Invoke("topic", "#a new topic: here")]
    [notice] = _run("TOPIC #a :")
    assert notice.command == "NOTICE" and "does not clear a topic" in notice.params[1]
    assert _numerics(_run("TOPIC lobby :x")) == [("403", "alice", "lobby", "No such channel")]


def test_names_of_channels_and_of_nothing():
    assert _run("NAMES #a,#b") == [Invoke("names", "#a"), Invoke("names", "#b")]
    assert _numerics(_run("NAMES")) == [("366", "alice", "*", "End of /NAMES list")]
    assert _numerics(_run("NAMES bob")) == [("366", "alice", "bob", "End of /NAMES list")]


def test_who_of_a_channel_and_of_a_mask():
    assert _run("WHO #a") == [Invoke("who", "#a")]
    assert _run("WHO #a o") == [Invoke("who", "#a")]
    assert _numerics(_run("WHO bob")) == [("315", "alice", "bob", "End of /WHO list")]
    assert _numerics(_run("WHO")) == [("315", "alice", "*", "End of /WHO list")]


def test_list_pages_and_refuses_filters():
    assert _run("LIST") == [Invoke("list", "")]
    assert _run("LIST 2") == [Invoke("list", "2")]
    items = _run("LIST #a,#b")
    assert items[0].command == "NOTICE" and "not supported" in items[0].params[1]
    assert _numerics(items)[1] == ("323", "alice", "End of /LIST")


def test_kick_one_channel_several_nicks_and_pairs():
    assert _run("KICK #a bob :go away") == [Invoke("kick", "#a bob go away")]
    assert _run("KICK #a bob,carol") == [Invoke("kick", "#a bob"), Invoke("kick", "#a carol")]
    assert _run("KICK #a,#b bob,carol :x") == [Invoke("kick", "#a bob x"),
                                              Invoke("kick", "#b carol x")]
    assert _numerics(_run("KICK a bob")) == [("403", "alice", "a", "No such channel")]


def test_a_nick_parameter_with_a_space_is_refused_not_split():
    # "KICK #a :bob x" would otherwise kick bob with the reason "x".
    assert _numerics(_run("KICK #a :bob x")) == [("401", "alice", "*", "No such nick")]
    assert _numerics(_run("INVITE :bob x #a")) == [
        ("461", "alice", "INVITE", "Not enough parameters")]  # one parameter, not three
    assert _numerics(_run("INVITE bob :#a x")) == [("403", "alice", "*", "No such channel")]
    assert _numerics(_run("KILL :bob x")) == [("401", "alice", "*", "No such nick")]
    assert _numerics(_run("WHOIS :bob x")) == [("401", "alice", "*", "No such nick")]


def test_invite():
    assert _run("INVITE bob #a") == [Invoke("invite", "bob #a")]
    assert _numerics(_run("INVITE bob a")) == [("403", "alice", "a", "No such channel")]


# -- modes --------------------------------------------------------------------------------------


def test_mode_of_a_channel_alone_and_its_lists():
    assert _run("MODE #a") == [Invoke("modes", "#a")]
    assert _run("MODE #a b") == [Invoke("bans", "#a")]
    assert _run("MODE #a +q") == [Invoke("bans", "#a")]
    assert _run("MODE #a bq") == [Invoke("bans", "#a")]  # one list has both


def test_mode_changes_map_to_chatds_moderation_commands_in_order():
    assert _run("MODE #a +o-o+b-b+q-q bob carol *!*@h1 *!*@h2 x!*@* y!*@*") == [
        Invoke("op", "#a bob"), Invoke("deop", "#a carol"),
        Invoke("ban", "#a *!*@h1"), Invoke("unban", "#a *!*@h2"),
        Invoke("mute", "#a x!*@*"), Invoke("unmute", "#a y!*@*"),
    ]
    assert _run("MODE #a +it-it") == [
        Invoke("roomset", "#a invite-only on"), Invoke("roomset", "#a topic-lock on"),
        Invoke("roomset", "#a invite-only off"), Invoke("roomset", "#a topic-lock off"),
    ]
    assert _run("MODE #a o bob") == [Invoke("op", "#a bob")]  # no sign: +


def test_mode_errors_unknown_letters_missing_and_bad_parameters():
    items = _run("MODE #a +kz key")
    assert _numerics(items) == [
        ("472", "alice", "k", "is unknown mode char to me for #a"),
        ("472", "alice", "z", "is unknown mode char to me for #a"),
    ]
    assert _numerics(_run("MODE #a +o")) == [("461", "alice", "MODE", "Not enough parameters")]
    assert _numerics(_run("MODE #a -b")) == [("461", "alice", "MODE", "Not enough parameters")]
    assert _numerics(_run("MODE #a +b :a b")) == [
        ("696", "alice", "#a", "b", "*", "A mask is one word")]
    assert _numerics(_run("MODE #a +o :bob x")) == [("401", "alice", "*", "No such nick")]


def test_mode_changes_fill_a_line_within_modes_max():
    nicks = [f"n{i}" for i in range(MODES_MAX)]
    line = "MODE #a +" + "o" * MODES_MAX + " " + " ".join(nicks)
    assert len(parse(line).params) == PARAMS_MAX
    assert _run(line) == [Invoke("op", f"#a {nick}") for nick in nicks]


def test_chanmodes_says_exactly_the_letters_mode_knows():
    assert CHANMODES == "bq,,,it"
    listed, _, _, settings_ = CHANMODES.split(",")
    for letter in string.ascii_letters:
        [item] = _run(f"MODE #a +{letter} x!*@*")
        known = letter in listed + settings_ + "o"
        assert isinstance(item, Invoke) == known, letter


def test_user_modes_chatd_has_none():
    assert _numerics(_run("MODE alice")) == [("221", "alice", "+", "chatd has no user modes")]
    assert _numerics(_run("MODE ALICE +")) == [("221", "alice", "+", "chatd has no user modes")]
    assert _numerics(_run("MODE alice +i")) == [("501", "alice", "Unknown MODE flag")]
    assert _numerics(_run("MODE bob +i")) == [
        ("502", "alice", "Cant change mode for other users")]
    assert _numerics(_run("MODE :#a b")) == [("403", "alice", "*", "No such channel")]


# -- messages -----------------------------------------------------------------------------------


def test_privmsg_to_a_channel_is_a_say_for_that_room_text_as_sent():
    assert _run("PRIVMSG #a :hello: /quit \x02bold\x02") == [
        Say("hello: /quit \x02bold\x02", room="#a")]
    assert _run("PRIVMSG #a hello") == [Say("hello", room="#a")]


def test_privmsg_to_a_nick_is_msg():
    assert _run("PRIVMSG bob :hi there") == [Invoke("msg", "bob hi there")]


def test_privmsg_to_several_targets_and_too_many():
    assert _run("PRIVMSG #a,bob :x") == [Say("x", room="#a"), Invoke("msg", "bob x")]
    limit = TARGMAX["PRIVMSG"]
    many = ",".join(f"n{i}" for i in range(limit + 1))
    [err] = _run(f"PRIVMSG {many} :x")
    assert err.command == "407" and err.params[1] == f"n{limit}"


def test_privmsg_without_recipient_or_text():
    assert _numerics(_run("PRIVMSG")) == [("411", "alice", "No recipient given (PRIVMSG)")]
    assert _numerics(_run("PRIVMSG #a")) == [("412", "alice", "No text to send")]
    assert _numerics(_run("PRIVMSG #a :")) == [("412", "alice", "No text to send")]


def test_ctcp_action_to_a_channel_is_an_action():
    assert _run("PRIVMSG #a :\x01ACTION waves\x01") == [Say("waves", room="#a", action=True)]
    assert _run("PRIVMSG #a :\x01ACTION waves") == [Say("waves", room="#a", action=True)]
    assert _run("PRIVMSG #a :\x01action waves\x01") == [Say("waves", room="#a", action=True)]
    # A delimiter inside the action ends nothing: it is not passed on.
    assert _run("PRIVMSG #a :\x01ACTION a\x01b\x01") == [Say("ab", room="#a", action=True)]
    assert _numerics(_run("PRIVMSG #a :\x01ACTION\x01")) == [
        ("412", "alice", "No text to send")]


@pytest.mark.parametrize("ctcp", ["\x01VERSION\x01", "\x01PING 123\x01", "\x01", "\x01\x01"])
def test_other_ctcp_to_a_channel_is_refused_with_404(ctcp):
    [err] = _run(f"PRIVMSG #a :{ctcp}")
    assert err.command == "404" and err.params[:2] == ("alice", "#a")
    assert "only ACTION" in err.params[2]


def test_ctcp_to_a_nick_goes_as_it_is():
    assert _run("PRIVMSG bob :\x01VERSION\x01") == [
        Invoke("msg", "bob \x01VERSION\x01", cleaned=True)]
    assert _run("PRIVMSG bob :\x01ACTION waves\x01") == [
        Invoke("msg", "bob \x01ACTION waves\x01", cleaned=True)]


def test_notice_is_a_quiet_notice_and_never_answered_here():
    assert _run("NOTICE #a :hi") == [Say("hi", room="#a", notice=True, quiet=True)]
    assert _run("NOTICE bob :\x01VERSION chatd\x01") == [
        Invoke("notice", "bob \x01VERSION chatd\x01", quiet=True)]
    for line in ("NOTICE", "NOTICE #a", "NOTICE #a :\x01VERSION\x01", "NOTICE a,b,c,d,e :x",
                 "NOTICE NickServ :\x01VERSION x\x01", "NOTICE #a :\x01ACTION\x01"):
        assert _run(line) == [], line


def test_hostile_text_reaches_the_room_as_one_message_never_a_command():
    text = "hi :PRIVMSG #b :forged \x07\x1b[2J \x00"[:-2]
    assert _run(f"PRIVMSG #a :{text}") == [Say(text, room="#a")]
    # A nick target cannot smuggle a second argument: it is one word by the grammar.
    assert _run("PRIVMSG bob,#a :/kill carol") == [Invoke("msg", "bob /kill carol"),
                                                  Say("/kill carol", room="#a")]


# -- services and chatd's own commands -----------------------------------------------------------


@pytest.mark.parametrize("service", ["NickServ", "nickserv", "CHANSERV"])
def test_service_messages_are_chatd_commands(service):
    assert _run(f"PRIVMSG {service} :IDENTIFY secret") == [Invoke("identify", "secret")]
    assert _run(f"PRIVMSG {service} :identify alice secret") == [
        Invoke("identify", "alice secret")]


def test_chanserv_register_and_op_and_nickserv_register():
    assert _run("PRIVMSG ChanServ :REGISTER #a") == [Invoke("register", "#a")]
    assert _run("PRIVMSG ChanServ :OP #a bob") == [Invoke("op", "#a bob")]
    assert _run("PRIVMSG NickServ :REGISTER pw") == [Invoke("register", "pw")]


def test_nickserv_register_with_an_email_is_refused_not_run_as_two_words():
    # An operator's /register NICK PASSWORD would take the password for a nick.
    [notice] = _run("PRIVMSG NickServ :REGISTER pw me@example.org")
    assert notice.command == "NOTICE" and "one word" in notice.params[1]


def test_service_messages_that_are_no_command():
    for text in ("", "   ", "\x01VERSION\x01", "ID$ENTIFY x"):
        [notice] = _run(f"PRIVMSG NickServ :{text}" if text else "PRIVMSG NickServ : ")
        assert notice.command == "NOTICE" and "not a command" in notice.params[1]
        assert "\x01" not in notice.params[1]
    state = State(commands=frozenset({"identify"}))
    [notice] = _run("PRIVMSG NickServ :GHOST bob", state)
    assert "no such command: ghost" in notice.params[1]


def test_any_chatd_command_runs_by_its_name():
    assert _run("REGISTER pw") == [Invoke("register", "pw")]
    assert _run("ROLL 2d6 + 3") == [Invoke("roll", "2d6 + 3")]
    assert _run("HISTORY #a :20") == [Invoke("history", "#a 20")]
    assert _run("ISON bob carol") == [Invoke("ison", "bob carol")]


def test_with_the_command_table_an_unknown_command_is_421_at_once():
    state = State(commands=frozenset({"register", "roll"}))
    assert _run("ROLL d20", state) == [Invoke("roll", "d20")]
    assert _numerics(_run("FROB x", state)) == [("421", "alice", "FROB", "Unknown command")]
    assert _numerics(_run("frob", state)) == [("421", "alice", "FROB", "Unknown command")]


def test_a_numeric_from_a_client_is_421():
    assert _numerics(_run("001 x")) == [("421", "alice", "001", "Unknown command")]


@pytest.mark.parametrize("line, name", [
    ("NICK b\x07ob", "nick"), ("OPER admin pa\x1bss", "oper"),
    ("REGISTER pa\u202ess", "register"),
])
def test_arguments_with_what_the_sanitiser_removes_are_marked_cleaned(line, name):
    [invoke] = _run(line)
    assert invoke.name == name and invoke.cleaned


def test_exact_plain_arguments_are_not_marked():
    assert _run("NICK bob") == [Invoke("nick", "bob")]
    assert _run("OPER admin s3cret") == [Invoke("oper", "s3cret")]


# -- users --------------------------------------------------------------------------------------


def test_nick_away_quit_whois_oper_kill_setname():
    assert _numerics(_run("NICK")) == [("431", "alice", "No nickname given")]
    assert _numerics(_run("NICK :")) == [("431", "alice", "No nickname given")]
    assert _run("AWAY :gone fishing") == [Invoke("away", "gone fishing")]
    assert _run("AWAY") == [Invoke("away", "")]
    assert _run("QUIT :bye now") == [Invoke("quit", "bye now")]
    assert _run("QUIT") == [Invoke("quit", "")]
    assert _run("WHOIS bob") == [Invoke("whois", "bob")]
    assert _run("WHOIS chat.test bob,carol") == [Invoke("whois", "bob"), Invoke("whois", "carol")]
    assert _numerics(_run("WHOIS")) == [("431", "alice", "No nickname given")]
    assert _run("OPER ignored s3cret") == [Invoke("oper", "s3cret")]
    assert _run("OPER s3cret") == [Invoke("oper", "s3cret")]
    assert _run("KILL bob :spamming") == [Invoke("kill", "bob spamming")]
    assert _run("SETNAME :New Name") == [Invoke("setname", "New Name")]
    assert _numerics(_run("SETNAME")) == [("461", "alice", "SETNAME", "Not enough parameters")]


def test_chathistory_is_history():
    # The whole grammar: tests/test_irc_history.py.
    assert _run("CHATHISTORY LATEST #a * 50") == [Invoke("history", "#a latest * 50")]
    assert _run("CHATHISTORY BEFORE #a timestamp=2026-01-01T00:00:00.000Z 50") == \
        [Invoke("history", "#a before timestamp=2026-01-01T00:00:00.000Z 50")]
    [fail] = _run("CHATHISTORY SIDEWAYS #a * 50")
    assert fail.command == "FAIL" and fail.params[:3] == ("CHATHISTORY", "INVALID_PARAMS",
                                                          "SIDEWAYS")
    [fail] = _run("CHATHISTORY")
    assert fail.params[2] == "*"


# -- answers stay within the grammar ------------------------------------------------------------


def test_an_echoed_word_is_bounded_so_the_answer_fits_512_bytes():
    long_name = "x" + "é" * 240  # 481 bytes, no channel
    [err] = _run(f"JOIN {long_name}", State(nick="n" * 32, server_name="s" * 60))
    assert err.params[1] == long_name[:ECHO_MAX]


@pytest.mark.parametrize("line", [
    "PRIVMSG :", "KICK :", "MODE ::", "JOIN ,,,", "PART :,", "WHOIS ,", "NAMES ,:x",
    "TOPIC # :", "INVITE : :", "MODE # +o", "CHATHISTORY LATEST", "PRIVMSG NickServ :\x01",
    "LIST :", "WHO ::", "KILL :", "OPER :", "NICK \x01", "MODE #a +b-b+o-o",
])
def test_odd_lines_give_answers_that_parse(line):
    _run(line)  # no exception, every answer strict and within 512 bytes


# -- the built-in command the mapping added: /partall (IRC's JOIN 0) ------------------------------


@pytest.fixture
def chat():
    from chatd.testing import InProcessChat

    with InProcessChat() as chat:
        yield chat


def test_partall_leaves_every_room_with_the_reason_over_jsonl(chat):
    bot, bob = chat.connect("jsonl"), chat.connect("jsonl")
    for peer in (bot, bob):
        peer.send_json(cmd="join", room="#dev")
    bot.objects(), bob.objects()
    bot.send_json(cmd="partall", args="home time")
    parts = [o for o in bob.objects() if o["type"] == "part"]
    assert sorted((o["room"], o["text"]) for o in parts) == [("#dev", "home time"),
                                                             ("#lobby", "home time")]
    mine = [o for o in bot.objects() if o["type"] == "part"]
    assert sorted(o["room"] for o in mine) == ["#dev", "#lobby"]
    bot.send_json(cmd="partall")
    [error] = bot.objects()
    assert error["type"] == "error" and error["code"] == "not_in_room"


def test_partall_is_refused_where_a_room_is_kept_the_line_protocol(chat):
    alice, bob = chat.connect(), chat.connect()
    alice.send("/join #dev")
    alice.lines(), bob.lines()
    alice.send("/partall")
    [line] = alice.lines()
    assert line.startswith("! ") and "keep one room" in line
    bob.send("/who")
    assert any(alice.nick in line for line in bob.lines())  # still in #lobby


def test_who_and_names_answer_the_same_members_marked_with_the_command_over_jsonl(chat):
    # IRC words them differently (WHO: 352/315, NAMES: 353/366): the reply says which.
    bot = chat.connect("jsonl")
    bot.objects()
    bot.send_json(cmd="who", room="#lobby")
    bot.send_json(cmd="names", args="#lobby")
    who, names = bot.objects()
    assert who["type"] == names["type"] == "names"
    assert who["who"] is True and "who" not in names
    assert who["members"] == names["members"]


# -- the built-in commands the mapping added: /ison and /userhost (IRC's ISON, USERHOST) ---------


def test_ison_names_the_nicks_online_in_the_order_asked_over_jsonl(chat):
    bot, bob = chat.connect("jsonl"), chat.connect()
    bob.send("/away lunch")
    bot.objects()
    bot.send_json(cmd="ison", args=f"nobody {bob.nick.upper()} {bot.nick}")
    [online] = bot.objects()
    assert online["type"] == "online" and online["command"] == "ison"
    assert online["asked"] == ["nobody", bob.nick.upper(), bot.nick]
    assert [(o["nick"], o.get("away", False)) for o in online["online"]] == [
        (bob.nick, True), (bot.nick, False)]
    assert online["online"][0]["userhost"].startswith(bob.nick + "@")


def test_userhost_and_ison_over_the_line_protocol_and_their_limits(chat):
    alice, bob = chat.connect(), chat.connect()
    alice.lines()
    alice.send(f"/userhost {bob.nick} nobody")
    [line] = alice.lines()
    assert line.startswith(f"*** {bob.nick} is {bob.nick}@") and "(away)" not in line
    alice.send("/ison nobody")
    assert alice.lines() == ["*** not online: nobody"]
    alice.send("/userhost a b c d e f")
    assert alice.lines() == ["! at most 5 nicks; usage: /userhost NICK..."]
    alice.send("/ison")
    assert alice.lines() == ["! usage: /ison NICK..."]
    alice.send("/ison " + " ".join(f"n{i}" for i in range(33)))
    assert alice.lines()[0].startswith("! at most 32 nicks")


# -- the documentation -----------------------------------------------------------------------


def test_every_irc_command_translate_knows_is_in_docs_irc_md():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "irc.md").read_text()
    documented = set()
    for row in text.splitlines():
        if row.startswith("| `"):
            documented.update(re.findall(r"`([A-Z]+)\b", row.split("|")[1]))
    missing = set(_HANDLERS) - documented - PROTOCOL_COMMANDS - {"HELPOP"}
    assert not missing, f"docs/irc.md does not say what these do: {sorted(missing)}"


# -- the built-in command the mapping added: /modes (IRC's MODE #room, 324) ------------------------


def test_modes_says_a_rooms_settings_as_data_and_as_a_line():
    from chatd.testing import InProcessChat

    with InProcessChat(plugins={"oper": {"password": "correct-horse-battery"}}) as chat:
        bot, oper = chat.connect("jsonl"), chat.connect()
        bot.send_json(cmd="join", room="#dev")
        oper.send("/join #dev")
        oper.send("/oper correct-horse-battery")
        bot.objects(), oper.lines()
        bot.send_json(cmd="modes", args="#dev")
        [modes] = bot.objects()
        assert modes["type"] == "room_modes" and modes["room"] == "#dev"
        assert "invite_only" not in modes and "topic_lock" not in modes  # off: left out
        oper.send("/roomset #dev invite-only on")
        bot.objects()
        bot.send_json(cmd="modes", args="#DEV")
        [modes] = bot.objects()
        assert (modes["room"], modes["invite_only"], modes.get("topic_lock")) == (
            "#dev", True, None)
        oper.lines()
        oper.send("/modes")
        assert oper.lines() == ["*** #dev: topic-lock off, invite-only on"]
        oper.send("/modes #nope")
        assert oper.lines() == ["! no such room: #nope"]


# -- any line at all ----------------------------------------------------------------------------

#: Pieces of IRC lines (channels, nicks, masks, mode strings, lists, CTCP, formatting and
#: control codes, a bidi override, a space, a colon), and any character now and then.
_PIECES = ["#a", "#", "bob", "0", ",", "#a,#b", "*!*@h", "+ob", "-b", "+i", "q", "LATEST",
           "*", "5", " ", ":", "\x01", "ACTION", "VERSION", "\x02", "\x03", "\x07", "\x1b",
           "\u202e", "é", "x" * 70]
_CHAR = st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",))
_TEXT = st.lists(st.sampled_from(_PIECES) | _CHAR, max_size=8).map("".join)
_WORD = _TEXT.map(lambda t: t.replace(" ", "")).filter(lambda w: w and not w.startswith(":"))


@settings(max_examples=1500, deadline=None)
@given(command=st.sampled_from([*sorted(_HANDLERS), "REGISTER", "FROB", "001"]),
       words=st.lists(_WORD, max_size=3), trailing=st.none() | _TEXT,
       nick=st.sampled_from(["alice", "n" * 32]))
def test_any_line_translates_to_requests_and_answers_chatd_can_send(command, words, trailing,
                                                                    nick):
    line = " ".join([command, *words] + ([":" + trailing] if trailing is not None else []))
    for item in _run(line, State(nick=nick, commands=frozenset({"register", "identify"}))):
        assert isinstance(item, Message | Invoke | Say), item
        if isinstance(item, Invoke):
            assert item.name == item.name.lower() and " " not in item.name


def test_the_added_commands_over_a_real_server(chatd_server):
    """/partall, /who's mark, /ison and /modes of a real chatd process, over jsonl."""
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}])
    bot, other = server.json_client(), server.json_client()
    bot.send(cmd="join", room="#dev", id="j")
    bot.expect(type="names", re="j")
    bot.send(cmd="who", room="#dev", id="w")
    assert bot.expect(type="names", re="w")["who"] is True
    bot.send(cmd="ison", args=f"{other.nick} nobody", id="i")
    assert [o["nick"] for o in bot.expect(type="online", re="i")["online"]] == [other.nick]
    bot.send(cmd="modes", args="#dev", id="m")
    assert bot.expect(type="room_modes", re="m")["room"] == "#dev"
    bot.send(cmd="partall", args="bye", id="p")
    assert {bot.expect(type="part", self=True)["room"] for _ in range(2)} == {"#dev", "#lobby"}
    assert other.expect(type="part")["text"] == "bye"
    bot.send(cmd="say", text="anyone?", id="s")
    assert bot.expect(type="error", re="s")["code"] == "not_in_room"
