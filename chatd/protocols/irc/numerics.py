"""IRC numeric replies by their RFC names, and which numeric each chatd error code is.

The names follow RFC 1459/2812 and the "Modern IRC" documents (numerics 670-908 are
IRCv3's and the common servers').  :data:`ERROR_NUMERICS` maps every code of
:data:`chatd.replies.ERROR_CODES` to the numeric an IRC listener sends for it, or to
:data:`AS_NOTICE` where IRC has none that fits (a code of chatd's own: ``weak_password``,
``timeout``...): such an error reaches an IRC client as a server ``NOTICE`` with the
text, never not at all.  A plugin's own code is a notice too.

:data:`SUBJECTS` says what a numeric's parameters between the client's nick and the
text are (RFC: ``401 <client> <nickname> :No such nick``): the renderer fills them from
the error's text where chatd's wording names them, ``*`` otherwise.
"""

from __future__ import annotations

# -- connection registration ------------------------------------------------------------
RPL_WELCOME = "001"
RPL_YOURHOST = "002"
RPL_CREATED = "003"
RPL_MYINFO = "004"
RPL_ISUPPORT = "005"
RPL_UMODEIS = "221"
RPL_LUSERCLIENT = "251"
RPL_LUSEROP = "252"
RPL_LUSERUNKNOWN = "253"
RPL_LUSERCHANNELS = "254"
RPL_LUSERME = "255"
RPL_LOCALUSERS = "265"
RPL_GLOBALUSERS = "266"
# -- replies to commands ------------------------------------------------------------------
RPL_AWAY = "301"
RPL_USERHOST = "302"
RPL_ISON = "303"
RPL_UNAWAY = "305"
RPL_NOWAWAY = "306"
RPL_WHOISUSER = "311"
RPL_WHOISSERVER = "312"
RPL_WHOISOPERATOR = "313"
RPL_ENDOFWHO = "315"
RPL_WHOISIDLE = "317"
RPL_ENDOFWHOIS = "318"
RPL_WHOISCHANNELS = "319"
RPL_LISTSTART = "321"
RPL_LIST = "322"
RPL_LISTEND = "323"
RPL_CHANNELMODEIS = "324"
RPL_CREATIONTIME = "329"
RPL_WHOISACCOUNT = "330"
RPL_NOTOPIC = "331"
RPL_TOPIC = "332"
RPL_TOPICWHOTIME = "333"
RPL_WHOISACTUALLY = "338"
RPL_INVITING = "341"
RPL_VERSION = "351"
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_ENDOFNAMES = "366"
RPL_BANLIST = "367"
RPL_ENDOFBANLIST = "368"
RPL_MOTD = "372"
RPL_MOTDSTART = "375"
RPL_ENDOFMOTD = "376"
RPL_YOUREOPER = "381"
RPL_TIME = "391"
RPL_STARTTLS = "670"
RPL_HELPSTART = "704"
RPL_HELPTXT = "705"
RPL_ENDOFHELP = "706"
RPL_QUIETLIST = "728"
RPL_ENDOFQUIETLIST = "729"
# -- errors ---------------------------------------------------------------------------------
ERR_UNKNOWNERROR = "400"
ERR_NOSUCHNICK = "401"
ERR_NOSUCHSERVER = "402"
ERR_NOSUCHCHANNEL = "403"
ERR_CANNOTSENDTOCHAN = "404"
ERR_TOOMANYCHANNELS = "405"
ERR_NOORIGIN = "409"
ERR_NORECIPIENT = "411"
ERR_NOTEXTTOSEND = "412"
ERR_INPUTTOOLONG = "417"
ERR_UNKNOWNCOMMAND = "421"
ERR_NOMOTD = "422"
ERR_NONICKNAMEGIVEN = "431"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_USERNOTINCHANNEL = "441"
ERR_NOTONCHANNEL = "442"
ERR_USERONCHANNEL = "443"
ERR_NOTREGISTERED = "451"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_PASSWDMISMATCH = "464"
ERR_CHANNELISFULL = "471"
ERR_UNKNOWNMODE = "472"
ERR_INVITEONLYCHAN = "473"
ERR_BANNEDFROMCHAN = "474"
ERR_BADCHANNAME = "479"
ERR_NOPRIVILEGES = "481"
ERR_CHANOPRIVSNEEDED = "482"
ERR_UMODEUNKNOWNFLAG = "501"
ERR_USERSDONTMATCH = "502"
# -- SASL (IRCv3) ---------------------------------------------------------------------------
RPL_LOGGEDIN = "900"
RPL_LOGGEDOUT = "901"
ERR_NICKLOCKED = "902"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
ERR_SASLALREADY = "907"
RPL_SASLMECHS = "908"

#: The "numeric" of an error IRC has none for: a server ``NOTICE`` to the client.
AS_NOTICE = "NOTICE"
#: The "numeric" of an error an IRCv3 specification words as a standard reply:
#: ``FAIL COMMAND CODE :text``, the command and code from :data:`FAILS`.
AS_FAIL = "FAIL"

#: chatd's error code -> the ``FAIL`` it is sent as (:data:`AS_FAIL`): the command and
#: the specification's code.
FAILS: dict[str, tuple[str, str]] = {
    "invalid_realname": ("SETNAME", "INVALID_REALNAME"),  # IRCv3 setname
}

