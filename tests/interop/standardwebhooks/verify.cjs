// Verifies Switchyard's signed deliveries with Standard Webhooks' JavaScript reference library
// (`v1`, HMAC-SHA256) and, since that library does not verify `v1a`, with Node's own Ed25519
// (OpenSSL) from the `whpk_` public keys.
//
// Usage: node verify.cjs NODE_MODULES DELIVERIES.json, the file holding {"whsec": [...],
// "whpk": [...], "deliveries": [{"headers": {...}, "body": base64}, ...]}. Every secret and
// every public key must verify every delivery, and must refuse it with its body changed. Exits
// non-zero, saying which, on the first failure.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

const { Webhook } = require(path.join(process.argv[2], "standardwebhooks"));
const given = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));

function fail(message) {
  console.error(message);
  process.exit(1);
}

function verifiesV1a(publicKey, delivery, body) {
  const headers = delivery.headers;
  const content = Buffer.concat([
    Buffer.from(`${headers["webhook-id"]}.${headers["webhook-timestamp"]}.`),
    body,
  ]);
  return headers["webhook-signature"]
    .split(" ")
    .filter((signature) => signature.startsWith("v1a,"))
    .some((signature) => crypto.verify(null, content, publicKey, Buffer.from(signature.slice(4), "base64")));
}

given.deliveries.forEach((delivery, number) => {
  const body = Buffer.from(delivery.body, "base64");
  const changed = Buffer.concat([body, Buffer.from(" ")]);
  for (const secret of given.whsec) {
    const webhook = new Webhook(secret);
    try {
      webhook.verify(body, delivery.headers, { jsonParse: false });
    } catch (error) {
      fail(`delivery ${number}: npm standardwebhooks refused it: ${error.message}`);
    }
    let refused = false;
    try {
      webhook.verify(changed, delivery.headers, { jsonParse: false });
    } catch {
      refused = true;
    }
    if (!refused) fail(`delivery ${number}: a changed body verified too`);
  }
  for (const whpk of given.whpk) {
    const x = Buffer.from(whpk.replace(/^whpk_/, ""), "base64").toString("base64url");
    const publicKey = crypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
    if (!verifiesV1a(publicKey, delivery, body)) fail(`delivery ${number}: no v1a signature verifies with ${whpk}`);
    if (verifiesV1a(publicKey, delivery, changed)) fail(`delivery ${number}: a changed body verified with ${whpk}`);
  }
});
console.log(`npm standardwebhooks and node:crypto verified ${given.deliveries.length} deliveries`);
