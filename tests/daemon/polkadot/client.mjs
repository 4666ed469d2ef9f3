// The Substrate ecosystem's JS client against the sidecar's node endpoint.
// Usage: node client.mjs WS_URL HTTP_URL
// Prints one JSON line per step on stdout; the Python test drives the tier change
// after the line {"step": "waiting-for-tier-change"} and checks the last line.
import { HttpProvider, WsProvider } from '@polkadot/rpc-provider';

const [wsUrl, httpUrl] = process.argv.slice(2);
const WAIT_MS = 60000;
const say = (obj) => console.log(JSON.stringify(obj));

function block (n) {
  return { BlockImport: { block_hash: Array(32).fill(n), block_number: n, timestamp: 1 } };
}

function until (what, predicate) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (predicate()) return resolve();
      if (Date.now() - started > WAIT_MS) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, 10);
    };
    poll();
  });
}

const result = {};

// HttpProvider: request/response only (it cannot subscribe)
const http = new HttpProvider(httpUrl);
result.httpMethods = (await http.send('rpc_methods', [])).methods;
result.httpSubmitted = await http.send('qssh_submitMessage', [block(1)]);
const httpLease = await http.send('qssh_leaseMessage', [{ lease_timeout: 30 }]);
result.httpLeased = httpLease.message_id;
result.httpAcked = await http.send('qssh_ackMessage', [httpLease.lease_id]);

// WsProvider: the same port, upgraded
const ws = new WsProvider(wsUrl, false);
await ws.connect();
await ws.isReady;
result.wsMethods = (await ws.send('rpc_methods', [])).methods;
result.name = await ws.send('qssh_getValidatorName', []);
result.submitted = [];
for (const n of [2, 3, 4]) {
  result.submitted.push(await ws.send('qssh_submitMessage', [block(n), 'sync']));
}

// a gossip message the block subscription below must leave in the queue
result.gossipSubmitted = await ws.send('qssh_submitMessage',
  [{ Gossip: { topic: 'kinds', data: [1, 2, 3] } }]);

// subscribe to blocks only (the sidecar also publishes entropy_share messages at tier
// 3): each delivery is a lease, acked from the callback; two at most unacked
const deliveries = [];
const acks = [];
const subId = await ws.subscribe('qssh_message', 'qssh_subscribeMessages',
  [{ max_unacked: 2, kinds: ['block_import'] }],
  (error, delivery) => {
    if (error) { say({ step: 'subscription-error', error: String(error) }); return; }
    acks.push(ws.send('qssh_ackMessage', [delivery.lease_id]));
    deliveries.push(delivery);
  });
result.subscription = subId;
await until('three deliveries', () => deliveries.length >= 3);
result.acked = (await Promise.all(acks)).every((a) => a === true);
result.delivered = deliveries.map((d) => d.message_id);
result.deliveredFrom = deliveries.map((d) => d.submitted_by);
result.deliveredMessage = deliveries[0].message;
result.unsubscribed = await ws.unsubscribe('qssh_message', 'qssh_unsubscribeMessages', subId);
result.deliveredKinds = [...new Set(deliveries.map((d) => Object.keys(d.message)[0]))];
const gossipLease = await http.send('qssh_leaseMessage', [{ kinds: ['gossip'] }]);
result.gossipLeased = gossipLease.message_id;
result.gossipAcked = await http.send('qssh_ackMessage', [gossipLease.lease_id]);

// follow the tier
const tiers = [];
const tierSub = await ws.subscribe('qssh_tier', 'qssh_subscribeTier', [], (error, tier) => {
  if (!error) tiers.push(tier);
});
await until('the current tier', () => tiers.length >= 1);
say({ step: 'waiting-for-tier-change', tier: tiers[0].tier });
await until('a tier change', () => tiers.some((t) => t.tier !== tiers[0].tier));
result.tiers = tiers;
result.tierUnsubscribed = await ws.unsubscribe('qssh_tier', 'qssh_unsubscribeTier', tierSub);

await ws.disconnect();
say({ step: 'done', result });
process.exit(0);
