"""The browser page, end to end: Debian's Chromium driven by Playwright against a
real chatd serving the page and the WebSocket on its ``websocket`` listener.

Each test opens the page the way a person does (``GET /``, then the page's own
WebSocket), and checks what that person sees: the room list and its unread
counts, the member list, messages crossing with a netcat user and a jsonl bot,
completion, the disconnected state and the resume after a restart, and that a
message that looks like HTML is shown as text.  No browser is downloaded: the
tests use ``/usr/bin/chromium`` (``apt install chromium``; ``.ci/run`` does), and
in CI a missing Chromium or Playwright fails, never skips.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from chatd.testing import ChatClient, free_port, skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
STATIC = REPO / "chatd" / "protocols" / "websocket" / "static"
CHROMIUM = Path(os.environ.get("CHATD_CHROMIUM", "/usr/bin/chromium"))
#: How long the page may take to show what a test waits for (a wait on an event,
#: never a sleep; generous for a loaded CI machine).
WAIT_MS = 10_000
#: Long enough for the page's reconnect backoff (0.5 s, 1 s, 2 s, ... with jitter)
#: to come round after a restart.
RECONNECT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (each test gets its own context)."""
    if not CHROMIUM.exists():
        skip_unless_ci(f"Debian's chromium is not installed at {CHROMIUM} (apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_unless_ci("playwright is not installed (the test extra)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


class Tab:
    """A browser tab on the page, with what went wrong in it recorded."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        #: Console errors a test expects (texts containing one of these are not errors).
        self.tolerated: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)
        #: Every URL the page asked for (its files, its WebSocket).
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", lambda ws: self.requests.append(ws.url))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        # A CSP refusal, a failed load or a script error shows up as an error here.
        if message.type == "error" and not any(t in message.text for t in self.tolerated):
            self.errors.append(message.text)

    def open(self, url: str) -> str:
        """Load the page, wait until it shows #lobby joined; returns the nick."""
        self.page.goto(url)
        self.expect_current("#lobby")
        return self.nick()

    def nick(self) -> str:
        return self.page.locator("#my-nick").inner_text()

    def type(self, text: str) -> None:
        """Type a line into the editor and press Enter."""
        self.page.locator("#input").fill(text)
        self.page.locator("#input").press("Enter")

    def room(self, name: str) -> Any:
        """The room list's button for ``name``."""
        return self.page.locator("#room-list button").filter(
            has=self.page.locator(".name", has_text=name))

    def line(self, text: str) -> Any:
        """The log's lines holding ``text``."""
        return self.page.locator("#log li").filter(has_text=text)

    def expect_current(self, name: str, timeout: int = WAIT_MS) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator('#room-list button[aria-current="true"] .name')).to_have_text(
            name, timeout=timeout)

    def expect_line(self, text: str, timeout: int = WAIT_MS) -> Any:
        from playwright.sync_api import expect

        line = self.line(text).last
        expect(line).to_be_visible(timeout=timeout)
        return line

    def log_texts(self) -> list[str]:
        return [text.strip() for text in self.page.locator("#log li .body").all_inner_texts()]


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    """A fresh page in its own context (no storage shared between tests); fails the
    test afterwards if the page raised, logged an error (a CSP refusal included),
    opened a dialog or asked anything of another site."""
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    opened = Tab(context.new_page())
    yield opened
    context.close()
    assert not opened.dialogs, f"the page opened dialogs: {opened.dialogs}"
    assert not opened.errors, f"errors in the page: {opened.errors}"
    sites = {urlsplit(url).netloc for url in opened.requests}
    assert len(sites) <= 1, f"the page asked more than its own site: {opened.requests}"


def test_the_page_never_parses_text_as_html():
    """The page's script has no way to turn a string into markup or code: server
    text can only ever be text (the end-to-end test shows one case; this, all)."""
    source = (STATIC / "chatd.js").read_text()
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "setTimeout(\"", "DOMParser", "createContextualFragment"):
        assert sink not in code, f"chatd.js uses {sink}"


def web_chat(chatd_server: Any, *, ws_port: int = 0, **sections: Any) -> tuple[Any, str]:
    """chatd with a line (0), a jsonl (1), a websocket (2) and an irc (3) listener;
    returns the server and the page's URL."""
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"},
                                  {"port": ws_port, "protocol": "websocket"},
                                  {"port": 0, "protocol": "irc"}], **sections)
    return server, f"http://127.0.0.1:{server.ports[2]}/"


