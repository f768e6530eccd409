// A client of `rawepoll serve --protocol websocket` on Node's `ws` package (test_node_ws.py).
//
//   node node_client.js PORT [publish]
//
// Echo of text, binary, fragmented, empty and large messages, ping/pong, the closing
// handshake with a code and a reason; with "publish" (the server runs the tests'
// PublishApp) also a publish by one client received by a subscriber of /topic/news.
// Prints one JSON object of what it saw; exits 2 if anything takes longer than BOUND_MS.
"use strict";

const crypto = require("crypto");
const WebSocket = require("ws");

const BOUND_MS = 30000;
const [port, mode] = process.argv.slice(2);
const base = `ws://127.0.0.1:${port}`;

const watchdog = setTimeout(() => {
  console.error("node_client: no end within the bound");
  process.exit(2);
}, BOUND_MS);

// A connected client whose messages queue up: `await ws.next()` is the next one.
function client(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, { perMessageDeflate: false });
    const queue = [];
    const waiters = [];
    ws.on("message", (data, isBinary) => {
      const message = { data, isBinary };
      const waiter = waiters.shift();
      if (waiter) waiter(message);
      else queue.push(message);
    });
    ws.next = () =>
      new Promise((res) => {
        const message = queue.shift();
        if (message) res(message);
        else waiters.push(res);
      });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

async function echoed(ws, data, options) {
  if (options) ws.send(data, options);
  else ws.send(data);
  return ws.next();
}

async function main() {
  const seen = {};
  const ws = await client("/");

  let m = await echoed(ws, "héllo from node 😀");
  seen.text = { data: m.data.toString(), binary: m.isBinary };

  m = await echoed(ws, Buffer.from([0, 1, 2, 255]));
  seen.bytes = { data: [...m.data], binary: m.isBinary };

  m = await echoed(ws, "");
  seen.empty = { data: m.data.toString(), binary: m.isBinary };

  ws.send("frag", { fin: false });
  ws.send("men", { fin: false });
  m = await echoed(ws, "ted", { fin: true });
  seen.fragmented = { data: m.data.toString(), binary: m.isBinary };

  const large = crypto.randomBytes(1000000);
  m = await echoed(ws, large);
  seen.large = { same: Buffer.compare(m.data, large) === 0, binary: m.isBinary };

  seen.pong = await new Promise((resolve) => {
    ws.once("pong", (data) => resolve(data.toString()));
    ws.ping(Buffer.from("are you there"));
  });

  if (mode === "publish") {
    const subscriber = await client("/topic/news");
    ws.send("!publish news published from node");
    m = await subscriber.next();
    seen.published = { data: m.data.toString(), binary: m.isBinary };
    subscriber.close(1000);
  }

  seen.close = await new Promise((resolve) => {
    ws.once("close", (code) => resolve(code));
    ws.close(4000, "node says bye");
  });

  clearTimeout(watchdog);
  console.log(JSON.stringify(seen));
}

main().catch((error) => {
  console.error(`node_client: ${error.stack || error}`);
  process.exit(1);
});