#: chatd's error code -> the numeric an IRC client is sent (or :data:`AS_NOTICE`).
#: ``not_operator`` is 482 when the text names a room, 481 (server operators) otherwise.
ERROR_NUMERICS: dict[str, str] = {
    "error": AS_NOTICE,  # a plugin's words, nothing more known
    "internal_error": AS_NOTICE,
    "unknown_command": ERR_UNKNOWNCOMMAND,
    "usage": ERR_NEEDMOREPARAMS,
    "malformed": AS_NOTICE,  # jsonl's; an IRC line that does not parse is the protocol's
    "line_too_long": ERR_INPUTTOOLONG,
    "bad_characters": AS_NOTICE,
    # the connection is closed for these, with ERROR :... from the protocol
    "excess_flood": AS_NOTICE,
    "partial_line_timeout": AS_NOTICE,
    "idle_timeout": AS_NOTICE,
    "registration_timeout": AS_NOTICE,
    "message_too_big": AS_NOTICE,  # a WebSocket's (IRC's long line is line_too_long)
    "binary_message": AS_NOTICE,
    "ping_timeout": AS_NOTICE,
    # nicks
    "no_such_nick": ERR_NOSUCHNICK,
    "erroneous_nick": ERR_ERRONEUSNICKNAME,
    "nick_in_use": ERR_NICKNAMEINUSE,
    "nick_refused": ERR_ERRONEUSNICKNAME,  # a plugin would not have it: the client picks another
    "nick_registered": ERR_NICKNAMEINUSE,
    "invalid_realname": AS_FAIL,
    # rooms
    "no_such_room": ERR_NOSUCHCHANNEL,
    "bad_room_name": ERR_BADCHANNAME,
    "not_in_room": ERR_NOTONCHANNEL,
    "already_in_room": ERR_USERONCHANNEL,
    "last_room": AS_NOTICE,  # the line protocol's rule; an IRC client may be in none
    "too_many_rooms": ERR_TOOMANYCHANNELS,
    "rooms_full": AS_NOTICE,  # the server's room count: 405 would blame the client's joins
    "look_alike": ERR_BADCHANNAME,
    "join_refused": AS_NOTICE,
    "banned": ERR_BANNEDFROMCHAN,
    "invite_only": ERR_INVITEONLYCHAN,
    # speech
    "rejected": ERR_CANNOTSENDTOCHAN,
    "muted": ERR_CANNOTSENDTOCHAN,
    "topic_locked": ERR_CHANOPRIVSNEEDED,
    "speak_refused": ERR_CANNOTSENDTOCHAN,
    "blocked": ERR_CANNOTSENDTOCHAN,
    # permissions and accounts
    "not_operator": ERR_CHANOPRIVSNEEDED,
    "not_registered": AS_NOTICE,
    "already_registered": AS_NOTICE,  # 462 is IRC's "you registered your connection"
    "not_identified": AS_NOTICE,
    "wrong_password": ERR_PASSWDMISMATCH,
    "password_required": ERR_PASSWDMISMATCH,
    "too_many_attempts": AS_NOTICE,
    "unavailable": AS_NOTICE,
    "not_found": AS_NOTICE,
    "limit": AS_NOTICE,
    "bad_argument": AS_NOTICE,
    "user_not_in_room": ERR_USERNOTINCHANNEL,
    "not_allowed": AS_NOTICE,
    "no_change": AS_NOTICE,
    "conflict": AS_NOTICE,
    "weak_password": AS_NOTICE,
    "failed": AS_NOTICE,
    "timeout": AS_NOTICE,
    "remote_user": AS_NOTICE,
}

#: The parameters a numeric has between the client's nick and its text, by what they
#: name: ``nick``, ``room`` (a channel) or ``command``.
SUBJECTS: dict[str, tuple[str, ...]] = {
    ERR_NOSUCHNICK: ("nick",),
    ERR_ERRONEUSNICKNAME: ("nick",),
    ERR_NICKNAMEINUSE: ("nick",),
    ERR_NOSUCHCHANNEL: ("room",),
    ERR_BADCHANNAME: ("room",),
    ERR_NOTONCHANNEL: ("room",),
    ERR_USERONCHANNEL: ("nick", "room"),
    ERR_USERNOTINCHANNEL: ("nick", "room"),
    ERR_TOOMANYCHANNELS: ("room",),
    ERR_BANNEDFROMCHAN: ("room",),
    ERR_INVITEONLYCHAN: ("room",),
    ERR_CANNOTSENDTOCHAN: ("room",),
    ERR_CHANOPRIVSNEEDED: ("room",),
    ERR_UNKNOWNCOMMAND: ("command",),
    ERR_NEEDMOREPARAMS: ("command",),
    ERR_INPUTTOOLONG: (),
    ERR_PASSWDMISMATCH: (),
    ERR_NOPRIVILEGES: (),
}


def numeric_for(code: str) -> str:
    """The numeric (or :data:`AS_NOTICE`) an error of ``code`` is sent as."""
    return ERROR_NUMERICS.get(code, AS_NOTICE)


__all__ = ["AS_FAIL", "AS_NOTICE", "ERROR_NUMERICS", "FAILS", "SUBJECTS", "numeric_for"]