# -- one chat for everyone ----------------------------------------------------------


def irc_user(server: Any, nick: str) -> Any:
    """A raw IRC client registered as ``nick``, in #lobby (IRC users join rooms
    themselves)."""
    irc = ChatClient((server.host, server.ports[3]))
    irc.send(f"NICK {nick}")
    irc.send(f"USER {nick} 0 * :{nick}")
    irc.expect(rf"^:\S+ 001 {nick} ")
    irc.send("JOIN #lobby")
    irc.expect(rf"^:{nick}!\S+ JOIN :?#lobby")
    irc.nick = nick
    return irc


def test_page_chats_with_nc_irc_and_a_bot_in_the_same_order(chatd_server, tab):
    """A browser, a person at nc, an IRC user and a jsonl bot in #lobby: each sees
    the others' lines, in the order the server made them (a second jsonl client,
    the watcher, sees them all and is the reference).  The page's own line is
    shown when typed (a local echo, as IRC clients do), so its place is checked
    on the others' screens only."""
    server, url = web_chat(chatd_server)
    nc = server.terminal("nc")
    bot = server.json_client()
    watcher = server.json_client()
    irc = irc_user(server, "ircy")
    me = tab.open(url)

    tab.type("hello from the browser")
    nc.expect(rf"^<{me}> hello from the browser$")
    bot.expect(type="message", **{"from": me}, text="hello from the browser")
    irc.expect(rf"^:{me}!\S+ PRIVMSG #lobby :hello from the browser\r?$")

    # Four people talk at once: the server puts their lines in one order.
    nc.send("hi from nc")
    bot.send(cmd="say", text="beep from the bot")
    irc.send("PRIVMSG #lobby :irc says hi")
    tab.type("and from the browser")
    said = {"hi from nc", "beep from the bot", "irc says hi", "and from the browser"}
    order = []
    while len(order) < len(said):
        message = watcher.expect(type="message")
        if message["text"] in said:
            order.append(message["text"])

    def others(*but: str) -> list[str]:
        return [text for text in order if text not in but]

    for text in others("and from the browser"):
        tab.expect_line(text)
    on_page = [line.split(" ", 1)[1] for line in tab.log_texts()
               if line.split(" ", 1)[-1] in said - {"and from the browser"}]
    assert on_page == others("and from the browser"), (order, on_page)
    on_nc = [nc.expect(r"^<\S+> (beep from the bot|irc says hi|and from the browser)$").group(1)
             for _ in range(3)]
    assert on_nc == others("hi from nc"), (order, on_nc)
    heard = r" PRIVMSG #lobby :(hi from nc|beep from the bot|and from the browser)\r?$"
    on_irc = [irc.expect(heard).group(1) for _ in range(3)]
    assert on_irc == others("irc says hi"), (order, on_irc)


def test_html_in_a_message_is_shown_as_text(chatd_server, tab):
    """``<img src=x onerror=alert(1)>`` from nc is its characters on the page: no
    element is made from it and no dialog opens (the tab fixture fails on one)."""
    server, url = web_chat(chatd_server)
    nc = server.client()
    tab.open(url)
    payload = "<img src=x onerror=alert(1)>"
    nc.send(payload)
    nc.send(f"<b>bold?</b> {payload} & <script>alert(2)</script>")
    line = tab.expect_line("<b>bold?</b>")
    assert line.locator(".body").inner_text().endswith(
        f"<b>bold?</b> {payload} & <script>alert(2)</script>")
    assert tab.page.locator("#log img, #log b, #log script").count() == 0
    assert tab.line(payload).first.locator(".body").inner_text() == f"{nc.nick} {payload}"


# -- rooms, unread counts, members ------------------------------------------------------


def test_switching_rooms_and_unread_counts(chatd_server, tab):
    server, url = web_chat(chatd_server)
    nc = server.client()
    tab.open(url)
    tab.expect_line("Welcome to chatd")  # the welcome, shown in the room it put us in
    tab.type("/join #dev")
    tab.expect_current("#dev")
    tab.expect_line("you joined #dev")

    nc.send("one for lobby")
    nc.send("two for lobby")
    lobby = tab.room("#lobby")
    from playwright.sync_api import expect

    expect(lobby.locator(".badge")).to_have_text("2", timeout=WAIT_MS)
    expect(tab.page).to_have_title("(2) #dev · chatd")  # seen from another tab
    assert tab.line("one for lobby").count() == 0  # not shown in #dev

    lobby.click()
    tab.expect_current("#lobby")
    expect(lobby.locator(".badge")).to_be_hidden()
    expect(tab.page).to_have_title("#lobby · chatd")
    tab.expect_line("one for lobby")
    tab.expect_line("two for lobby")

    # Keyboard: Alt+Down / Alt+Up move through the room list.
    tab.page.locator("#input").press("Alt+ArrowUp")
    tab.expect_current("#dev")
    tab.page.locator("#input").press("Alt+ArrowDown")
    tab.expect_current("#lobby")


