//! Per-consumer reports from the management API: which pod (by IP) each consumer of the
//! queue runs in, and whether it holds unacknowledged messages.
//!
//! The queue object's `consumer_details` lists the consumers, each with its channel
//! (`channel_details.name`) and the connection's peer (`channel_details.peer_host`, the pod
//! IP in Kubernetes). Whether a consumer holds work is its channel's
//! `messages_unacknowledged` (`GET /api/channels/{name}`), asked once per distinct channel,
//! at most [`MAX_CHANNELS`] per poll, all before the poll's deadline.
//!
//! Both come from statistics sampled every `collect_statistics_interval` (5 s by default,
//! measured on RabbitMQ 3.10: a new consumer is listed and a delivery shows on its channel
//! about 5 s later). Lag must never make a busy consumer look idle, so a consumer is
//! reported idle only when its channel's sample says 0 unacknowledged *and* that sample
//! accounts for every message the queue has in flight; otherwise it is reported busy:
//! - channel statistics missing, unreadable, not answered in time or over the per-poll
//!   limit: busy (unknown is never idle);
//! - more messages in flight on the queue (the provider's lag-corrected figure: sampled
//!   unacknowledged, or messages that left the ready state within the sample's possible
//!   age) than the channels' samples hold: someone took them and we cannot tell who, so
//!   every consumer is reported busy until the samples catch up.
//!
//! A delivery the queue never showed as ready at a poll (taken at once by an idle
//! consumer) is seen only at the next sample. Consumers without manual acks
//! (`ack_required: false`) are left out: the broker cannot see their work. A consumer
//! whose channel the statistics do not know yet (`channel_details` is `[]`), or whose peer
//! is not an IP address (`reverse_dns_lookups`), cannot be mapped to a pod and is left out
//! too; so are consumers not listed yet. Those gaps are named in `partial`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use futures::StreamExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::time::Instant;

use super::{Management, PATH_SEGMENT};
use crate::queue::ConsumerReport;
use percent_encoding::utf8_percent_encode;

/// Channels asked per poll. Consumers on further channels are reported busy (unknown) and
/// `partial` says so: a bounded poll that errs on the safe side.
pub(super) const MAX_CHANNELS: usize = 64;
/// Channel requests in flight at once.
const CONCURRENT_REQUESTS: usize = 8;

/// One entry of the queue object's `consumer_details`.
#[derive(Debug, Deserialize)]
struct ConsumerDetail {
    #[serde(default)]
    channel_details: ChannelRef,
    ack_required: Option<bool>,
}

/// `channel_details` is an object once the statistics know the channel, `[]` before.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum ChannelRef {
    Known(ChannelDetails),
    #[default]
    #[serde(skip)]
    Absent,
    Other(IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct ChannelDetails {
    name: String,
    peer_host: Option<String>,
}

/// The part of `GET /api/channels/{name}` we use; absent until the channel's first sample.
#[derive(Debug, Deserialize)]
struct ChannelInfo {
    messages_unacknowledged: Option<u64>,
}

/// A consumer we can map to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    channel: String,
    ip: String,
}

/// What `consumer_details` tells.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Listing {
    consumers: Vec<Listed>,
    /// Listed consumers (with or without manual acks).
    total: usize,
    /// Consumers whose channel or peer address cannot be mapped to a pod.
    unidentified: usize,
}

/// What one channel request told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChannelStats {
    Unacked(u64),
    /// The channel closed since the listing: its consumers are gone.
    Gone,
    /// The management user may not read other users' channels.
    Denied(u16),
    /// No figure (not sampled yet, an error, no answer in time).
    Unknown(String),
}

/// The listing and the channel statistics of one poll.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Observed {
    listing: Listing,
    stats: HashMap<String, ChannelStats>,
}

