// clients/typescript/dist/backoff.js
function backoffDelay(attempt, options = {}, random = Math.random) {
  const initial = options.initialMs ?? 250;
  const max = options.maxMs ?? 1e4;
  const step = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return step / 2 + random() * (step / 2);
}

// clients/typescript/dist/commands.js
var CommandError = class extends Error {
  code;
  field;
  constructor(code, message, field) {
    super(message);
    this.code = code;
    this.field = field;
    this.name = "CommandError";
  }
};
function newIdempotencyKey() {
  return globalThis.crypto.randomUUID();
}
function commandMessage(id, command) {
  return JSON.stringify({ type: "command", id, name: command.name, input: command.input, idempotencyKey: command.key });
}
function answer(command, message) {
  if (message.type === "error") {
    command.reject(new CommandError(message.code ?? "error", message.message, message.field));
    return true;
  }
  if (message.status === "accepted" && command.wait && !command.produced) {
    command.produced = true;
    return false;
  }
  command.resolve({ commandId: message.commandId, status: message.status, position: message.position });
  return true;
}
async function commandOverHttp(fetcher, url, headers, command, delay) {
  const request = {
    method: "POST",
    headers: {
      ...headers,
      "content-type": "application/json",
      "idempotency-key": command.key,
      prefer: command.wait ? "wait=30" : "respond-async"
    },
    body: JSON.stringify(command.input)
  };
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetcher(url, request);
    } catch (error) {
      if (attempt >= 4)
        throw error;
    }
    if (response && response.status !== 503) {
      const body = await response.json();
      if (response.ok)
        return body;
      throw new CommandError(body.error?.code ?? String(response.status), body.error?.message ?? response.statusText, body.error?.field);
    }
    if (response && attempt >= 4)
      throw new CommandError("unavailable", "the command could not be produced (503)");
    await new Promise((resolve) => setTimeout(resolve, delay(attempt)));
  }
}

// clients/typescript/dist/mergePatch.js
function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function applyMergePatch(target, patch) {
  if (!isObject(patch))
    return patch;
  const result = isObject(target) ? { ...target } : {};
  for (const [name, value] of Object.entries(patch)) {
    if (value === null)
      delete result[name];
    else
      result[name] = applyMergePatch(result[name], value);
  }
  return result;
}

// clients/typescript/dist/rows.js
var RowSet = class {
  byKey = /* @__PURE__ */ new Map();
  sorted = [];
  /** The pages of a snapshot received so far, until its last one. */
  pages;
  /** Forgets the pages of a snapshot cut short (the subscription starts again). */
  dropPages() {
    this.pages = void 0;
  }
  get size() {
    return this.byKey.size;
  }
  get(key) {
    return this.byKey.get(key);
  }
  /** The keys in order. */
  keys() {
    return this.sorted;
  }
  /** The rows in key order. */
  rows() {
    return this.sorted.map((key) => this.byKey.get(key));
  }
  /** Applies one update; true when the rows changed. A `reset` keeps the rows
   * until the snapshot after it replaces them, so a screen does not blank; a
   * snapshot in pages replaces them at its last page. */
  apply(update) {
    switch (update.type) {
      case "snapshot": {
        const pages = this.pages ?? /* @__PURE__ */ new Map();
        for (const { key, row } of update.rows)
          pages.set(key, row);
        this.pages = update.more ? pages : void 0;
        if (update.more)
          return false;
        this.byKey = pages;
        this.sorted = [...pages.keys()].sort(compare);
        return true;
      }
      case "reset":
        return false;
      case "change":
        switch (update.op) {
          case "upsert":
            this.put(update.key, update.row);
            return true;
          case "patch":
            this.put(update.key, applyMergePatch(this.byKey.get(update.key), update.patch));
            return true;
          case "delete":
          case "remove":
            return this.remove(update.key);
        }
    }
  }
  put(key, row) {
    if (!this.byKey.has(key))
      this.sorted.splice(this.insertionPoint(key), 0, key);
    this.byKey.set(key, row);
  }
  remove(key) {
    if (!this.byKey.delete(key))
      return false;
    this.sorted.splice(this.insertionPoint(key), 1);
    return true;
  }
  /** The index of `key` in the sorted keys, or where it would go. */
  insertionPoint(key) {
    let low = 0;
    let high = this.sorted.length;
    while (low < high) {
      const middle = low + high >>> 1;
      if (compare(this.sorted[middle], key) < 0)
        low = middle + 1;
      else
        high = middle;
    }
    return low;
  }
};
function compare(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

// clients/typescript/dist/subscription.js
var Subscription = class {
  id;
  projection;
  options;
  onClose;
  /** The rows this subscription may see, in key order. */
  rows = new RowSet();
  /** The position of the last update applied: where a resume continues from. */
  position;
  status = { state: "connecting" };
  rowListeners = /* @__PURE__ */ new Set();
  statusListeners = /* @__PURE__ */ new Set();
  updateListeners = /* @__PURE__ */ new Set();
  /** @internal */
  constructor(id, projection, options, onClose) {
    this.id = id;
    this.projection = projection;
    this.options = options;
    this.onClose = onClose;
  }
  /** Calls `listener` after every change of the rows; returns a function that stops it. */
  onRows(listener) {
    this.rowListeners.add(listener);
    return () => this.rowListeners.delete(listener);
  }
  /** Calls `listener` on every change of status; returns a function that stops it. */
  onStatus(listener) {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }
  /** Calls `listener` with every update the server sends (a change to animate,
   * a reset to announce), after it is applied; returns a function that stops it. */
  onUpdate(listener) {
    this.updateListeners.add(listener);
    return () => this.updateListeners.delete(listener);
  }
  /** Stops the subscription on the server and here. */
  close() {
    this.onClose(this);
    this.setStatus({ state: "closed", reason: "closed by the client" });
  }
  /** @internal The subscribe message, resuming from the last position if any
   * (the rows it has are as of that position: pages of a snapshot since are dropped). */
  subscribeMessage() {
    this.rows.dropPages();
    const { key, where, delta } = this.options;
    return { type: "subscribe", id: this.id, projection: this.projection, key, where, delta, since: this.position };
  }
  /** @internal */
  receive(update) {
    if (update.type === "reset")
      this.setStatus({ state: "resyncing", reason: update.reason });
    const changed = this.rows.apply(update);
    if ("position" in update && update.position)
      this.position = update.position;
    if (update.type === "snapshot" && !update.more)
      this.setStatus({ state: "live" });
    for (const listener of this.updateListeners)
      listener(update);
    if (changed)
      for (const listener of this.rowListeners)
        listener(this);
  }
  /** @internal */
  setStatus(status) {
    if (this.status.state === "closed")
      return;
    this.status = status;
    for (const listener of this.statusListeners)
      listener(status);
  }
};

// clients/typescript/dist/token.js
function expiresAt(token) {
  const payload = token.split(".")[1];
  if (!payload)
    return void 0;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp * 1e3 : void 0;
  } catch {
    return void 0;
  }
}
function refreshDelay(exp, now, ahead) {
  const left = exp - now;
  return Math.max(0, left - Math.min(ahead, left / 2));
}

