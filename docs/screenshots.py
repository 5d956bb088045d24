"""Regenerate docs/img/web-desktop.png and docs/img/web-phone.png, the web page's
screenshots in docs/web.md.

    .venv/bin/python docs/screenshots.py            # needs the test extra and chromium

It starts a real chatd (a line, a jsonl and a websocket listener) in a temporary
folder, opens the page in Debian's Chromium through Playwright twice (a desktop
window in the light scheme, a phone in the dark one), plays a short conversation
with people on nc and a jsonl bot, and saves what each browser shows.  Nothing is
faked: the pictures are the page as chatd serves it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from chatd.testing.process import ChatClient, JsonClient, ServerProcess, write_config

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 10_000


def start_server(folder: Path) -> ServerProcess:
    config = write_config(folder / "config.yaml",
                          listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"},
                                  {"port": 0, "protocol": "websocket"}])
    return ServerProcess(config, folder)


def person(server: ServerProcess, nick: str) -> ChatClient:
    """Someone on nc (the line protocol), renamed to ``nick``."""
    client = ChatClient(server.address)
    client.welcome()
    client.send(f"/nick {nick}")
    client.expect(f"now known as {nick}")
    return client


def open_page(browser, url: str, nick: str, **context_options):
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.goto(url)
    expect(page.locator('#room-list button[aria-current="true"] .name')).to_have_text(
        "#lobby", timeout=WAIT_MS)
    say(page, f"/nick {nick}")
    expect(page.locator("#my-nick")).to_have_text(nick, timeout=WAIT_MS)
    return page


def say(page, text: str) -> None:
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def the_team(server: ServerProcess) -> dict[str, ChatClient | JsonClient]:
    """The people already there when the browsers come: two on nc, a bot."""
    grace = person(server, "grace")
    ken = person(server, "ken")
    bot = JsonClient((server.host, server.ports[1]))
    bot.welcome()
    bot.send(cmd="nick", nick="deploybot")
    bot.expect(type="nick", new="deploybot")
    bot.send(cmd="join", room="#dev")
    bot.expect(type="join", room="#dev")
    grace.send("/topic Welcome to chatd! Be kind · the page: docs/web.md")
    grace.expect("topic")
    return {"grace": grace, "ken": ken, "bot": bot}


def conversation(team: dict, desktop, phone) -> None:
    """A few minutes of a small team's chat, in every style the page has."""
    grace, ken, bot = team["grace"], team["ken"], team["bot"]
    say(desktop, "/join #dev")
    current = desktop.locator('#room-list button[aria-current="true"] .name')
    expect(current).to_have_text("#dev", timeout=WAIT_MS)
    desktop.locator("#room-list button").filter(has_text="#lobby").click()
    expect(current).to_have_text("#lobby", timeout=WAIT_MS)
    grace.send("morning all ☀")
    ken.send("/me is brewing coffee")
    say(phone, "hi from my phone, on the bus")
    grace.send("ada: did the websocket listener land?")
    say(desktop, "it did — I'm in a browser right now, same room as your nc")
    bot.send(cmd="say", room="#dev", text="build 1842 passed ✔ (3m12s)")
    bot.send(cmd="say", room="#dev", text="deployed to staging")
    ken.send("/notice #lobby standup in 10 minutes")
    ken.send("<img src=x onerror=alert(1)> ← shown as text, never as HTML")
    grace.send("/msg ada can you review my branch after lunch?")
    grace.send("/msg bea are you coming to the standup?")
    desktop.locator("#input").fill("/who")
    for page in (desktop, phone):
        expect(page.locator("#log li").filter(has_text="shown as text").last).to_be_visible(
            timeout=WAIT_MS)
    expect(desktop.locator("#room-list .badge").filter(has_text="2")).to_be_visible(
        timeout=WAIT_MS)
    expect(desktop.locator("#room-list button").filter(has_text="grace")).to_be_visible(
        timeout=WAIT_MS)
    expect(phone.locator("#unread-total")).to_have_text("1", timeout=WAIT_MS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "img")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder))
        try:
            url = f"http://127.0.0.1:{server.ports[2]}/"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium)
                team = the_team(server)
                desktop = open_page(browser, url, "ada", viewport={"width": 1200, "height": 640},
                                    color_scheme="light")
                phone = open_page(browser, url, "bea", viewport={"width": 390, "height": 720},
                                  color_scheme="dark", is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
                conversation(team, desktop, phone)
                desktop.screenshot(path=args.out / "web-desktop.png")
                phone.screenshot(path=args.out / "web-phone.png")
                browser.close()
        finally:
            server.close()
    print(f"wrote {args.out / 'web-desktop.png'} and {args.out / 'web-phone.png'}")


if __name__ == "__main__":
    main()
