// The chat page: connect with a name, join rooms, send to a room, to everyone or to one user, and
// show every message as it arrives. The connection is @bcast/client's (served by the app from the
// package's dist): it reconnects with backoff, rejoins the rooms and recovers the messages missed
// meanwhile, each once. Same page for the three apps; on socket.io the client runs over a
// WebSocket-shaped wrapper of a socket.io connection. The "Measured" panel polls /dashboard.json.
import { BcastClient } from '/bcast-client/index.js';
import { SocketIoWebSocket } from '/socketio-websocket.js';

const $ = (id) => document.getElementById(id);
const { transport, wsPath } = document.body.dataset;

const ui = {
  status: $('status'),
  connectForm: $('connect-form'),
  name: $('name'),
  connect: $('connect'),
  joinForm: $('join-form'),
  room: $('room'),
  join: $('join'),
  rooms: $('rooms'),
  online: $('online'),
  log: $('log'),
  sendForm: $('send-form'),
  target: $('target'),
  toRoom: $('to-room'),
  toUser: $('to-user'),
  text: $('text'),
  send: $('send'),
};

const NAME = /^[\p{L}\p{N}][\p{L}\p{N} _.-]{0,31}$/u; // what the demo server accepts as a name
let client; // the BcastClient, from Connect to Disconnect
let me = '';
const rooms = new Set(); // rooms joined (the client rejoins them after a reconnect)
const online = new Map(); // room -> Map(userId -> connections), from presence
const recovering = new Map(); // room -> messages recovered so far, between a reconnect and its answer

// ---- connection -----------------------------------------------------------------------------------

function urlFor(name) {
  if (transport === 'socket.io') return `${location.origin}/?name=${encodeURIComponent(name)}`;
  const url = new URL(wsPath || '/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('name', name);
  return url.href;
}

ui.connectForm.addEventListener('submit', (event) => {
  event.preventDefault();
  if (client) {
    const closing = client;
    client = undefined;
    closing.close('bye');
    rooms.clear();
    online.clear();
    renderRooms();
    renderOnline();
    setOnline(false, 'offline');
    system('Disconnected.');
    return;
  }
  const name = ui.name.value.trim();
  if (!NAME.test(name)) {
    system('A name is 1 to 32 letters, digits, spaces, "_", "." or "-", starting with a letter or digit.', 'error');
    ui.name.focus();
    return;
  }
  me = name;
  setStatus('connecting', `connecting as ${name}…`);
  ui.connect.disabled = true;
  const c = (client = new BcastClient({
    url: () => urlFor(name),
    ...(transport === 'socket.io' ? { WebSocket: SocketIoWebSocket } : {}),
    minReconnectDelayMs: 250,
    maxReconnectDelayMs: 5_000,
  }));
  const mine = (listener) => (...args) => (client === c ? listener(...args) : undefined);
  c.on('open', mine(({ reconnect }) => {
    setOnline(true, `online as ${me}`);
    system(reconnect ? 'Reconnected.' : `Connected as ${me}.`);
    // The client has just sent its rejoins (with the last position of each room); these follow
    // them on the same socket, so each answer lists this connection too.
    for (const room of rooms) {
      if (reconnect) recovering.set(room, 0);
      who(room);
    }
  }));
  c.on('close', mine(({ code, reason, willReconnect }) => {
    setOnline(false, willReconnect ? 'reconnecting…' : 'offline');
    system(`Connection lost (${code}${reason ? ` ${reason}` : ''})${willReconnect ? '; reconnecting…' : '.'}`, 'error');
    if (!willReconnect) {
      client = undefined;
      setOnline(false, 'offline');
    }
  }));
  c.on('reconnecting', mine(({ attempt, delayMs }) => setStatus('connecting', `reconnecting (attempt ${attempt}, in ${Math.round(delayMs)} ms)…`)));
  c.on('recovery', mine(({ room, recovered }) => {
    const count = recovering.get(room) ?? 0;
    recovering.delete(room);
    if (recovered) system(count === 0 ? `Back in # ${room}: nothing was missed.` : `Back in # ${room}: ${count} missed message${count === 1 ? '' : 's'} recovered.`);
    else system(`Back in # ${room}, but some messages were lost (the history no longer covers the gap).`, 'error');
  }));
  c.on('presence', mine(({ room, event, userId }) => presenceEvent(room, event, userId)));
  c.on('message', mine(receive));
  c.on('error', mine((error) => {
    // A refused or failed attempt is followed by a close event that says what happens next.
    if (error.code !== 'CONNECTION_ERROR') system(`${error.code}: ${error.message}`, 'error');
  }));
});

function who(room) {
  try {
    client?.send({ type: 'who', room });
  } catch {
    // not open: asked again at the next open
  }
}

ui.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const room = ui.room.value.trim();
  if (!room || !client) return;
  const c = client;
  c.join(room).then(
    () => {
      if (client !== c) return;
      if (!rooms.has(room)) system(`Joined # ${room}.`);
      rooms.add(room);
      renderRooms(room);
      who(room);
    },
    (error) => {
      if (client === c && error.code !== 'DISCONNECTED') system(`Could not join # ${room}: ${error.message}`, 'error');
    },
  );
});