def test_member_list_follows_joins_parts_and_nicks(chatd_server, tab):
    from playwright.sync_api import expect

    server, url = web_chat(chatd_server)
    me = tab.open(url)
    members = tab.page.locator("#member-list li")
    expect(members).to_have_text([me], timeout=WAIT_MS)

    nc = server.client()
    expect(members).to_have_text(sorted([me, nc.nick]), timeout=WAIT_MS)
    nc.send("/nick zed")
    expect(members).to_have_text(sorted([me, "zed"]), timeout=WAIT_MS)
    tab.expect_line(f"{nc.nick} is now known as zed")
    # A member is a button that opens a private conversation.
    members.filter(has_text="zed").get_by_role("button").click()
    tab.expect_current("zed")
    tab.type("psst")
    nc.expect(rf"^\*{me}\* psst$")
    tab.room("#lobby").click()
    tab.expect_current("#lobby")

    nc.send("/join #dev")
    nc.send("/part #lobby")
    expect(members).to_have_text([me], timeout=WAIT_MS)
    tab.expect_line("zed left #lobby")


def test_a_big_rooms_members_beyond_the_listed_are_counted(chatd_server, tab):
    """The member list the server sends names 100 members at most; the page
    counts the others instead of showing a room smaller than it is."""
    from playwright.sync_api import expect

    server, url = web_chat(chatd_server)
    crowd = [server.client() for _ in range(101)]
    tab.open(url)
    expect(tab.page.locator("#members-title")).to_have_text("Members (102)", timeout=WAIT_MS)
    expect(tab.page.locator("#member-list li.more")).to_have_text("and 2 more")
    expect(tab.page.locator("#member-list li button")).to_have_count(100)
    crowd[0].send("/quit")
    expect(tab.page.locator("#members-title")).to_have_text("Members (101)", timeout=WAIT_MS)


# -- the line editor --------------------------------------------------------------------


def test_completion_and_input_history(chatd_server, tab):
    from playwright.sync_api import expect

    server, url = web_chat(chatd_server)
    nc = server.client()
    nc.send("/nick zed")
    nc.expect(r"now known as zed")
    tab.open(url)
    editor = tab.page.locator("#input")
    expect(tab.page.locator("#member-list li").filter(has_text="zed")).to_have_count(
        1, timeout=WAIT_MS)

    editor.fill("/jo")
    editor.press("Tab")
    expect(editor).to_have_value("/join ")
    editor.press_sequentially("#dev")
    editor.press("Enter")
    tab.expect_current("#dev")

    tab.room("#lobby").click()
    tab.expect_current("#lobby")
    editor.fill("ze")
    editor.press("Tab")
    expect(editor).to_have_value("zed: ")
    editor.press_sequentially("lunch?")
    editor.press("Enter")
    nc.expect(r"^<[^>]+> zed: lunch\?$")

    editor.press("ArrowUp")
    expect(editor).to_have_value("zed: lunch?")
    editor.press("ArrowUp")
    expect(editor).to_have_value("/join #dev")
    editor.press("ArrowDown")
    editor.press("ArrowDown")
    expect(editor).to_have_value("")