/// Reads `consumer_details` (absent: the management API does not list consumers).
pub(super) fn parse_listing(details: Option<&serde_json::Value>) -> Result<Listing, String> {
    let Some(details) = details else {
        return Err("the management API's queue object has no consumer_details".into());
    };
    let entries = Vec::<ConsumerDetail>::deserialize(details)
        .map_err(|e| format!("unreadable consumer_details ({e})"))?;
    let mut listing = Listing {
        total: entries.len(),
        ..Listing::default()
    };
    for entry in entries {
        // Without manual acks a consumer never holds unacknowledged messages, busy or not.
        if entry.ack_required == Some(false) {
            continue;
        }
        let ChannelRef::Known(channel) = entry.channel_details else {
            listing.unidentified += 1;
            continue;
        };
        match channel.peer_host.as_deref().and_then(normalise_ip) {
            Some(ip) => listing.consumers.push(Listed {
                channel: channel.name,
                ip,
            }),
            None => listing.unidentified += 1,
        }
    }
    Ok(listing)
}

/// A peer address as a plain IP: brackets, an IPv6 zone and the IPv4-mapped prefix
/// (`::ffff:10.0.0.5`, a dual-stack listener's view of an IPv4 peer) are removed. `None`
/// for anything that is not an IP address (a host name from reverse DNS lookups).
pub(super) fn normalise_ip(peer: &str) -> Option<String> {
    let bare = peer
        .trim()
        .strip_prefix('[')
        .and_then(|p| p.strip_suffix(']'))
        .unwrap_or(peer.trim());
    let without_zone = bare.split('%').next().unwrap_or(bare);
    let ip: IpAddr = without_zone.parse().ok()?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    Some(ip.to_string())
}

/// Reads `consumer_details` and asks the statistics of each distinct channel, until
/// `deadline`.
pub(super) async fn observe(
    mgmt: &Management,
    details: Option<&serde_json::Value>,
    deadline: Instant,
) -> Result<Observed, String> {
    let listing = parse_listing(details)?;
    let stats = fetch_channels(mgmt, channels_to_ask(&listing), deadline).await;
    Ok(Observed { listing, stats })
}

/// The distinct channels of the listed consumers, in listing order, at most
/// [`MAX_CHANNELS`].
fn channels_to_ask(listing: &Listing) -> Vec<String> {
    let mut seen = HashSet::new();
    listing
        .consumers
        .iter()
        .filter(|c| seen.insert(c.channel.as_str()))
        .take(MAX_CHANNELS)
        .map(|c| c.channel.clone())
        .collect()
}

async fn fetch_channels(
    mgmt: &Management,
    channels: Vec<String>,
    deadline: Instant,
) -> HashMap<String, ChannelStats> {
    let mut answers = futures::stream::iter(channels.clone())
        .map(|name| async move {
            let stats = fetch_channel(mgmt, &name).await;
            (name, stats)
        })
        .buffer_unordered(CONCURRENT_REQUESTS);
    let mut stats = HashMap::new();
    // Keep what answered before the deadline; the rest is unknown.
    while let Ok(Some((name, answer))) = tokio::time::timeout_at(deadline, answers.next()).await {
        stats.insert(name, answer);
    }
    for name in channels {
        stats.entry(name).or_insert_with(|| {
            ChannelStats::Unknown("no answer within the request timeout".into())
        });
    }
    stats
}

async fn fetch_channel(mgmt: &Management, name: &str) -> ChannelStats {
    let url = format!(
        "{}/api/channels/{}",
        mgmt.base,
        utf8_percent_encode(name, PATH_SEGMENT)
    );
    let response = match mgmt
        .http
        .get(url)
        .basic_auth(&mgmt.username, Some(&mgmt.password))
        .send()
        .await
    {
        Ok(response) => response,
        Err(e) => return ChannelStats::Unknown(e.without_url().to_string()),
    };
    let status = response.status().as_u16();
    match status {
        200 => {}
        404 => return ChannelStats::Gone,
        401 | 403 => return ChannelStats::Denied(status),
        _ => return ChannelStats::Unknown(format!("answered {status}")),
    }
    match response.bytes().await {
        Ok(body) => channel_stats(&body),
        Err(e) => ChannelStats::Unknown(e.without_url().to_string()),
    }
}

/// Reads a channel object's `messages_unacknowledged`.
pub(super) fn channel_stats(body: &[u8]) -> ChannelStats {
    match serde_json::from_slice::<ChannelInfo>(body) {
        Ok(ChannelInfo {
            messages_unacknowledged: Some(n),
        }) => ChannelStats::Unacked(n),
        Ok(_) => ChannelStats::Unknown("no messages_unacknowledged sample yet".into()),
        Err(e) => ChannelStats::Unknown(format!("unreadable channel object ({e})")),
    }
}