function leave(room) {
  rooms.delete(room);
  online.delete(room);
  renderRooms();
  renderOnline();
  client?.leave(room).then(
    () => system(`Left # ${room}.`),
    (error) => system(`Could not leave # ${room}: ${error.message}`, 'error'),
  );
}

ui.sendForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !client) return;
  const to = ui.target.value;
  const message = { type: 'chat', to, text };
  if (to === 'room') {
    if (!ui.toRoom.value) return system('Join a room first.', 'error');
    message.room = ui.toRoom.value;
  }
  if (to === 'user') {
    if (!ui.toUser.value.trim()) return system('Whom to? Type a user name or click one in the list.', 'error');
    message.userId = ui.toUser.value.trim();
  }
  try {
    client.send(message);
  } catch (error) {
    return system(`Not sent: ${error.message}`, 'error');
  }
  ui.text.value = '';
  ui.text.focus();
});

ui.target.addEventListener('change', syncTarget);

function syncTarget() {
  ui.toRoom.hidden = ui.target.value !== 'room';
  ui.toUser.hidden = ui.target.value !== 'user';
}

// ---- what the server sends ----------------------------------------------------------------------

/** A message from the server; `meta.room` and `meta.offset` for messages of a room with history. */
function receive(message, meta) {
  // Between a reconnect and the rejoin's answer, what comes for the room is what was missed.
  const recovered = meta.room !== undefined && recovering.has(meta.room);
  const count = () => recovered && recovering.set(meta.room, recovering.get(meta.room) + 1);
  if (message && typeof message === 'object' && !Array.isArray(message)) {
    switch (message.type) {
      case 'chat':
        count();
        return chat(message, recovered);
      case 'presence': // the answer to `who`: everyone in the room now
        return presenceList(message.room, Array.isArray(message.users) ? message.users : []);
      case 'bcast.presence': // a join or leave, when it came as a message (the client's presence event handles the rest)
        return presenceEvent(message.room, message.event, message.userId);
      case 'notice':
        return system(String(message.text), message.level === 'error' ? 'error' : 'info');
    }
  }
  // Anything else, e.g. from POST /broadcast.
  count();
  const text = typeof message === 'string' ? message : typeof message?.text === 'string' ? message.text : JSON.stringify(message);
  const badge = typeof message?.type === 'string' ? message.type : meta.room !== undefined ? `# ${meta.room}` : 'broadcast';
  entry({ from: 'server', badge, text, kind: 'server', recovered });
}

function chat(message, recovered) {
  const mine = message.from === me;
  let badge = 'everyone';
  if (message.to === 'room') badge = `# ${message.room}`;
  if (message.to === 'user') badge = mine && message.userId !== me ? `private → ${message.userId}` : 'private → you';
  entry({ from: mine ? `${message.from} (you)` : message.from, badge, text: message.text, kind: message.to === 'user' ? 'private' : mine ? 'mine' : 'other', at: message.at, recovered });
}

// ---- presence ---------------------------------------------------------------------------------------