def test_commands_are_the_servers_and_each_kind_is_styled(chatd_server, tab):
    """A guest uses the server's commands (/nick); notices, actions, private
    messages and errors each get their own look."""
    from playwright.sync_api import expect

    server, url = web_chat(chatd_server)
    nc = server.client()
    tab.open(url)
    tab.type("/nick webby")
    expect(tab.page.locator("#my-nick")).to_have_text("webby", timeout=WAIT_MS)
    nc.expect(r"is now known as webby")

    nc.send("plain words")
    tab.expect_line("plain words")
    nc.send("/me waves")
    action = tab.expect_line("waves")
    tab.type("/nosuchcommand")
    error = tab.page.locator("#log li.error").last
    expect(error).to_be_visible(timeout=WAIT_MS)
    nc.send("/notice #lobby deploy at five")
    notice = tab.expect_line("deploy at five")
    tab.type("/whois webby")
    server_notice = tab.expect_line("idle ")  # a reply (whois), as the server's line

    tab.type("/away lunch")  # a reply that is data only (away_status), put in words
    tab.expect_line("you are away: lunch")

    assert "action" in action.get_attribute("class")
    assert "user-notice" in notice.get_attribute("class")
    assert "server" in server_notice.get_attribute("class")

    nc.send("/msg webby psst")
    private = tab.room(nc.nick)
    expect(private.locator(".badge")).to_have_text("1", timeout=WAIT_MS)
    private.click()
    line = tab.expect_line("psst")
    assert "privmsg" in line.get_attribute("class")

    private_look = look(tab, "privmsg")

    tab.room("#lobby").click()
    tab.expect_current("#lobby")
    looks = [look(tab, kind) for kind in ("message", "action", "error", "user-notice", "server")]
    looks.append(private_look)
    assert len(set(looks)) == len(looks), f"two kinds look the same: {looks}"


def look(tab: Tab, kind: str) -> str:
    """How the first log line of ``kind`` looks: its text colour, style and background."""
    return tab.page.evaluate("""(kind) => {
        const body = document.querySelector(`#log li.${CSS.escape(kind)} .body`);
        const s = getComputedStyle(body), li = getComputedStyle(body.parentElement);
        return [s.color, s.fontStyle, li.backgroundColor, li.borderLeftColor].join(" ");
    }""", kind)


def test_a_guest_registers_and_identifies_like_everyone(chatd_server, tab, browser):
    """The server's account commands, typed in the page: /register in one visit,
    /identify NICK PASSWORD in the next one (a new tab, as a guest again)."""
    from playwright.sync_api import expect

    _server, url = web_chat(chatd_server)
    tab.open(url)
    tab.type("/nick webby")
    expect(tab.page.locator("#my-nick")).to_have_text("webby", timeout=WAIT_MS)
    tab.type("/register correct-horse")
    tab.expect_line("webby is registered to you")
    tab.page.context.close()

    context = browser.new_context()
    later = Tab(context.new_page())
    assert later.open(url).startswith("guest-")
    later.type("/identify webby correct-horse")
    later.expect_line("you are identified as webby")
    expect(later.page.locator("#my-nick")).to_have_text("webby", timeout=WAIT_MS)
    context.close()
    assert not later.errors and not later.dialogs


def test_a_listener_password_is_asked_for_and_given_with_pass(chatd_server, tab):
    """On a listener with a password the page says so, and /pass lets you in."""
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "websocket",
                                                 "password": "sesame"}])
    from playwright.sync_api import expect

    tab.page.goto(f"http://127.0.0.1:{server.ports[1]}/")
    asked = tab.page.locator("#log li.error").filter(has_text="type /pass PASSWORD")
    expect(asked).to_have_count(1, timeout=WAIT_MS)
    tab.type("/pass wrong")
    expect(asked).to_have_count(2, timeout=WAIT_MS)
    assert "wrong password" in asked.last.inner_text()
    tab.type("/pass sesame")
    tab.expect_current("#lobby")
    tab.expect_line("Welcome to chatd")


def test_the_page_over_https_speaks_wss(chatd_server, browser, tmp_path):
    """On a listener with ``tls:`` the page is https:// and its WebSocket wss://
    (a browser refuses ws:// from an https:// page)."""
    import trustme

    authority = trustme.CA()
    pem = tmp_path / "server.pem"
    authority.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(pem))
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "websocket",
                                                 "tls": {"cert": str(pem), "key": str(pem)}}])
    # The test CA is not in Chromium's store: the certificate is trusted by flag.
    context = browser.new_context(ignore_https_errors=True)
    secure = Tab(context.new_page())
    sockets = []
    secure.page.on("websocket", lambda ws: sockets.append(ws.url))
    me = secure.open(f"https://localhost:{server.ports[1]}/")
    nc = server.client()
    secure.type("over tls")
    nc.expect(rf"^<{me}> over tls$")
    assert sockets == [f"wss://localhost:{server.ports[1]}/"]
    context.close()
    assert not secure.errors and not secure.dialogs


