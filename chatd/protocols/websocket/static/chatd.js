// chatd's page: the jsonl protocol (docs/protocols.md) over a WebSocket to the
// listener that served this file.  No framework, no build step.  Every piece of
// server text goes into the page with textContent (never innerHTML): a message
// that looks like HTML is shown as the characters it is.
"use strict";

(() => {
  const SERVER = "*server*";           // the buffer for what belongs to no room
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
  const MAX_LINES = 2000;              // per buffer: older lines are dropped
  const LOCAL_COMMANDS = ["clear", "join", "me", "msg", "nick", "part", "query", "quit",
                          "topic", "who", "notice", "close"];

  // chatd's own plugins speak as the server; any other plugin's notices and errors
  // carry its name, as on the line protocol (`*** [dice] ...`), so text a plugin
  // passes on never reads as the server's own (chatd/plugins/loader.py's
  // BUILTIN_PLUGINS: tests/test_web_page.py checks the two lists agree).
  const BUILTIN_PLUGINS = ["rooms", "commands", "log", "oper", "presence", "ignore", "settings",
                           "history", "accounts", "moderation", "cluster"];

  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"), input: $("input"), editor: $("editor"), rooms: $("room-list"),
    members: $("member-list"), membersTitle: $("members-title"), title: $("title"),
    topic: $("topic"), status: $("status"), banner: $("banner"), bannerText: $("banner-text"),
    myNick: $("my-nick"), unreadTotal: $("unread-total"), roomsPane: $("rooms"),
    membersPane: $("members"),
  };

  // ---- state ------------------------------------------------------------
  /** buffers: key (lower-case room or nick) -> {name, kind, lines[], unread, mention,
   *  members: Map(lower nick -> {nick, operator, away}), topic, joined, seen: Set(ids)} */
  const buffers = new Map();
  let current = SERVER;
  let titleBase = "chatd";
  let myNick = null;
  let socket = null;
  let attempt = 0;                     // reconnect attempts since the last success
  let retryTimer = null;
  let quitting = false;
  let wantRooms = [];                  // rooms to resume after a reconnect
  let wantNick = null;                 // the nick to ask for again after a reconnect
  let wantCurrent = null;              // the buffer in view, shown again after it
  let resumeTarget = null;             // wantCurrent as it was when this connection began
  let serverCommands = [];             // from the help reply: for completion
  let requestSeq = 0;
  let lostWhy = null;                  // why the last open connection ended
  let listenerPassword = null;         // /pass, kept in memory only (for reconnects)
  let beforeFirstJoin = true;          // this connection has not been put in a room yet
  let greeting = [];                   // what the server said before that (the welcome)
  const requestBuffer = new Map();     // request id -> buffer key its answers belong to
  const typed = [];                    // input history
  let typedPos = 0;
  let completion = null;               // {prefix, matches, index, start, end}

  const keyOf = (name) => name.toLowerCase();
  const isRoom = (name) => name.startsWith("#");

  function buffer(name, kind) {
    const key = keyOf(name);
    let buf = buffers.get(key);
    if (!buf) {
      buf = { name, kind: kind || (isRoom(name) ? "room" : "private"), lines: [], unread: 0,
              mention: false, members: new Map(), topic: "", joined: false, seen: new Set() };
      buffers.set(key, buf);
      renderRooms();
    }
    return buf;
  }

  // ---- nick colours -----------------------------------------------------
  function hue(nick) {
    let h = 0;
    for (const ch of nick.toLowerCase()) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return h % 360;
  }
  function nickSpan(nick) {
    const span = document.createElement("span");
    span.className = "nick";
    span.textContent = nick;
    span.style.setProperty("--hue", String(hue(nick)));
    return span;
  }

  // ---- the log ----------------------------------------------------------
  function clock(iso) {
    const d = iso ? new Date(iso) : new Date();
    return Number.isNaN(d.getTime()) ? "" :
      d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  /** Add a line to a buffer: {kind, nick, text, time, history, id, title}. */
  function addLine(key, line) {
    const buf = buffers.get(key) || buffers.get(current);
    if (line.id !== undefined && line.id !== null) {
      const seenKey = `${line.id}:${line.kind}`;
      if (buf.seen.has(seenKey)) return;  // replayed again after a reconnect
      // History replayed on rejoining, up to the last line seen live before, is
      // on the page already: not shown twice.
      if (line.history && buf.replayFloor && line.id <= buf.replayFloor) return;
      if (line.history && ownEcho(buf, line)) return;
      buf.seen.add(seenKey);
    }
    buf.lines.push(line);
    if (key === SERVER && beforeFirstJoin) greeting.push(line);
    if (buf.lines.length > MAX_LINES) {
      buf.lines.shift();
      if (buf.seen.size > 2 * MAX_LINES) {  // forget the ids of lines no longer kept
        buf.seen = new Set(buf.lines.filter((l) => l.id != null).map((l) => `${l.id}:${l.kind}`));
      }
    }
    const counts = line.kind.split(" ").some((k) =>
      ["message", "action", "privmsg", "user-notice"].includes(k));
    // The newest line said (not a join or part) seen live: the floor of a replay.
    if (counts && !line.history && typeof line.id === "number") {
      buf.lastId = Math.max(buf.lastId || 0, line.id);
    }
    if (keyOf(buf.name) === current || key === current) {
      appendRow(line);
    } else if (counts && !line.history) {
      buf.unread += 1;
      if (line.mention || buf.kind === "private") buf.mention = true;
      renderRooms();
    }
  }

  /** A replayed line of ours that the page showed when we sent it (with no id
   *  then): it takes the id, and is not shown again. */
  function ownEcho(buf, line) {
    if (!myNick || !line.nick || keyOf(line.nick) !== keyOf(myNick)) return false;
    const echo = buf.lines.find((l) => l.id == null && l.kind === line.kind &&
                                       l.nick === line.nick && l.text === line.text);
    if (!echo) return false;
    echo.id = line.id;
    buf.seen.add(`${line.id}:${line.kind}`);
    return true;
  }

  function row(line) {
    const li = document.createElement("li");
    li.className = line.kind + (line.history ? " history" : "") +
                   (line.mention ? " mentions-me" : "");
    if (line.kind === "divider") {
      li.textContent = line.text;
      return li;
    }
    const time = document.createElement("time");
    time.textContent = clock(line.time);
    if (line.time) time.dateTime = line.time;
    li.append(time);
    const body = document.createElement("span");
    body.className = "body";
    if (line.nick) {
      body.append(nickSpan(line.nick), " ");
    }
    body.append(document.createTextNode(line.text || ""));
    if (line.title) li.title = line.title;
    li.append(body);
    return li;
  }

  function atBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  }
  function appendRow(line) {
    const stick = atBottom();
    ui.log.append(row(line));
    while (ui.log.childElementCount > MAX_LINES) ui.log.firstElementChild.remove();
    if (stick) ui.log.scrollTop = ui.log.scrollHeight;
  }

  function showBuffer(key) {
    const buf = buffers.get(key);
    if (!buf) return;
    current = key;
    if (socket && socket.readyState === WebSocket.OPEN) {
      wantCurrent = key;
      rememberRooms();
    }
    buf.unread = 0;
    buf.mention = false;
    ui.log.replaceChildren(...buf.lines.map(row));
    ui.log.scrollTop = ui.log.scrollHeight;
    ui.title.textContent = buf.kind === "server" ? "chatd" : buf.name;
    ui.topic.textContent = buf.topic || "";
    ui.topic.title = buf.topic || "";
    titleBase = `${buf.kind === "server" ? "chatd" : buf.name} · chatd`;
    renderRooms();
    renderMembers();
    closePanes();
  }

  // ---- the room list and the member list ---------------------------------
  function orderedKeys() {
    const keys = [...buffers.keys()];
    const rank = (k) => (k === SERVER ? 2 : isRoom(k) ? 0 : 1);
    return keys.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }

  function renderRooms() {
    const items = [];
    let total = 0;
    for (const key of orderedKeys()) {
      const buf = buffers.get(key);
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.key = key;
      button.className = (buf.unread ? "unread" : "") + (buf.mention ? " mention" : "");
      if (key === current) button.setAttribute("aria-current", "true");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = buf.kind === "server" ? "server" : buf.name;
      if (buf.kind === "room" && !buf.joined && !wantRooms.some((r) => keyOf(r) === key)) {
        name.textContent += " (left)";
      }
      button.append(name);
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.hidden = !buf.unread;
      badge.textContent = String(buf.unread);
      badge.setAttribute("aria-label", `${buf.unread} unread`);
      button.append(badge);
      button.addEventListener("click", () => { showBuffer(key); ui.input.focus(); });
      li.append(button);
      items.push(li);
      total += buf.unread;
    }
    ui.rooms.replaceChildren(...items);
    ui.unreadTotal.hidden = !total;
    ui.unreadTotal.textContent = String(total);
    document.title = (total ? `(${total}) ` : "") + titleBase;  // seen from another tab
  }

  function renderMembers() {
    const buf = buffers.get(current);
    const members = buf && buf.kind === "room" ? [...buf.members.values()] : [];
    members.sort((a, b) => (b.operator - a.operator) || a.nick.localeCompare(b.nick));
    ui.membersTitle.textContent = buf && buf.kind === "room" ?
      `Members (${members.length + (buf.unlisted || 0)})` : "Members";
    const more = document.createElement("li");
    more.className = "more";
    more.textContent = buf && buf.unlisted ? `and ${buf.unlisted} more` : "";
    ui.members.replaceChildren(...members.map((m) => {
      const li = document.createElement("li");
      li.className = (m.operator ? "op" : "") + (m.away ? " away" : "");
      // A member is a button: it opens a private conversation with them.
      const button = document.createElement("button");
      button.type = "button";
      button.title = m.away ? `${m.nick} (away): write privately` : `write to ${m.nick} privately`;
      button.append(nickSpan(m.nick));
      button.addEventListener("click", () => {
        if (myNick && keyOf(m.nick) === keyOf(myNick)) return;
        showBuffer(keyOf(buffer(m.nick, "private").name));
        ui.input.focus();
      });
      li.append(button);
      return li;
    }), ...(more.textContent ? [more] : []));
  }

  function setMember(room, nick, fields) {
    const buf = buffer(room);
    buf.members.set(keyOf(nick), { nick, operator: false, away: false, ...fields });
    if (keyOf(room) === current) renderMembers();
  }
  function dropMember(room, nick) {
    const buf = buffers.get(keyOf(room));
    if (buf && buf.members.delete(keyOf(nick)) && keyOf(room) === current) renderMembers();
  }

  // ---- the connection -----------------------------------------------------
  function socketUrl() {
    const url = new URL(".", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.hash = "";
    url.search = "";
    return url.href;
  }

  function setOnline(online, text) {
    document.body.classList.toggle("offline", !online);
    ui.status.textContent = text;
    ui.banner.hidden = online;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (socket) return;
    setOnline(false, "connecting…");
    ui.banner.hidden = attempt === 0;
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      scheduleReconnect(lostWhy || String(err));
      return;
    }
    socket = ws;
    beforeFirstJoin = true;
    greeting = [];
    let pending = "";
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      lostWhy = null;
      setOnline(true, "connected");
      // A listener with a password says nothing until asked: any first request
      // brings its password_required error, so ask for the command list (for
      // completion) at once.  A password given before is given again.
      if (listenerPassword) send({ cmd: "pass", password: listenerPassword }, null);
      send({ cmd: "help" }, null);
    });
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string") return;
      // One frame carries one or more complete jsonl lines.
      const lines = (pending + ev.data).split("\n");
      pending = lines.pop();
      for (const text of lines) {
        if (!text) continue;
        let obj;
        try { obj = JSON.parse(text); } catch { continue; }
        if (obj && typeof obj === "object") handle(obj);
      }
    });
    ws.addEventListener("close", (ev) => {
      if (socket !== ws) return;
      socket = null;
      for (const buf of buffers.values()) {
        buf.members.clear();
        buf.joined = false;
      }
      renderMembers();
      if (quitting) {
        setOnline(false, "disconnected");
        ui.bannerText.textContent = "You left the chat. Reload the page to come back.";
        ui.banner.hidden = false;
        return;
      }
      // A reconnect that fails keeps the reason the connection was lost for.
      if (opened || !lostWhy) {
        lostWhy = ev.reason ? `${ev.reason} (${ev.code})` : `connection lost (${ev.code})`;
        addLine(current, { kind: "error", text: `disconnected: ${lostWhy}`,
                           time: new Date().toISOString() });
      }
      scheduleReconnect(lostWhy);
    });
  }

  function scheduleReconnect(why) {
    const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
    const jittered = Math.round(delay * (0.75 + Math.random() * 0.5));
    attempt += 1;
    const at = Date.now() + jittered;
    setOnline(false, "disconnected");
    const tick = () => {
      const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
      ui.bannerText.textContent = `Disconnected: ${why}. Reconnecting in ${left} s…`;
    };
    tick();
    clearInterval(scheduleReconnect.countdown);
    scheduleReconnect.countdown = setInterval(tick, 1000);
    retryTimer = setTimeout(() => {
      clearInterval(scheduleReconnect.countdown);
      connect();
    }, jittered);
  }

  function send(obj, bufKey) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      addLine(current, { kind: "error", text: "not connected: this was not sent",
                         time: new Date().toISOString() });
      return false;
    }
    requestSeq += 1;
    obj.id = `p${requestSeq}`;
    requestBuffer.set(obj.id, bufKey === undefined ? current : bufKey);
    if (requestBuffer.size > 500) requestBuffer.delete(requestBuffer.keys().next().value);
    socket.send(JSON.stringify(obj));
    return true;
  }

  // After the welcome (our own first join): rejoin what we had, ask for our nick.
  function resume() {
    if (wantNick && myNick && keyOf(wantNick) !== keyOf(myNick)) {
      send({ cmd: "nick", nick: wantNick }, SERVER);
    }
    for (const room of wantRooms) {
      if (!buffers.get(keyOf(room))?.joined) send({ cmd: "join", room }, null);
    }
  }

  // ---- events in ------------------------------------------------------------
  function where(obj) {
    if (obj.re && requestBuffer.has(obj.re)) {
      const key = requestBuffer.get(obj.re);
      if (key === null) return null;
      if (buffers.has(key)) return key;
    }
    if (obj.room && buffers.has(keyOf(obj.room))) return keyOf(obj.room);
    return current;
  }

  function mentions(text) {
    if (!myNick || !text) return false;
    const escaped = myNick.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    return new RegExp(`(^|[^\\w-])${escaped}($|[^\\w-])`, "i").test(text);
  }

  function pluginMark(obj) {
    return obj.plugin && !BUILTIN_PLUGINS.includes(obj.plugin) ? `[${obj.plugin}] ` : "";
  }

  function base(obj, kind, extra) {
    return { kind, id: obj.id, time: obj.time, history: !!obj.history, ...extra };
  }

  const handlers = {
    message(obj) {
      const room = buffer(obj.room);
      addLine(keyOf(room.name), base(obj, obj.notice ? "user-notice" : "message",
        { nick: obj.from, text: obj.text, mention: mentions(obj.text) }));
    },
    action(obj) {
      addLine(keyOf(buffer(obj.room).name), base(obj, "action",
        { nick: obj.from, text: obj.text, mention: mentions(obj.text) }));
    },
    privmsg(obj) {
      const other = obj.self ? obj.to : obj.from;
      const buf = buffer(other, "private");
      addLine(keyOf(buf.name), base(obj, obj.notice ? "user-notice privmsg" : "privmsg",
        { nick: obj.from, text: obj.text, title: obj.self ? `to ${obj.to}` : "" }));
    },
    notice(obj) {
      const key = obj.room && buffers.has(keyOf(obj.room)) ? keyOf(obj.room) : where(obj);
      if (key === null) return;
      addLine(key, base(obj, "server", { text: pluginMark(obj) + (obj.text || "") }));
    },
    error(obj) {
      const key = where(obj);
      let text = pluginMark(obj) + (obj.text || obj.code);
      if (obj.code === "password_required" || obj.code === "wrong_password") {
        listenerPassword = null;
        text += "\nThis server asks for a password: type /pass PASSWORD";
      }
      addLine(key === null ? current : key, base(obj, "error", { text }));
    },
    join(obj) {
      const buf = buffer(obj.room);
      if (obj.self && !obj.history) {
        myNick = obj.from;
        ui.myNick.textContent = myNick;
        // In a room: the connection works, so the next drop starts the backoff
        // again (not at the upgrade: a server that closes at once is retried slowly).
        attempt = 0;
        buf.replayFloor = buf.lastId || 0;  // the replay after this join: only what we missed
        const first = ![...buffers.values()].some((b) => b.joined);
        const resuming = first && wantRooms.length > 0;
        const wanted = wantRooms.some((r) => keyOf(r) === keyOf(obj.room));
        buf.joined = true;
        renderRooms();
        if (first && !obj.history) {
          beforeFirstJoin = false;
          for (const said of greeting) addLine(keyOf(buf.name), said);  // the welcome
          greeting = [];
          // The join at connect brings no member list: ask for it (not shown).
          send({ cmd: "who", room: obj.room }, null);
          resumeTarget = resuming ? wantCurrent : null;
          if (resuming && !wanted) {
            // This room was left before the reconnect: leave it again.
            send({ cmd: "part", room: obj.room }, null);
          }
          resume();
        }
        const reKey = obj.re && requestBuffer.get(obj.re);
        const resumed = resumeTarget !== null && keyOf(obj.room) === resumeTarget;
        if (resumed) resumeTarget = null;
        const shown = (first && !resuming) || reKey === keyOf(obj.room) || resumed;
        if (!obj.history && (shown || current === SERVER)) showBuffer(keyOf(buf.name));
        if (!resuming || wanted) {
          if (!wanted) wantRooms.push(obj.room);
          rememberRooms();
        }
      } else if (!obj.history) {
        setMember(obj.room, obj.from, {});
      }
      addLine(keyOf(buf.name), base(obj, "event",
        { text: obj.self ? `you joined ${obj.room}` : `${obj.from} joined ${obj.room}` }));
    },
    part(obj) {
      const buf = buffer(obj.room);
      const reason = obj.text ? ` (${obj.text})` : "";
      addLine(keyOf(buf.name), base(obj, "event",
        { text: `${obj.self ? "you" : obj.from} left ${obj.room}${reason}` }));
      if (obj.history) return;
      if (obj.self) {
        buf.joined = false;
        buf.members.clear();
        renderRooms();
        renderMembers();
        wantRooms = wantRooms.filter((r) => keyOf(r) !== keyOf(obj.room));
        rememberRooms();
      } else {
        dropMember(obj.room, obj.from);
      }
    },
    quit(obj) {
      const reason = obj.text ? ` (${obj.text})` : "";
      for (const room of obj.rooms || []) {
        const buf = buffers.get(keyOf(room));
        if (!buf) continue;
        addLine(keyOf(room), base(obj, "event", { text: `${obj.from} quit${reason}` }));
        if (!obj.history) dropMember(room, obj.from);
      }
    },
    nick(obj) {
      if (obj.self && !obj.history) {
        myNick = obj.new;
        ui.myNick.textContent = myNick;
        wantNick = /^guest-\d+$/.test(obj.new) ? null : obj.new;
        rememberRooms();
      }
      const text = obj.self ? `you are now known as ${obj.new}` :
        `${obj.old} is now known as ${obj.new}`;
      const rooms = obj.rooms || [];
      for (const room of rooms) {
        const buf = buffers.get(keyOf(room));
        if (!buf) continue;
        const was = buf.members.get(keyOf(obj.old));
        if (was && !obj.history) {
          buf.members.delete(keyOf(obj.old));
          buf.members.set(keyOf(obj.new), { ...was, nick: obj.new });
        }
        addLine(keyOf(room), base(obj, "event", { text }));
      }
      if (!rooms.length) addLine(where(obj) ?? current, base(obj, "event", { text }));
      const priv = buffers.get(keyOf(obj.old));
      if (priv && priv.kind === "private" && !buffers.has(keyOf(obj.new))) {
        buffers.delete(keyOf(obj.old));
        priv.name = obj.new;
        buffers.set(keyOf(obj.new), priv);
        if (current === keyOf(obj.old)) current = keyOf(obj.new);
        renderRooms();
      }
      renderMembers();
    },
    names(obj) {
      const buf = buffer(obj.room);
      if (obj.room && buf.joined) {
        buf.members.clear();
        for (const m of obj.members || []) {
          buf.members.set(keyOf(m.nick), { nick: m.nick, operator: !!m.operator, away: !!m.away });
        }
        // A big room's list names the first 100: the others are counted.
        buf.unlisted = Math.max(0, (obj.total || 0) - buf.members.size);
      }
      if (obj.topic) setTopic(buf, obj.topic);
      if (keyOf(buf.name) === current) renderMembers();
      if (!obj.greeting && where(obj) !== null) {
        const nicks = (obj.members || []).map((m) => (m.operator ? "@" : "") + m.nick);
        const more = obj.total > nicks.length ? ` and ${obj.total - nicks.length} more` : "";
        addLine(where(obj) ?? current, base(obj, "server",
          { text: `${obj.room} has ${obj.total} members: ${nicks.join(", ")}${more}` }));
      }
    },
    topic(obj) {
      const buf = buffer(obj.room);
      if (!obj.history) setTopic(buf, obj.text || "");
      addLine(keyOf(buf.name), base(obj, "event",
        { text: `${obj.from} set the topic: ${obj.text || "(none)"}` }));
    },
    room_topic(obj) {
      const buf = buffer(obj.room);
      setTopic(buf, obj.topic || "");
      addLine(where(obj) ?? current, base(obj, "server",
        { text: obj.topic ? `topic of ${obj.room}: ${obj.topic}` : `${obj.room} has no topic` }));
    },
    rooms(obj) {
      const list = (obj.rooms || []).map((r) =>
        `${r.name} (${r.members})${r.topic ? ` ${r.topic}` : ""}`);
      addLine(where(obj) ?? current, base(obj, "server",
        { text: `rooms (${obj.total}):\n${list.join("\n")}` }));
    },
    help(obj) {
      serverCommands = (obj.commands || []).map((c) => c.name).filter(Boolean);
      if (where(obj) === null) return;   // our own request at connect: not shown
      const text = obj.details ? `${obj.details}` :
        (obj.commands || []).map((c) => `/${c.usage || c.name} — ${c.help || ""}`).join("\n");
      addLine(where(obj) ?? current, base(obj, "server", { text }));
    },
    whois(obj) {
      const lines = [`${obj.nick} is ${obj.userhost}`];
      if (obj.real_name) lines.push(`real name: ${obj.real_name}`);
      if (obj.identified_as) lines.push(`identified as ${obj.identified_as}`);
      if (obj.rooms) lines.push(`in ${obj.rooms.join(" ")}`);
      if (obj.away) lines.push(`away: ${obj.away}`);
      lines.push(`idle ${obj.idle} s`);
      addLine(where(obj) ?? current, base(obj, "server", { text: lines.join("\n") }));
    },
    history(obj) {
      const key = obj.room && buffers.has(keyOf(obj.room)) ? keyOf(obj.room) : where(obj);
      if (key === null) return;
      let text;
      if (obj.edge === "start") text = `history of ${obj.room || obj.nick || ""}`;
      else text = obj.live ? "end of history · live chat follows" : "end of history";
      if (obj.edge === "start" && !obj.count) return;
      if (obj.edge === "end" && !obj.count) return;
      addLine(key, { kind: "divider", text });
    },
  };

  // Replies that carry data and no text: each worded as a line from the server.
  const worded = {
    away_status: (o) => (o.away ? `you are away: ${o.away}` : "you are back"),
    online: (o) => {
      const on = (o.online || []).map((m) => m.nick + (m.away ? " (away)" : ""));
      return on.length ? `online: ${on.join(", ")}` : `none of ${(o.asked || []).join(", ")} is online`;
    },
    server_counts: (o) => `${o.users} users (${o.operators} operators), ${o.rooms} rooms, ` +
      `${o.unknown} connecting; at most ${o.most} at once`,
    room_modes: (o) => `${o.room}: ${o.invite_only ? "invite only" : "anyone may join"}, ` +
      `${o.topic_lock ? "only operators set the topic" : "anyone sets the topic"}`,
    bans: (o) => {
      const entries = (o.entries || []).map((e) =>
        `${e.kind} ${e.subject} by ${e.set_by}${e.until ? ` until ${e.until}` : ""}` +
        `${e.reason ? `: ${e.reason}` : ""}`);
      return entries.length ? `bans and mutes in ${o.room}:\n${entries.join("\n")}` :
        `no bans or mutes in ${o.room}`;
    },
  };
  const EVENT_FIELDS = new Set(["type", "id", "time", "from", "server", "plugin", "re", "history"]);

  /** A reply this page has no words for (a plugin's own kind): its fields, as text. */
  function fieldsOf(obj) {
    const parts = [];
    for (const [key, value] of Object.entries(obj)) {
      if (EVENT_FIELDS.has(key) || value === null || value === undefined) continue;
      parts.push(`${key}: ${typeof value === "object" ? JSON.stringify(value) : value}`);
    }
    return `${obj.type}${parts.length ? ` (${parts.join(", ")})` : ""}`;
  }

  function modeText(obj) {
    const changes = (obj.changes || []).map((c) => {
      const what = c.mode + (c.arg ? ` ${c.nick || c.arg}` : "");
      return `${c.on ? "+" : "-"}${what}`;
    });
    const why = obj.text ? `: ${obj.text}` : "";
    const how = obj.seconds ? ` for ${obj.seconds} s` : "";
    return `${obj.from} set ${changes.join(", ")} in ${obj.room}${how}${why}`;
  }

  function setTopic(buf, topic) {
    buf.topic = topic;
    if (keyOf(buf.name) === current) {
      ui.topic.textContent = topic;
      ui.topic.title = topic;
    }
  }

  function handle(obj) {
    const fn = handlers[obj.type];
    if (fn) {
      fn(obj);
      return;
    }
    if (obj.type === "account" || obj.type === "realname") return;  // not shown (as on nc)
    let text;
    let kind = "server";
    if (obj.type === "mode") { text = modeText(obj); kind = "event"; }
    else if (obj.type === "invite") text = `${obj.from} invites you to ${obj.room}: /join ${obj.room}`;
    else if (worded[obj.type]) text = worded[obj.type](obj);
    else text = obj.text || fieldsOf(obj);  // a kind this page does not know
    const key = obj.room && buffers.has(keyOf(obj.room)) ? keyOf(obj.room) : where(obj);
    if (key === null) return;
    addLine(key, base(obj, kind, { text }));
  }

  /** Keep what a reconnect (or a reload of the tab) resumes: rooms, the room in
   *  view, the nick. */
  function rememberRooms() {
    try {
      sessionStorage.setItem("chatd.rooms", JSON.stringify(wantRooms));
      sessionStorage.setItem("chatd.current", wantCurrent || "");
      sessionStorage.setItem("chatd.nick", wantNick || "");
    } catch { /* storage may be off: the page still works */ }
  }

  // ---- commands out ---------------------------------------------------------
  function splitWord(text) {
    const m = /^(\S*)\s*([\s\S]*)$/.exec(text);
    return [m[1], m[2]];
  }

  function submit(text) {
    const buf = buffers.get(current);
    const room = buf && buf.kind === "room" ? buf.name : undefined;
    if (!text.startsWith("/") || text.startsWith("//")) {
      const said = text.startsWith("//") ? text.slice(1) : text;
      if (buf && buf.kind === "private") return send({ cmd: "msg", to: buf.name, text: said });
      if (!room) {
        addLine(current, { kind: "error", text: "join a room first: /join #lobby" });
        return false;
      }
      const ok = send({ cmd: "say", room, text: said });
      if (ok) addLine(current, { kind: "message", nick: myNick, text: said,
                                 time: new Date().toISOString() });
      return ok;
    }
    const [word, rest] = splitWord(text.slice(1));
    const cmd = word.toLowerCase();
    switch (cmd) {
      case "me": {
        if (!room) {
          addLine(current, { kind: "error", text: "/me works in a room" });
          return false;
        }
        const ok = send({ cmd: "me", room, text: rest });
        if (ok) addLine(current, { kind: "action", nick: myNick, text: rest,
                                   time: new Date().toISOString() });
        return ok;
      }
      case "msg": case "query": {
        const [to, said] = splitWord(rest);
        if (!to) return send({ cmd, args: rest });
        const target = buffer(to, isRoom(to) ? "room" : "private");
        showBuffer(keyOf(target.name));
        if (cmd === "query" && !said) return true;
        return send({ cmd: "msg", to, text: said }, keyOf(target.name));
      }
      case "join": {
        const [name] = splitWord(rest);
        if (!name) return send({ cmd: "join", args: rest });
        const target = name.startsWith("#") ? name : `#${name}`;
        return send({ cmd: "join", room: target }, keyOf(target));
      }
      case "part": case "leave": {
        const [first, reason] = splitWord(rest);
        const target = first.startsWith("#") ? first : room;
        const why = first.startsWith("#") ? reason : rest;
        const req = { cmd: "part" };
        if (target) req.room = target;
        if (why) req.reason = why;
        return send(req);
      }
      case "close": {
        if (buf && (buf.kind === "private" || (buf.kind === "room" && !buf.joined))) {
          buffers.delete(current);
          showBuffer(orderedKeys()[0]);
          return true;
        }
        return submit(`/part ${rest}`);
      }
      case "nick": return send({ cmd: "nick", nick: rest.trim() });
      case "pass": {
        listenerPassword = rest.trim();
        return send({ cmd: "pass", password: listenerPassword });
      }
      case "topic": {
        const req = { cmd: "topic" };
        if (room) req.room = room;
        if (rest) req.text = rest;
        return send(req);
      }
      case "who": return send(rest ? { cmd: "who", room: rest.trim() } : { cmd: "who", room });
      case "notice": {
        const [to, said] = splitWord(rest);
        return send({ cmd: "notice", to, text: said });
      }
      case "clear": {
        if (buf) { buf.lines = []; ui.log.replaceChildren(); }
        return true;
      }
      case "quit": {
        quitting = true;
        return send(rest ? { cmd: "quit", reason: rest } : { cmd: "quit" });
      }
      default:
        return send({ cmd, args: rest });
    }
  }

  // ---- the line editor: history and completion ---------------------------------
  function candidates(word, atStart) {
    if (atStart && word.startsWith("/")) {
      const names = new Set([...LOCAL_COMMANDS, ...serverCommands]);
      return [...names].sort().map((n) => `/${n}`);
    }
    if (word.startsWith("#")) {
      return [...buffers.values()].filter((b) => b.kind === "room").map((b) => b.name);
    }
    const buf = buffers.get(current);
    const nicks = buf ? [...buf.members.values()].map((m) => m.nick) : [];
    if (buf && buf.kind === "private") nicks.push(buf.name);
    return nicks.filter((n) => !myNick || keyOf(n) !== keyOf(myNick)).sort();
  }

  function complete(backwards) {
    const input = ui.input;
    const value = input.value;
    if (!completion || completion.value !== value) {
      const end = input.selectionStart;
      const start = value.lastIndexOf(" ", end - 1) + 1;
      const word = value.slice(start, end);
      const atStart = start === 0;
      const matches = candidates(word, atStart)
        .filter((c) => c.toLowerCase().startsWith(word.toLowerCase()));
      if (!matches.length) return;
      completion = { matches, index: backwards ? matches.length - 1 : 0, start, end, atStart,
                     word };
    } else {
      const n = completion.matches.length;
      completion.index = (completion.index + (backwards ? n - 1 : 1)) % n;
    }
    const choice = completion.matches[completion.index];
    const isNick = !choice.startsWith("/") && !choice.startsWith("#");
    const suffix = completion.atStart && isNick ? ": " : " ";
    const before = value.slice(0, completion.start);
    const after = value.slice(completion.end).replace(/^(: | )/, "");
    input.value = before + choice + suffix + after;
    const caret = before.length + choice.length + suffix.length;
    input.setSelectionRange(caret, caret);
    completion.end = caret;
    completion.value = input.value;
  }

  function recall(step) {
    if (!typed.length) return;
    if (typedPos === typed.length) recall.draft = ui.input.value;
    typedPos = Math.max(0, Math.min(typed.length, typedPos + step));
    ui.input.value = typedPos === typed.length ? (recall.draft || "") : typed[typedPos];
    const end = ui.input.value.length;
    ui.input.setSelectionRange(end, end);
  }

  function switchBy(step) {
    const keys = orderedKeys();
    const at = keys.indexOf(current);
    showBuffer(keys[(at + step + keys.length) % keys.length]);
  }

  function closePanes() {
    for (const [pane, button] of [[ui.roomsPane, "toggle-rooms"], [ui.membersPane, "toggle-members"]]) {
      pane.classList.remove("open");
      $(button).setAttribute("aria-expanded", "false");
    }
  }
  function togglePane(pane, button) {
    const open = !pane.classList.contains("open");
    closePanes();
    pane.classList.toggle("open", open);
    $(button).setAttribute("aria-expanded", String(open));
    if (open) (pane.querySelector("button[aria-current=true]") || pane).focus();
  }

  ui.editor.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = ui.input.value;
    if (!text.trim()) return;
    if (submit(text) !== false) {
      if (typed[typed.length - 1] !== text) typed.push(text);
      if (typed.length > 200) typed.shift();
      typedPos = typed.length;
      ui.input.value = "";
    }
    completion = null;
  });

  ui.input.addEventListener("keydown", (ev) => {
    if (ev.key === "Tab" && !ev.altKey && !ev.ctrlKey && ui.input.value) {
      ev.preventDefault();
      complete(ev.shiftKey);
      return;
    }
    if (ev.key !== "Shift") completion = ev.key === "Tab" ? completion : null;
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowUp") { ev.preventDefault(); recall(-1); }
    else if (ev.key === "ArrowDown") { ev.preventDefault(); recall(1); }
    else if (ev.key === "Escape") { ui.input.value = ""; typedPos = typed.length; }
    else if (ev.key === "PageUp") { ev.preventDefault(); ui.log.scrollTop -= ui.log.clientHeight * 0.9; }
    else if (ev.key === "PageDown") { ev.preventDefault(); ui.log.scrollTop += ui.log.clientHeight * 0.9; }
  });

  document.addEventListener("keydown", (ev) => {
    if (!ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowUp") { ev.preventDefault(); switchBy(-1); }
    else if (ev.key === "ArrowDown") { ev.preventDefault(); switchBy(1); }
    else if (/^[1-9]$/.test(ev.key)) {
      const key = orderedKeys()[Number(ev.key) - 1];
      if (key) { ev.preventDefault(); showBuffer(key); }
    } else if (ev.key === "r" || ev.key === "R") { ev.preventDefault(); togglePane(ui.roomsPane, "toggle-rooms"); }
    else if (ev.key === "m" || ev.key === "M") { ev.preventDefault(); togglePane(ui.membersPane, "toggle-members"); }
    else return;
    if (!ui.roomsPane.classList.contains("open") && !ui.membersPane.classList.contains("open")) {
      ui.input.focus();
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && (ui.roomsPane.classList.contains("open") ||
                                ui.membersPane.classList.contains("open"))) {
      closePanes();
      ui.input.focus();
    }
  });

  $("toggle-rooms").addEventListener("click", () => togglePane(ui.roomsPane, "toggle-rooms"));
  $("toggle-members").addEventListener("click", () => togglePane(ui.membersPane, "toggle-members"));
  $("reconnect-now").addEventListener("click", () => { attempt = 0; connect(); });

  // ---- start --------------------------------------------------------------------
  try {
    wantRooms = JSON.parse(sessionStorage.getItem("chatd.rooms") || "[]");
    wantNick = sessionStorage.getItem("chatd.nick") || null;
    wantCurrent = sessionStorage.getItem("chatd.current") || null;
  } catch { wantRooms = []; }
  buffers.set(SERVER, { name: "server", kind: "server", lines: [], unread: 0, mention: false,
                        members: new Map(), topic: "", joined: false, seen: new Set() });
  showBuffer(SERVER);
  connect();
  ui.input.focus();
})();
