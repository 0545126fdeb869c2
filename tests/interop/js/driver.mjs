// Interop driver for the npm `cloudevents` SDK; see ../PROTOCOL.md for the contract.
//   node driver.mjs send URL MODE CASES_FILE ID_PREFIX
//   node driver.mjs receive OUT_FILE
import { appendFileSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { CloudEvent, HTTP } from "cloudevents";

const [command, ...args] = process.argv.slice(2);

function buildEvent(c, prefix) {
  const init = { ...c.attributes, id: prefix + c.id, specversion: "1.0" };
  if (c.data && "json" in c.data) init.data = c.data.json;
  else if (c.data && "text" in c.data) init.data = c.data.text;
  else if (c.data && "bytes" in c.data) init.data = Buffer.from(c.data.bytes, "base64");
  return new CloudEvent(init);
}

async function send(url, mode, casesFile, prefix) {
  if (mode !== "binary" && mode !== "structured") throw new Error(`unknown mode ${mode}`);
  for (const c of JSON.parse(readFileSync(casesFile, "utf8"))) {
    let status, body;
    const message = HTTP[mode](buildEvent(c, prefix));
    let headers;
    try {
      headers = new Headers(message.headers);
    } catch (err) {
      // The SDK writes attribute values into headers raw, and a header cannot hold characters
      // beyond U+00FF.
      console.log(`unsendable ${c.id}: ${err.message}`);
      continue;
    }
    try {
      const res = await fetch(url, { method: "POST", headers, body: message.body });
      [status, body] = [res.status, await res.text()];
    } catch (err) {
      // The request failed (connection refused, reset).
      [status, body] = ["no response", `${err}${err.cause ? ` (cause: ${err.cause})` : ""}`];
    }
    if (typeof status !== "number" || status < 200 || status > 299) {
      console.error(`case ${c.id} (${mode}): status ${status}, body: ${body}`);
      process.exit(1);
    }
  }
}

// JSON form of one attribute value, keeping the type the SDK gives it.
function attribute(v) {
  if (typeof v === "string" || typeof v === "boolean" || typeof v === "number") return v;
  if (v instanceof Date) return v.toISOString();
  return String(v);
}

function data(d) {
  if (d === undefined || d === null) return null;
  if (typeof d === "string") return { text: d };
  if (d instanceof Uint8Array) return { bytes: Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString("base64") };
  return { json: JSON.parse(JSON.stringify(d)) };
}

function report(path, event) {
  const attributes = {};
  for (const [k, v] of Object.entries(event)) {
    // `data` and `data_base64` are the payload, not attributes; unset attributes are own
    // properties holding undefined.
    if (k !== "data" && k !== "data_base64" && v !== undefined) attributes[k] = attribute(v);
  }
  return { path, attributes, data: data(event.data) };
}

function receive(outFile) {
  const server = createServer((req, res) => {
    // The SDK's README only says to hand HTTP.toEvent the request's headers and body; its
    // express example (examples/express-ex, linked from the README) reads the raw body with
    // req.setEncoding("utf8") into one string and passes that string. We do the same.
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      let line;
      try {
        line = report(req.url, HTTP.toEvent({ headers: req.headers, body }));
      } catch (err) {
        line = { path: req.url, error: err.message };
      }
      appendFileSync(outFile, JSON.stringify(line) + "\n");
      res.writeHead(200).end();
    });
  });
  server.listen(0, "127.0.0.1", () => process.stdout.write(`listening ${server.address().port}\n`));
}

if (command === "send" && args.length === 4) await send(...args);
else if (command === "receive" && args.length === 1) receive(args[0]);
else {
  console.error("usage: driver.mjs send URL MODE CASES_FILE ID_PREFIX | receive OUT_FILE");
  process.exit(2);
}