def test_a_plugins_notices_carry_its_name(chatd_server, tab):
    """A plugin that is not chatd's own is named before its words, as on nc."""
    server, url = web_chat(chatd_server, plugin_dirs=[str(REPO / "plugins")])
    nc = server.client()
    tab.open(url)
    nc.send("/roll 2d6")
    rolled = tab.expect_line(f"{nc.nick} rolled 2d6")
    assert rolled.locator(".body").inner_text().startswith(f"[dice] {nc.nick} rolled 2d6: ")
    welcome = tab.expect_line("Welcome to chatd")  # the rooms plugin: chatd's own, unmarked
    assert welcome.locator(".body").inner_text().startswith("Welcome")


def test_the_pages_builtin_plugins_are_chatds():
    """The page's list of chatd's own plugins is the loader's."""
    from chatd.plugins.loader import BUILTIN_PLUGINS

    source = (STATIC / "chatd.js").read_text()
    listed = re.search(r"const BUILTIN_PLUGINS = \[([^\]]*)\]", source)
    assert listed, "chatd.js has no BUILTIN_PLUGINS list"
    assert re.findall(r'"([^"]+)"', listed.group(1)) == list(BUILTIN_PLUGINS)


def test_history_on_join_is_shown_apart(chatd_server, tab):
    server, url = web_chat(chatd_server, plugins={"history": {"replay_lines": 10}})
    nc = server.client()
    nc.send("said before you came")
    nc.send("/who")  # its answer means the line before it was handled (and kept)
    nc.expect(r"#lobby has 1 member")
    tab.open(url)
    old = tab.expect_line("said before you came")
    assert "history" in old.get_attribute("class")
    tab.expect_line("live chat follows")
    nc.send("said now")
    new = tab.expect_line("said now")
    assert "history" not in new.get_attribute("class")


def test_rejoining_shows_what_was_missed_once(chatd_server, tab):
    """Back in a room (a /join again, or the resume after a reconnect), its history
    replay adds what was said while away, not again what the page showed live."""
    from playwright.sync_api import expect

    server, url = web_chat(chatd_server, plugins={"history": {"replay_lines": 10}})
    nc = server.client()
    nc.send("/join #dev")
    tab.open(url)
    tab.type("/join #dev")
    tab.expect_current("#dev")
    nc.send("seen live")
    tab.expect_line("seen live")
    tab.type("my own line")  # shown when sent, before the server gave it an id
    nc.expect(r"> my own line$")
    tab.type("/part")
    tab.expect_line("you left #dev")
    nc.send("said while you were out")
    nc.send("/who #dev")
    nc.expect(r"#dev has 1 member")
    tab.type("/join #dev")
    missed = tab.expect_line("said while you were out")
    assert "history" in missed.get_attribute("class")
    expect(tab.line("seen live")).to_have_count(1)
    expect(tab.line("my own line")).to_have_count(1)


# -- the disconnected state and the resume ------------------------------------------------


def test_reconnect_after_a_restart_resumes_the_rooms(chatd_server, tab):
    """The server restarts: the page says it is disconnected, reconnects by itself
    (backoff), joins its rooms again, asks for its nick again and shows the room it
    was in."""
    from playwright.sync_api import expect

    server, url = web_chat(chatd_server, ws_port=free_port())
    tab.open(url)
    tab.type("/nick webby")
    expect(tab.page.locator("#my-nick")).to_have_text("webby", timeout=WAIT_MS)
    tab.type("/join #dev")
    tab.expect_current("#dev")
    tab.type("/join #ops")
    tab.expect_current("#ops")
    tab.room("#dev").click()
    tab.expect_current("#dev")

    # The browser logs each refused reconnect ("WebSocket connection to ... failed")
    # as a console error: expected while the server is down, and only those.
    tab.tolerated.append("WebSocket connection to")
    server.stop()
    expect(tab.page.locator("#banner")).to_be_visible(timeout=WAIT_MS)
    # The server's reason (its close frame) stays in the banner while the page
    # retries, and the log says it once, not once per failed retry.
    expect(tab.page.locator("#banner-text")).to_contain_text(
        "Disconnected: server shutting down (1001)")
    expect(tab.page.locator("body")).to_have_class("offline")
    tab.type("lost words")
    tab.expect_line("not connected")

    tab.page.wait_for_event("console", lambda m: "WebSocket connection to" in m.text,
                            timeout=WAIT_MS)  # a retry failed
    expect(tab.page.locator("#log li.error").filter(has_text="disconnected:")).to_have_count(1)
    server.restart()
    expect(tab.page.locator("#banner")).to_be_hidden(timeout=RECONNECT_MS)
    expect(tab.page.locator("#my-nick")).to_have_text("webby", timeout=WAIT_MS)
    tab.expect_current("#dev")
    for room in ("#lobby", "#dev", "#ops"):
        expect(tab.room(room).locator(".name")).to_have_text(room, timeout=WAIT_MS)
    nc = server.client()
    nc.send("/join #ops")
    nc.send("/who #ops")
    nc.expect(r"#ops has 2 members: .*webby")
    nc.send("back on #ops")
    expect(tab.room("#ops").locator(".badge")).to_have_text("1", timeout=WAIT_MS)