function presenceList(room, users) {
  recovering.delete(room); // (a rejoin without a position has no recovery answer: this follows it)
  if (!rooms.has(room)) return;
  online.set(room, new Map(users.filter((u) => typeof u?.userId === 'string').map((u) => [u.userId, Number(u.connections) || 1])));
  renderOnline();
}

/** One connection of `userId` joined or left `room` (a user with two tabs is counted twice). */
function presenceEvent(room, event, userId) {
  const users = online.get(room);
  if (!users || typeof userId !== 'string') return;
  const n = (users.get(userId) ?? 0) + (event === 'join' ? 1 : -1);
  if (n > 0) users.set(userId, n);
  else users.delete(userId);
  renderOnline();
}

function renderOnline() {
  ui.online.replaceChildren();
  if (online.size === 0) {
    const p = document.createElement('p');
    p.className = 'muted';
    p.textContent = client ? 'join a room to see who is there' : 'nobody yet: connect and join a room';
    ui.online.append(p);
    return;
  }
  for (const room of [...online.keys()].sort()) {
    const heading = document.createElement('h3');
    heading.textContent = `# ${room}`;
    const list = document.createElement('ul');
    list.className = 'users';
    list.dataset.room = room;
    for (const [user, connections] of [...online.get(room)].sort(([a], [b]) => a.localeCompare(b))) {
      const item = li('', user === me ? 'me' : '');
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = `${user}${user === me ? ' (you)' : ''}${connections > 1 ? ` ×${connections}` : ''}`;
      button.dataset.user = user;
      button.title = `send to ${user}`;
      button.addEventListener('click', () => {
        ui.target.value = 'user';
        ui.toUser.value = user;
        syncTarget();
        ui.text.focus();
      });
      item.append(button);
      list.append(item);
    }
    ui.online.append(heading, list);
  }
}

// ---- rendering ------------------------------------------------------------------------------------

function entry({ from, badge, text, kind, at, recovered }) {
  const item = li('', `msg ${kind}${recovered ? ' recovered' : ''}`);
  const head = document.createElement('div');
  head.className = 'head';
  const who = document.createElement('strong');
  who.textContent = from;
  const tag = document.createElement('span');
  tag.className = 'badge';
  tag.textContent = badge;
  head.append(who, tag);
  if (recovered) {
    const mark = document.createElement('span');
    mark.className = 'recovered-mark';
    mark.textContent = 'recovered';
    mark.title = 'sent while this page was disconnected';
    head.append(mark);
  }
  const time = document.createElement('time');
  time.textContent = new Date(at ?? Date.now()).toLocaleTimeString();
  head.append(time);
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  item.append(head, body);
  append(item);
}

function system(text, level = 'info') {
  append(li(text, `system ${level}`));
}

function append(item) {
  const atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  ui.log.append(item);
  while (ui.log.children.length > 500) ui.log.firstElementChild.remove();
  if (atBottom) ui.log.scrollTop = ui.log.scrollHeight;
}

function li(text, className) {
  const item = document.createElement('li');
  if (text) item.textContent = text;
  if (className) item.className = className;
  return item;
}

function renderRooms(select) {
  ui.rooms.replaceChildren();
  const current = select ?? ui.toRoom.value;
  ui.toRoom.replaceChildren();
  for (const room of [...rooms].sort()) {
    const chip = li('', 'chip');
    const label = document.createElement('span');
    label.textContent = `# ${room}`;
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = '×';
    button.title = `leave ${room}`;
    button.addEventListener('click', () => leave(room));
    chip.append(label, button);
    ui.rooms.append(chip);
    const option = document.createElement('option');
    option.value = room;
    option.textContent = `# ${room}`;
    ui.toRoom.append(option);
  }
  if (rooms.has(current)) ui.toRoom.value = current;
}

function setStatus(kind, text) {
  ui.status.className = `status ${kind}`;
  ui.status.textContent = text;
}

function setOnline(isOnline, text) {
  setStatus(isOnline ? 'online' : client ? 'connecting' : 'offline', text);
  for (const el of [ui.room, ui.join, ui.target, ui.toRoom, ui.toUser, ui.text, ui.send]) el.disabled = !isOnline;
  ui.name.disabled = Boolean(client);
  ui.connect.disabled = false;
  ui.connect.textContent = client ? 'Disconnect' : 'Connect';
}

