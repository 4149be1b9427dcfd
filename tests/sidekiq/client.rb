# frozen_string_literal: true

# What the integration tests ask Sidekiq's own client and API (`REDIS_URL` picks the server
# and database, `SIDEKIQ_NAMESPACE` a redis-namespace, as in worker.rb). One command per run, one JSON document on stdout:
#
#   ruby client.rb push <queue> <ledger> <seconds> [<seconds>...]
#       enqueues one SleepJob per <seconds> with Sidekiq::Client.push; prints {"ids": [...]}
#       (the ids are the jobs' own `id` argument, "<queue>-<n>").
#   ruby client.rb count <queue>
#       prints Sidekiq's view of <queue>: {"size": Sidekiq::Queue#size, "processes": [the
#       Sidekiq::ProcessSet entries serving it], "running": jobs of it in Sidekiq::Workers,
#       "workers": Sidekiq::Workers#size (every queue of the database)}.

require "json"
require "sidekiq"
require "sidekiq/api"
require_relative "worker"

Sidekiq.logger.level = Logger::WARN

command, queue, *rest = ARGV
case command
when "push"
  ledger, *seconds = rest
  abort "usage: push <queue> <ledger> <seconds>..." if ledger.nil? || seconds.empty?
  ids = seconds.each_with_index.map do |s, i|
    id = "#{queue}-#{i}"
    Sidekiq::Client.push("class" => SleepJob, "queue" => queue, "args" => [id, s.to_f, ledger])
    id
  end
  puts JSON.generate("ids" => ids)
when "count"
  # Read without pruning: ProcessSet.new(true) would SREM dead identities, which is a
  # write the provider under test must cope without.
  processes = Sidekiq::ProcessSet.new(false).select { |p| p["queues"].include?(queue) }.map do |p|
    {"identity" => p["identity"], "hostname" => p["hostname"], "busy" => p["busy"],
     "quiet" => p["quiet"], "queues" => p["queues"]}
  end
  running = 0
  Sidekiq::Workers.new.each { |_process, _thread, work| running += 1 if work["queue"] == queue }
  puts JSON.generate(
    "size" => Sidekiq::Queue.new(queue).size,
    "processes" => processes,
    "workers" => Sidekiq::Workers.new.size,
    "running" => running
  )
else
  abort "usage: client.rb push|count <queue> ..."
end