def test_a_reload_resumes_the_rooms_under_the_shipped_limits(chatd_server, tab):
    """A browser fetches the page's files on parallel connections that count as
    not-yet-users from its address: with the shipped per-address limits
    (per_ip.max_unregistered 3, connect_rate 10 a minute) and flood limit (a
    burst of 10, then 2 lines a second) the page still loads, connects, and after
    a reload joins the rooms it was in and shows the one it was looking at (kept
    in the tab's session storage)."""
    server, url = web_chat(chatd_server, per_ip={"max_connections": 10, "connect_rate": 10,
                                                 "max_unregistered": 3},
                           flood={"burst_lines": 10, "lines_per_second": 2.0})
    tab.open(url)
    tab.type("/join #dev")
    tab.expect_current("#dev")
    tab.page.reload()
    tab.expect_current("#dev")
    tab.expect_line("you joined #dev")
    nc = server.client()
    nc.send("/who #dev")
    nc.expect(r"#dev has 1 member")  # the old tab's user left; the new one is in


# -- the layout -----------------------------------------------------------------------------


def test_phone_layout_and_color_schemes(chatd_server, browser):
    """At a phone's width the log takes the screen, every control fits in it, and
    the panes open from the top bar; the page follows prefers-color-scheme."""
    from playwright.sync_api import expect

    server, url = web_chat(chatd_server)
    nc = server.client()
    luminance = []
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 390, "height": 760},
                                      color_scheme=scheme, is_mobile=True, has_touch=True)
        phone = Tab(context.new_page())
        me = phone.open(url)
        page = phone.page
        nc.send(f"/msg {me} the top bar shows an unread count now")
        expect(page.locator("#unread-total")).to_have_text("1", timeout=WAIT_MS)
        assert not page.locator("#rooms").is_visible()
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        for control in ("#toggle-rooms", "#toggle-members", "#send", "#input"):
            box = page.locator(control).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (control, box)
        page.locator("#toggle-rooms").click()
        assert page.locator("#rooms").is_visible()
        assert page.locator("#toggle-rooms").get_attribute("aria-expanded") == "true"
        phone.room("#lobby").click()
        assert not page.locator("#rooms").is_visible()
        assert page.locator("#input").is_visible()
        # The same with the keyboard: Alt+R opens the rooms, the focus on the room
        # in view; Enter picks it, and the focus is back in the message box.
        page.locator("#input").press("Alt+r")
        expect(page.locator("#rooms")).to_be_visible()
        expect(phone.room("#lobby")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#rooms")).to_be_hidden()
        expect(page.locator("#input")).to_be_focused()
        page.locator("#input").press("Alt+m")
        expect(page.locator("#members")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#members")).to_be_hidden()
        expect(page.locator("#input")).to_be_focused()
        luminance.append(page.evaluate("""() => {
            const [r, g, b] = getComputedStyle(document.body).backgroundColor
              .match(/\\d+/g).map(Number);
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; }"""))
        context.close()
        assert not phone.errors and not phone.dialogs
    light, dark = luminance
    assert light > 200 > 60 > dark, luminance


def test_the_screenshot_script_draws_both_pictures(browser, tmp_path):
    """docs/screenshots.py (docs/web.md's pictures) still runs: a desktop and a
    phone picture, each of its size (the phone at twice its CSS pixels)."""
    import struct
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(REPO / "docs" / "screenshots.py"),
                             "--out", str(tmp_path), "--chromium", str(CHROMIUM)],
                            capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    sizes = {}
    for name in ("web-desktop.png", "web-phone.png"):
        head = (tmp_path / name).read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", name
        sizes[name] = struct.unpack(">II", head[16:24])
    assert sizes == {"web-desktop.png": (1200, 640), "web-phone.png": (780, 1440)}