// clients/typescript/dist/client.js
var RESUME_AT_ONCE = /* @__PURE__ */ new Set([4008, 1001]);
var POLICY = /* @__PURE__ */ new Set([1003, 1008, 1009]);
var TOKEN_REFUSED = 4401;
var FacetClient = class {
  options;
  status = { state: "closed", code: 1e3, reason: "not connected yet" };
  socket;
  token;
  tokenRefused = false;
  attempts = 0;
  ids = 0;
  closedByUser = false;
  refreshTimer;
  reconnectTimer;
  subscriptions = /* @__PURE__ */ new Map();
  commands = /* @__PURE__ */ new Map();
  constructor(options) {
    this.options = options;
  }
  /** Subscribes to a projection's rows (all, one `key`, or those matching `where`). */
  subscribe(projection, options = {}) {
    if (this.closedByUser)
      throw new Error("the client was closed: create another to subscribe");
    const subscription = new Subscription(`s${++this.ids}`, projection, options, (s) => {
      this.subscriptions.delete(s.id);
      this.send({ type: "unsubscribe", id: s.id });
    });
    this.subscriptions.set(subscription.id, subscription);
    if (this.isOpen())
      this.send(subscription.subscribeMessage());
    else
      this.connect();
    return subscription;
  }
  /** Sends a command on the socket (over HTTP when none is open); resolves when
   * it is visible (with `wait`, the default) or produced, rejects with a `CommandError`. */
  command(name, input, options = {}) {
    return new Promise((resolve, reject) => {
      const command = {
        name,
        input,
        key: options.idempotencyKey ?? newIdempotencyKey(),
        wait: options.wait ?? true,
        produced: false,
        resolve,
        reject
      };
      if (this.closedByUser) {
        reject(new Error("the client was closed: create another to send commands"));
        return;
      }
      if (!this.socket) {
        this.overHttp(command).then(resolve, reject);
        return;
      }
      const id = `c${++this.ids}`;
      this.commands.set(id, command);
      if (this.isOpen())
        this.socket.send(commandMessage(id, command));
    });
  }
  /** Closes the connection and every subscription; pending commands fail. */
  close() {
    this.closedByUser = true;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.reconnectTimer);
    this.socket?.close(1e3, "closed by the client");
    this.end(1e3, "closed by the client");
  }
  /** Closes every subscription and fails every pending command with `reason`. */
  end(code, reason) {
    for (const subscription of this.subscriptions.values())
      subscription.setStatus({ state: "closed", reason });
    for (const command of this.commands.values())
      command.reject(new Error(`connection closed (${code}): ${reason}`));
    this.subscriptions.clear();
    this.commands.clear();
    this.setStatus({ state: "closed", code, reason });
  }
  isOpen() {
    return this.socket?.readyState === 1;
  }
  send(message) {
    if (this.isOpen())
      this.socket.send(JSON.stringify(message));
  }
  baseUrl() {
    const url = this.options.url;
    return (typeof url === "function" ? url() : url).replace(/\/$/, "");
  }
  setStatus(status) {
    this.status = status;
    this.options.onStatus?.(status);
  }
  async connect() {
    if (this.socket || this.closedByUser)
      return;
    this.setStatus({ state: "connecting" });
    this.socket = {};
    let url;
    try {
      await this.freshToken();
      url = this.socketUrl();
    } catch (error) {
      this.socket = void 0;
      this.retry(1006, `no token: ${error}`);
      return;
    }
    const Socket = this.options.WebSocket ?? globalThis.WebSocket;
    const socket = new Socket(url);
    this.socket = socket;
    socket.onopen = () => this.opened();
    socket.onmessage = (event) => this.received(JSON.parse(String(event.data)));
    socket.onclose = (event) => {
      if (this.socket !== socket)
        return;
      this.socket = void 0;
      clearTimeout(this.refreshTimer);
      this.closed(event.code, event.reason);
    };
  }
  /** Asks for a token when there is none, the last was refused, or it expires soon. */
  async freshToken() {
    const getToken = this.options.getToken;
    if (!getToken)
      return;
    const exp = this.token ? expiresAt(this.token) : void 0;
    const expiring = exp !== void 0 && exp - Date.now() < (this.options.refreshAheadMs ?? 3e4);
    if (this.token && !this.tokenRefused && !expiring)
      return;
    this.token = await getToken(this.tokenRefused ? "refused" : this.token ? "expiring" : "connect");
    this.tokenRefused = false;
  }
  socketUrl() {
    const url = new URL(this.baseUrl() + "/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
    for (const [name, value] of Object.entries(this.options.query ?? {}))
      url.searchParams.set(name, value);
    if (this.token)
      url.searchParams.set("access_token", this.token);
    return url.toString();
  }
  opened() {
    this.setStatus({ state: "open" });
    for (const subscription of this.subscriptions.values()) {
      this.send(subscription.subscribeMessage());
      if (subscription.position)
        subscription.setStatus({ state: "live" });
    }
    for (const [id, command] of this.commands) {
      command.produced = false;
      this.socket.send(commandMessage(id, command));
    }
    this.scheduleRefresh();
  }
  received(message) {
    this.attempts = 0;
    const id = message.id;
    const command = id === void 0 ? void 0 : this.commands.get(id);
    if (command) {
      if (answer(command, message))
        this.commands.delete(id);
      return;
    }
    const subscription = id === void 0 ? void 0 : this.subscriptions.get(id);
    if (!subscription)
      return;
    if (message.type === "error") {
      this.subscriptions.delete(subscription.id);
      subscription.setStatus({ state: "closed", reason: message.message });
    } else {
      subscription.receive(message);
    }
  }
  closed(code, reason) {
    if (this.closedByUser)
      return;
    if (POLICY.has(code)) {
      this.end(code, reason);
      return;
    }
    if (code === TOKEN_REFUSED)
      this.tokenRefused = true;
    for (const subscription of this.subscriptions.values()) {
      if (subscription.status.state === "live")
        subscription.setStatus({ state: "connecting" });
    }
    this.retry(code, reason);
  }
  /** Reconnects: at once when the server asked for a resume, else after a backoff
   * that grows until a connection delivers a message. */
  retry(code, reason) {
    const delay = RESUME_AT_ONCE.has(code) && this.attempts === 0 ? 0 : backoffDelay(this.attempts, this.options.backoff);
    this.attempts++;
    this.setStatus({ state: "reconnecting", code, reason, retryInMs: delay });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }
  /** Sends a fresh token in band before the current one expires. */
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const exp = this.token ? expiresAt(this.token) : void 0;
    const getToken = this.options.getToken;
    if (exp === void 0 || !getToken)
      return;
    const delay = Math.max(1e3, refreshDelay(exp, Date.now(), this.options.refreshAheadMs ?? 3e4));
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await getToken("expiring");
        if (token) {
          this.token = token;
          this.send({ type: "auth", token });
        }
      } catch {
      }
      if (this.isOpen())
        this.scheduleRefresh();
    }, delay);
  }
  async overHttp(command) {
    await this.freshToken();
    const headers = { ...this.options.headers };
    if (this.token)
      headers.authorization = `Bearer ${this.token}`;
    const url = `${this.baseUrl()}/v1/commands/${encodeURIComponent(command.name)}`;
    const fetcher = this.options.fetch ?? globalThis.fetch.bind(globalThis);
    return commandOverHttp(fetcher, url, headers, command, (attempt) => backoffDelay(attempt, this.options.backoff));
  }
};
function createClient(options) {
  return new FacetClient(options);
}
export {
  CommandError,
  FacetClient,
  RowSet,
  Subscription,
  applyMergePatch,
  backoffDelay,
  createClient
};
