# frozen_string_literal: true

# The job class the integration tests run with a real `sidekiq` process:
#   REDIS_URL=redis://127.0.0.1:6379/10 DYNO=<pod> sidekiq -r ./worker.rb -q <queue> -c 1
# `SleepJob` sleeps for its `seconds` and records when it started and finished (with the
# process that ran it) in the Redis list named by its `ledger` argument, so a test can tell
# whether every job ran to its end exactly once and which process ran it.

require "json"
require "socket"
require "sidekiq"

# SIDEKIQ_NAMESPACE=<ns>: every key under `<ns>:`, as the redis-namespace gem (Debian's
# ruby-redis-namespace) makes it, which Sidekiq 6.x accepts as `namespace:`.
namespace = ENV["SIDEKIQ_NAMESPACE"].to_s
unless namespace.empty?
  require "redis-namespace"
  redis = {url: ENV.fetch("REDIS_URL"), namespace: namespace}
  Sidekiq.configure_server { |config| config.redis = redis }
  Sidekiq.configure_client { |config| config.redis = redis }
end

# redis-rb 4.8 warns about `sadd` on every push (Sidekiq 6.4 calls it): noise in test logs.
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

class SleepJob
  include Sidekiq::Worker
  # A job cut short must not come back by itself: a test counts what ran.
  sidekiq_options retry: false

  def perform(id, seconds, ledger)
    record(ledger, "start", id)
    sleep(seconds.to_f)
    record(ledger, "finish", id)
  end

  private

  def record(ledger, event, id)
    entry = {
      "event" => event,
      "id" => id,
      "host" => ENV["DYNO"] || Socket.gethostname,
      "pid" => Process.pid,
      "at" => Time.now.to_f
    }
    Sidekiq.redis { |conn| conn.rpush(ledger, JSON.generate(entry)) }
  end
end
