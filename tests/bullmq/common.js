// Shared by the test scripts: where Redis is, from the environment.
'use strict';

const net = require('net');

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

// Test-only: makes every TCP connection of this process start from POD_IP, a loopback
// address the tests' API double gave the simulated Pod (127.a.b.c), so that Redis' CLIENT
// LIST shows each Pod's workers at the Pod's own IP, as in a cluster. ioredis has no
// source-address option and calls net.createConnection(options) at connect time, so
// adding `localAddress` there is enough. 127.0.0.1 and other addresses are left alone.
function connectFromPodIp() {
  const podIp = process.env.POD_IP || '';
  if (!podIp.startsWith('127.') || podIp === '127.0.0.1') {
    return;
  }
  const createConnection = net.createConnection;
  net.createConnection = function (options, ...rest) {
    if (options && typeof options === 'object' && !options.path && !options.localAddress) {
      options = { ...options, localAddress: podIp };
    }
    return createConnection.call(this, options, ...rest);
  };
}

module.exports = { connection, connectFromPodIp, prefix };
