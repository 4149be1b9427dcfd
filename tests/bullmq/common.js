// Shared by the test scripts: where Redis is, from the environment.
'use strict';

// WPA_TEST_REDIS: redis://host:port/db (the tests use DB 14); BULLMQ_PREFIX: the key prefix.
function connection() {
  const url = new URL(process.env.WPA_TEST_REDIS || 'redis://127.0.0.1:6379/14');
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    db: Number(url.pathname.replace(/^\//, '') || 0),
    // BullMQ requires this for Workers; harmless for the others.
    maxRetriesPerRequest: null,
  };
}

function prefix() {
  return process.env.BULLMQ_PREFIX || 'bull';
}

module.exports = { connection, prefix };
