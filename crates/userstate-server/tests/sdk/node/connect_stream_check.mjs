// Drives userstate's event feed (userstate.events.v1.EventService/SubscribeEvents) with Connect's
// own client (@connectrpc/connect-node) over Connect server streaming, with JSON and with binary
// messages: history then live events, resume after a position, the organisations a token does
// not grant filtered out, a deadline, no token, and a token revoked while its stream is open;
// over HTTP/1.1 and (JSON) over HTTP/2.
// The service comes from the server's file descriptor set at run time (no generated code).
//
// Usage: node connect_stream_check.mjs BASE_URL DESCRIPTOR_SET_FILE (tests/connect_stream_client.rs)
// Tokens (tests/common): tok-admin (instance i1), tok-acme-reader (user.read on acme),
// tok-revocable. The test starts with users a1 (acme) and g1 (globex). Lines to the test on
// stdout: "revoke" / "restore" (tok-revocable), each answered "done" on stdin once in force;
// "ok" when everything held.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

const [baseUrl, descriptorFile] = process.argv.slice(2);
const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(descriptorFile)),
);
const EventService = registry.getService("userstate.events.v1.EventService");
assert.ok(EventService, "the descriptor set describes userstate.events.v1.EventService");

const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Asks the test to do `command` and waits until it is done. */
async function ask(command) {
  console.log(command);
  const { value } = await input.next();
  assert.equal(value, "done", command);
}

let httpVersion = "1.1";

function client(token, useBinaryFormat) {
  const bearer = (next) => async (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createConnectTransport({
    baseUrl,
    httpVersion,
    useBinaryFormat,
    interceptors: [bearer],
  });
  return createClient(EventService, transport);
}

/** Adds user `id` in `org` over REST as the admin; the position of its event. */
async function addUser(id, org) {
  const res = await fetch(`${baseUrl}/v2/users/human`, {
    method: "POST",
    headers: { authorization: "Bearer tok-admin", "content-type": "application/json" },
    body: JSON.stringify({ userId: id, username: id, organization: { orgId: org } }),
  });
  assert.equal(res.status, 201, await res.text());
  return BigInt(res.headers.get("x-userstate-position"));
}

/** The next answer of a stream (within 10 s). */
async function next(stream, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within 10 s`)), 10_000);
  });
  try {
    const { value, done } = await Promise.race([stream.next(), late]);
    assert.ok(!done, `${what}: the stream ended`);
    return value;
  } finally {
    clearTimeout(timer);
  }
}

/** The stream fails with `code` (within 10 s) before any further message. */
async function fails(stream, code, what) {
  await assert.rejects(next(stream, what), (e) => {
    assert.ok(e instanceof ConnectError, `${what}: ${e}`);
    assert.equal(e.code, code, `${what}: ${e}`);
    return true;
  });
}

/** The export line of an answer, checked against its position. */
function eventOf(answer) {
  const event = JSON.parse(answer.event);
  assert.equal(BigInt(event.position), answer.position, answer.event);
  return event;
}

/** A stream of SubscribeEvents; `cancel()` closes it. */
function open(token, binary, request, options = {}) {
  const stop = new AbortController();
  const stream = client(token, binary)
    .subscribeEvents(request, { signal: stop.signal, ...options })
    [Symbol.asyncIterator]();
  stream.cancel = () => stop.abort();
  return stream;
}

const passes = [
  ["json", false, "1.1"],
  ["binary", true, "1.1"],
  ["json-h2", false, "2"],
];
for (const [name, binary, version] of passes) {
  httpVersion = version;
  // History then live, as acme's reader: globex's users never show.
  const feed = open("tok-acme-reader", binary, { afterPosition: 0n });
  const first = await next(feed, `${name}: history`);
  assert.equal(eventOf(first).stream, "user:i1:a1", name);
  await addUser(`g-${name}`, "globex");
  const live = await addUser(`a-${name}`, "acme");
  const seen = [first];
  while (seen.at(-1).position < live) {
    const answer = await next(feed, `${name}: up to the live event`);
    assert.ok(answer.position > seen.at(-1).position, `${name}: in position order`);
    seen.push(answer);
  }
  for (const answer of seen) {
    // Every globex user is named g…
    assert.doesNotMatch(eventOf(answer).stream, /^user:i1:g/, `${name}: only acme's users`);
  }
  const last = eventOf(seen.at(-1));
  assert.equal(last.stream, `user:i1:a-${name}`, name);
  assert.equal(last.type, "user.human.added", name);
  feed.cancel();

  // Resume after the first position: the second answer comes first.
  const resumed = open("tok-acme-reader", binary, { afterPosition: first.position });
  const again = await next(resumed, `${name}: resumed`);
  assert.equal(again.position, seen[1].position, name);
  assert.equal(again.event, seen[1].event, `${name}: the same export line`);
  resumed.cancel();

  // Asking for an organisation the token does not grant shows nothing: the deadline ends it.
  const other = open("tok-acme-reader", binary, { orgs: ["globex"] }, { timeoutMs: 1500 });
  await fails(other, Code.DeadlineExceeded, `${name}: globex for acme's reader`);
  // The admin may read globex.
  const admin = open("tok-admin", binary, { orgs: ["globex"] });
  assert.equal(eventOf(await next(admin, `${name}: admin`)).stream, "user:i1:g1", name);
  admin.cancel();

  // No token.
  await fails(open(undefined, binary, {}), Code.Unauthenticated, `${name}: no token`);

  // A token revoked while its stream is open: the next event is not sent, the stream ends
  // with Unauthenticated.
  const head = await addUser(`r-${name}`, "acme");
  const revocable = open("tok-revocable", binary, { afterPosition: head });
  const valid = await addUser(`v-${name}`, "acme");
  assert.equal((await next(revocable, `${name}: while valid`)).position, valid, name);
  await ask("revoke");
  await addUser(`x-${name}`, "acme");
  await fails(revocable, Code.Unauthenticated, `${name}: revoked`);
  await ask("restore");
}
console.log("ok");
process.exit(0);
