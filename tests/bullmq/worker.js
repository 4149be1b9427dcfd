// A BullMQ worker as an app would run it in a Pod, for the tests.
//
//   node worker.js <queue>
//
// Named after its Pod (`name: process.env.POD_NAME`, the convention the autoscaler's docs
// give), unless WPA_TEST_UNNAMED=1. Each job sleeps `data.seconds` and, when
// WPA_TEST_RECORD_KEY is set, RPUSHes {"event": "start"|"finish", "job", "pod", "at"} (JSON,
// `at` in ms) to that list. On SIGTERM it closes gracefully: worker.close() lets the active
// job finish, then the process exits 0 (a kubelet's SIGKILL after the grace would cut it).
// With POD_IP a loopback address other than 127.0.0.1, its connections start from it (see
// connectFromPodIp in common.js): Redis then sees the Pod at its own IP.
'use strict';

const IORedis = require('ioredis');
const { Worker } = require('bullmq');
const { connection, connectFromPodIp, prefix } = require('./common');

connectFromPodIp();

const queueName = process.argv[2];
if (!queueName) {
  process.stderr.write('usage: node worker.js <queue>\n');
  process.exit(2);
}
const pod = process.env.POD_NAME || '';
const recordKey = process.env.WPA_TEST_RECORD_KEY;
const recorder = recordKey ? new IORedis(connection()) : null;

async function record(event, job) {
  if (recorder) {
    await recorder.rpush(recordKey, JSON.stringify({ event, job: job.id, pod, at: Date.now() }));
  }
}

const options = { connection: connection(), prefix: prefix(), concurrency: 1 };
if (process.env.WPA_TEST_UNNAMED !== '1' && pod) {
  options.name = pod;
}

const worker = new Worker(queueName, async job => {
  await record('start', job);
  await new Promise(resolve => setTimeout(resolve, Number(job.data.seconds || 0) * 1000));
  await record('finish', job);
}, options);

worker.on('ready', () => console.log(`worker ${pod} ready on ${queueName}`));
worker.on('active', job => console.log(`${new Date().toISOString()} start ${job.id}`));
worker.on('completed', job => console.log(`${new Date().toISOString()} done ${job.id}`));
worker.on('error', err => console.error(`worker error: ${err.message}`));

let closing = false;
process.on('SIGTERM', async () => {
  if (closing) return;
  closing = true;
  console.log(`${new Date().toISOString()} SIGTERM: closing (active jobs finish first)`);
  try {
    await worker.close();
    if (recorder) await recorder.quit();
    console.log(`${new Date().toISOString()} closed`);
    process.exit(0);
  } catch (err) {
    console.error(`close failed: ${err.stack || err}`);
    process.exit(1);
  }
});
