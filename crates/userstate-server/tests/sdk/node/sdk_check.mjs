// Drives a userstate server with ZITADEL's official npm client (@zitadel/client, ZITADEL's own
// generated messages from @zitadel/proto), unchanged, over each of its transports: gRPC (the
// `node` transport), gRPC-web (the `web` transport) and Connect (the same generated client on a
// Connect transport, as a browser app built on ZITADEL's protos would use).
// Usage: node sdk_check.mjs BASE_URL TOKEN. Prints "ok" and exits 0 when everything holds.
import assert from "node:assert/strict";
import { createServerTransport } from "@zitadel/client/node";
import { createClientTransport } from "@zitadel/client/web";
import { createUserServiceClient } from "@zitadel/client/v2";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ConnectError, Code } from "@connectrpc/connect";

const [baseUrl, token] = process.argv.slice(2);
const bearer = (next) => async (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const transports = {
  grpc: createServerTransport(token, { baseUrl, httpVersion: "2" }),
  "grpc-web": createClientTransport(token, { baseUrl, httpVersion: "1.1" }),
  connect: createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer] }),
};

for (const [name, transport] of Object.entries(transports)) {
  const users = createUserServiceClient(transport);
  const userId = `js-${name}`;
  const added = await users.addHumanUser({
    userId,
    username: `ada-${name}`,
    organization: { org: { case: "orgId", value: "acme" } },
    profile: { givenName: "Ada", familyName: "Lovelace" },
    email: { email: "ada@example.com", verification: { case: "isVerified", value: true } },
  });
  assert.equal(added.userId, userId, name);
  assert.equal(added.details.sequence, 1n, name);
  assert.equal(added.details.resourceOwner, "acme", name);
  let sequence = 1n;
  for (const call of ["deactivateUser", "reactivateUser", "lockUser", "unlockUser"]) {
    const answer = await users[call]({ userId });
    sequence += 1n;
    assert.equal(answer.details.sequence, sequence, `${name} ${call}`);
  }
  const got = await users.getUserByID({ userId });
  assert.equal(got.user.userId, userId, name);
  assert.equal(got.user.state, 1, `${name}: USER_STATE_ACTIVE is 1`);
  assert.equal(got.user.username, `ada-${name}`, name);
  assert.equal(got.user.type.case, "human", name);
  assert.equal(got.user.type.value.profile.givenName, "Ada", name);
  assert.equal(got.user.type.value.email.email, "ada@example.com", name);
  assert.equal(got.user.type.value.email.isVerified, true, name);
  await assert.rejects(users.unlockUser({ userId }), (e) => {
    assert.ok(e instanceof ConnectError, `${name}: ${e}`);
    assert.equal(e.code, Code.FailedPrecondition, `${name}: ${e}`);
    return true;
  });
  const removed = await users.deleteUser({ userId });
  assert.equal(removed.details.sequence, sequence + 1n, name);
}
console.log("ok");
