// The chat page: connect with a name, join rooms, send to a room, to everyone or to one user, and
// show every message as it arrives. Same page for all three apps; only the transport differs
// (a plain WebSocket, or socket.io's client served by the socket.io server).
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
  users: $('users'),
  log: $('log'),
  sendForm: $('send-form'),
  target: $('target'),
  toRoom: $('to-room'),
  toUser: $('to-user'),
  text: $('text'),
  send: $('send'),
};

const NAME = /^[\p{L}\p{N}][\p{L}\p{N} _.-]{0,31}$/u; // what the demo server accepts as a name
let link; // the open connection: { send(object), close() }
let me = '';
let leaving = false; // the person clicked Disconnect
const rooms = new Set(); // rooms joined, re-joined after a reconnect
const pending = new Map(); // requestId -> room, for join / leave answers
let nextRequest = 1;

// ---- transports ---------------------------------------------------------------------------------

function open(name, on) {
  if (transport === 'socket.io') {
    // socket.io's client reconnects by itself; `auth` is sent with every (re)connection.
    const socket = globalThis.io({ auth: { name } });
    socket.on('connect', on.open);
    // `active` is false once the client gives up (refused by the server, or closed by us).
    socket.on('disconnect', (reason) => on.close(reason, !socket.active));
    socket.on('connect_error', (error) => on.close(error.message, !socket.active));
    socket.on('message', (data) => on.message(typeof data === 'string' ? parse(data) : data));
    return { send: (message) => socket.emit('message', message), close: () => socket.disconnect() };
  }
  const url = new URL(wsPath || '/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('name', name);
  const ws = new WebSocket(url);
  ws.addEventListener('open', on.open);
  ws.addEventListener('close', (event) => on.close(event.code === 1006 ? 'connection refused or lost' : `closed ${event.code} ${event.reason}`.trim(), true));
  ws.addEventListener('message', (event) => on.message(parse(event.data)));
  return { send: (message) => ws.send(JSON.stringify(message)), close: () => ws.close(1000, 'bye') };
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// ---- connection -----------------------------------------------------------------------------------

ui.connectForm.addEventListener('submit', (event) => {
  event.preventDefault();
  if (link) {
    leaving = true;
    link.close();
    link = undefined;
    setOnline(false, 'offline');
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
  link = open(name, {
    open() {
      setOnline(true, `online as ${me}`);
      system(`Connected as ${me}.`);
      for (const room of rooms) request('join', room);
    },
    close(reason, final) {
      if (leaving) {
        leaving = false;
        return system('Disconnected.');
      }
      if (final) link = undefined;
      setOnline(false, final ? 'offline' : 'reconnecting…');
      system(`Disconnected: ${reason}`, 'error');
    },
    message: receive,
  });
});

function request(type, room) {
  const requestId = nextRequest++;
  pending.set(requestId, room);
  link?.send({ type, room, requestId });
}

ui.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const room = ui.room.value.trim();
  if (room) request('join', room);
});

ui.sendForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !link) return;
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
  link.send(message);
  ui.text.value = '';
  ui.text.focus();
});

ui.target.addEventListener('change', syncTarget);

function syncTarget() {
  ui.toRoom.hidden = ui.target.value !== 'room';
  ui.toUser.hidden = ui.target.value !== 'user';
}

// ---- what the server sends ----------------------------------------------------------------------

function receive(message) {
  if (message && typeof message === 'object' && !Array.isArray(message)) {
    switch (message.type) {
      case 'chat':
        return chat(message);
      case 'presence':
        return presence(Array.isArray(message.users) ? message.users : []);
      case 'ok':
        return answered(message);
      case 'error':
        pending.delete(message.requestId);
        return system(`${message.code}: ${message.message}`, 'error');
      case 'notice':
        return system(String(message.text), message.level === 'error' ? 'error' : 'info');
      case 'pong':
        return;
    }
  }
  // Anything else, e.g. from POST /broadcast.
  const text = typeof message === 'string' ? message : typeof message?.text === 'string' ? message.text : JSON.stringify(message);
  entry({ from: 'server', badge: typeof message?.type === 'string' ? message.type : 'broadcast', text, kind: 'server' });
}

function answered(message) {
  pending.delete(message.requestId);
  if (message.op === 'join') {
    if (!rooms.has(message.room)) system(`Joined ${message.room}.`);
    rooms.add(message.room);
  } else {
    rooms.delete(message.room);
    system(`Left ${message.room}.`);
  }
  renderRooms(message.op === 'join' ? message.room : undefined);
}

function chat(message) {
  const mine = message.from === me;
  let badge = 'everyone';
  if (message.to === 'room') badge = `# ${message.room}`;
  if (message.to === 'user') badge = mine && message.userId !== me ? `private → ${message.userId}` : 'private → you';
  entry({ from: mine ? `${message.from} (you)` : message.from, badge, text: message.text, kind: message.to === 'user' ? 'private' : mine ? 'mine' : 'other', at: message.at });
}

function presence(users) {
  ui.users.replaceChildren();
  if (users.length === 0) ui.users.append(li('nobody', 'muted'));
  for (const user of users) {
    const item = li('', user === me ? 'me' : '');
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = user === me ? `${user} (you)` : user;
    button.title = `send to ${user}`;
    button.addEventListener('click', () => {
      ui.target.value = 'user';
      ui.toUser.value = user;
      syncTarget();
      ui.text.focus();
    });
    item.append(button);
    ui.users.append(item);
  }
}

// ---- rendering ------------------------------------------------------------------------------------

function entry({ from, badge, text, kind, at }) {
  const item = li('', `msg ${kind}`);
  const head = document.createElement('div');
  head.className = 'head';
  const who = document.createElement('strong');
  who.textContent = from;
  const tag = document.createElement('span');
  tag.className = 'badge';
  tag.textContent = badge;
  const time = document.createElement('time');
  time.textContent = new Date(at ?? Date.now()).toLocaleTimeString();
  head.append(who, tag, time);
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
    const leave = document.createElement('button');
    leave.type = 'button';
    leave.textContent = '×';
    leave.title = `leave ${room}`;
    leave.addEventListener('click', () => request('leave', room));
    chip.append(label, leave);
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

function setOnline(online, text) {
  setStatus(online ? 'online' : 'offline', text);
  for (const el of [ui.room, ui.join, ui.target, ui.toRoom, ui.toUser, ui.text, ui.send]) el.disabled = !online;
  ui.name.disabled = online || Boolean(link);
  ui.connect.disabled = false;
  ui.connect.textContent = link ? 'Disconnect' : 'Connect';
  if (!online && !link) presence([]);
}

syncTarget();
ui.name.focus();