/// The consumers' reports and what is missing from them.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Reports {
    pub(super) workers: Option<Vec<ConsumerReport>>,
    pub(super) partial: Option<String>,
}

/// Turns one poll's observation into reports. `in_flight` is the provider's lag-corrected
/// in-flight figure for the queue; `amqp_consumers` AMQP's current consumer count.
pub(super) fn reports(
    observed: Result<Observed, String>,
    in_flight: Option<u64>,
    amqp_consumers: Option<u64>,
) -> Reports {
    let observed = match observed {
        Ok(observed) => observed,
        Err(why) => return unreported(why),
    };
    if let Some(status) = observed.stats.values().find_map(|s| match s {
        ChannelStats::Denied(status) => Some(*status),
        _ => None,
    }) {
        return unreported(format!(
            "the management API answered {status} for channel statistics \
             (the user needs the monitoring tag)"
        ));
    }
    let held: u64 = observed
        .stats
        .values()
        .map(|s| match s {
            ChannelStats::Unacked(n) => *n,
            _ => 0,
        })
        .fold(0, u64::saturating_add);
    // Messages in flight that no channel's sample shows: their holder is unknown.
    let unaccounted = in_flight.unwrap_or(0) > held;
    let mut workers = Vec::new();
    let mut unknown_channels = HashSet::new();
    // The first reason is enough to explain the gap; the count says how wide it is.
    let mut first_reason: Option<String> = None;
    for consumer in &observed.listing.consumers {
        let busy = match consumer_state(observed.stats.get(&consumer.channel), unaccounted) {
            Ok(Some(busy)) => busy,
            Ok(None) => continue,
            Err(why) => {
                unknown_channels.insert(consumer.channel.as_str());
                first_reason.get_or_insert(why);
                true
            }
        };
        workers.push(ConsumerReport {
            pod: None,
            ip: Some(consumer.ip.clone()),
            busy,
            channel: Some(consumer.channel.clone()),
        });
    }
    let partial = gaps(
        unknown_channels.len(),
        first_reason,
        &observed.listing,
        amqp_consumers,
    );
    Reports {
        workers: Some(workers),
        partial,
    }
}

/// What the reports miss, for `partial`: channels whose statistics are unknown, consumers
/// not mapped to a pod, consumers AMQP counts that the lagging listing does not show yet.
fn gaps(
    unknown_channels: usize,
    first_reason: Option<String>,
    listing: &Listing,
    amqp_consumers: Option<u64>,
) -> Option<String> {
    let mut notes = Vec::new();
    if unknown_channels > 0 {
        notes.push(format!(
            "statistics of {unknown_channels} consumer channel(s) unknown ({}): reported busy",
            first_reason.unwrap_or_default()
        ));
    }
    if listing.unidentified > 0 {
        notes.push(format!(
            "{} consumer(s) not mapped to a pod (channel not in the statistics yet, or peer \
             not an IP address)",
            listing.unidentified
        ));
    }
    let listed = u64::try_from(listing.total).unwrap_or(u64::MAX);
    if let Some(counted) = amqp_consumers
        && counted > listed
    {
        notes.push(format!(
            "the management API lists {} of {counted} consumers (its listing lags)",
            listing.total
        ));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// A consumer's state from its channel's statistics: `Ok(Some(busy))`, `Ok(None)` when the
/// channel closed since the listing (the consumer is gone), `Err(why)` when unknown.
fn consumer_state(stats: Option<&ChannelStats>, unaccounted: bool) -> Result<Option<bool>, String> {
    match stats {
        Some(ChannelStats::Unacked(n)) => Ok(Some(*n > 0 || unaccounted)),
        Some(ChannelStats::Gone) => Ok(None),
        Some(ChannelStats::Unknown(why)) => Err(why.clone()),
        // `reports` returns before asking when a channel was denied.
        Some(ChannelStats::Denied(status)) => Err(format!("answered {status}")),
        // Only channels over the per-poll limit are not in the map.
        None => Err(format!(
            "over the limit of {MAX_CHANNELS} channels per poll"
        )),
    }
}

fn unreported(why: String) -> Reports {
    Reports {
        workers: None,
        partial: Some(format!("per-consumer reports unavailable: {why}")),
    }
}

#[cfg(test)]
mod tests;
