// Drives a BullMQ queue the way an application does, for the provider tests.
//
//   node queue.js add <queue> '<jobs JSON>'   add jobs, print the counts and their `ids`
//   node queue.js counts <queue>              print the counts
//   node queue.js pause|resume <queue>        pause or resume, print the counts
//
// <jobs JSON> is a list of {"name": ..., "data": {...}, "opts": {...}} (BullMQ's addBulk
// format; opts such as {"priority": 3} or {"delay": 60000}). The counts are one JSON
// object: BullMQ's own getJobCounts() for wait, prioritized, delayed, active, paused and
// waiting-children, `due` (delayed jobs whose time has come: getDelayedCount(now + 1)),
// `isPaused`, and `workers` (Queue.getWorkers(): their connection names).
'use strict';

const { Queue } = require('bullmq');
const { connection, prefix } = require('./common');

async function counts(queue) {
  const counts = await queue.getJobCounts(
    'wait', 'prioritized', 'delayed', 'active', 'paused', 'waiting-children');
  counts.due = await queue.getDelayedCount(Date.now() + 1);
  counts.isPaused = await queue.isPaused();
  counts.workers = (await queue.getWorkers()).map(w => w.rawname);
  return counts;
}

async function main() {
  const [command, name, jobs] = process.argv.slice(2);
  if (!command || !name) {
    throw new Error('usage: node queue.js add|counts|pause|resume <queue> [jobs JSON]');
  }
  const queue = new Queue(name, { connection: connection(), prefix: prefix() });
  let added = null;
  try {
    switch (command) {
      case 'add':
        added = (await queue.addBulk(JSON.parse(jobs || '[]'))).map(job => job.id);
        break;
      case 'pause':
        await queue.pause();
        break;
      case 'resume':
        await queue.resume();
        break;
      case 'counts':
        break;
      default:
        throw new Error(`unknown command ${command}`);
    }
    const out = await counts(queue);
    if (added) {
      out.ids = added;
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await queue.close();
  }
}

main().catch(err => {
  process.stderr.write(`queue.js: ${err.stack || err}\n`);
  process.exit(1);
});