// ---- the "Measured" panel ---------------------------------------------------------------------------

const panel = {
  health: $('health'),
  what: $('last-what'),
  delivered: $('last-delivered'),
  failed: $('last-failed'),
  dropped: $('last-dropped'),
  removed: $('last-removed'),
  duration: $('last-duration'),
  trace: $('last-trace'),
  traceNone: $('last-trace-none'),
  rateNow: $('rate-now'),
  chart: $('rate-chart'),
  circuits: $('circuits'),
};
const SVG = 'http://www.w3.org/2000/svg';

function renderPanel(d) {
  panel.health.textContent = d.health.status;
  panel.health.className = `pill ${d.health.status}`;
  panel.health.title = d.health.reasons.length ? d.health.reasons.join('; ') : 'getHealthStatus(): no reasons';
  const last = d.last;
  if (last) {
    panel.what.textContent = `${last.operation}${last.messageType ? ` · ${last.messageType}` : ''} · ${last.recipients} recipient${last.recipients === 1 ? '' : 's'} · ${new Date(last.at).toLocaleTimeString()}`;
    panel.delivered.textContent = String(last.delivered);
    panel.failed.textContent = String(last.failed);
    panel.dropped.textContent = String(last.dropped);
    panel.removed.textContent = String(last.removed);
    panel.duration.textContent = `${last.durationMs < 1 ? last.durationMs.toFixed(2) : last.durationMs.toFixed(1)} ms`;
    for (const [key, el] of [['failed', panel.failed], ['dropped', panel.dropped], ['removed', panel.removed]]) el.classList.toggle('bad', last[key] > 0);
  }
  if (last?.traceUrl) {
    panel.trace.href = last.traceUrl;
    panel.trace.title = `trace ${last.traceId}`;
    panel.trace.hidden = false;
    panel.traceNone.textContent = '';
  } else {
    panel.trace.hidden = true;
    panel.trace.removeAttribute('href');
    panel.traceNone.textContent = !last ? '' : last.traceId ? `trace ${last.traceId} (set BCAST_TRACE_URL for a link)` : 'no trace (the app runs without the OpenTelemetry SDK)';
  }
  renderChart(d.deliveries.perSecond);
  const circuits = Object.entries(d.circuits);
  panel.circuits.textContent = circuits.length ? circuits.map(([scope, state]) => `${scope}: ${state}`).join(', ') : 'none yet (no guarded call has run)';
}

function renderChart(values) {
  const width = 240;
  const height = 60;
  const max = Math.max(1, ...values);
  const step = width / values.length;
  const bars = values.map((value, i) => {
    const bar = document.createElementNS(SVG, 'rect');
    const h = value === 0 ? 0 : Math.max(1.5, (value / max) * (height - 4));
    bar.setAttribute('class', 'bar');
    bar.setAttribute('x', String(i * step + 0.5));
    bar.setAttribute('y', String(height - h));
    bar.setAttribute('width', String(Math.max(1, step - 1)));
    bar.setAttribute('height', String(h));
    bar.setAttribute('data-value', String(value));
    const title = document.createElementNS(SVG, 'title');
    title.textContent = `${values.length - i} s ago: ${value} deliveries`;
    bar.append(title);
    return bar;
  });
  const base = document.createElementNS(SVG, 'line');
  base.setAttribute('class', 'axis');
  base.setAttribute('x1', '0');
  base.setAttribute('x2', String(width));
  base.setAttribute('y1', String(height - 0.5));
  base.setAttribute('y2', String(height - 0.5));
  panel.chart.replaceChildren(base, ...bars);
  panel.chart.dataset.max = String(Math.max(...values));
  panel.rateNow.textContent = `now ${values.at(-1) ?? 0}/s · peak ${Math.max(...values)}/s`;
}

async function poll() {
  try {
    if (!document.hidden) {
      const res = await fetch('/dashboard.json', { cache: 'no-store' });
      if (res.ok) renderPanel(await res.json());
    }
  } catch {
    // the server is restarting or gone: keep the last picture
  } finally {
    setTimeout(poll, 1_000);
  }
}

syncTarget();
renderOnline();
ui.name.focus();
void poll();
