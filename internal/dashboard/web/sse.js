// A server-sent events client over fetch. EventSource cannot send an
// Authorization or X-Tenant-ID header, so the stream is read with fetch and
// parsed here (the WHATWG event-stream format). After a dropped connection
// it reconnects and sends Last-Event-ID, the id of the last event it
// delivered, as EventSource does: the API then sends only what followed.

const MIN_DELAY = 250;
const MAX_DELAY = 5000;

/**
 * Follows url. onEvent(data, id) gets each event's data (a string) in order;
 * onStatus({state, lastId, reconnects, error}) each change of connection
 * state: "connecting", "live", "waiting" (before a reconnect) or "closed".
 * Returns {close()}.
 */
export function follow(url, { headers = {}, lastId = "", onEvent, onStatus, describeError }) {
  let closed = false, reconnects = 0, delay = MIN_DELAY, ctrl = null, timer = null;
  const status = (state, error) => onStatus?.({ state, lastId, reconnects, error });

  async function connect() {
    if (closed) return;
    ctrl = new AbortController();
    status("connecting");
    const h = { ...headers, Accept: "text/event-stream" };
    if (lastId) h["Last-Event-ID"] = lastId;
    let error = null, res = null;
    try {
      res = await fetch(url, { headers: h, signal: ctrl.signal, cache: "no-store", credentials: "omit" });
    } catch (e) {
      if (closed) return;
      // No answer could be read: the API is down, or refuses this origin.
      error = { status: 0, message: describeError ? await describeError(e) : String(e) };
    }
    if (res && !res.ok) {
      let msg = `${res.status}`;
      try { msg = (await res.json()).error.message; } catch { /* not an error body */ }
      error = { status: res.status, message: msg };
      if (res.status >= 400 && res.status < 500 && res.status !== 429) {
        closed = true; // a client error will not heal by itself
        status("closed", error);
        return;
      }
    } else if (res) {
      delay = MIN_DELAY;
      status("live");
      try {
        await read(res.body); // returns when the server ends the stream
      } catch (e) {
        if (closed) return;
        error = { status: 0, message: "the connection dropped" };
      }
    }
    if (closed) return;
    reconnects++;
    status("waiting", error);
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, MAX_DELAY);
  }

  async function read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", data = [], id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // the server ended the stream: reconnect
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") { // dispatch
          if (id !== null) lastId = id;
          if (data.length > 0 && !closed) onEvent(data.join("\n"), lastId);
          data = []; id = null;
          continue;
        }
        if (line.startsWith(":")) continue; // comment (heartbeat)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "data") data.push(v);
        else if (field === "id" && !v.includes("\0")) id = v;
        else if (field === "retry" && /^\d+$/.test(v)) delay = Math.max(MIN_DELAY, Number(v));
      }
    }
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      ctrl?.abort();
      status("closed");
    },
  };
}
