//! Each instance's stream (`stream:<instance>`): what other instances hand it, read by a
//! consumer group of one, acknowledged and deleted once delivered to its sessions.
//!
//! An entry added while this instance's connection to Redis was down waits in the stream and
//! is read when it is back: a push is not lost because one connection dropped. Should Redis
//! itself lose the stream (a restart without persistence), the group is gone too; the
//! consumer notices, and the instance joins again: it registers its users, then every
//! session here replays what is pending from the store.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Incoming;
use super::link::{BLOCK, Link, LinkError};
use super::wire::{FIELD, Wire};

/// The consumer group (one consumer: the instance itself).
const GROUP: &str = "kith";

/// Most entries one read takes.
const READ_COUNT: usize = 512;

/// Most entries a stream keeps (approximately) if its instance stops reading.
pub(crate) const MAX_LEN: usize = 100_000;

/// How long to wait before reconnecting after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Appends an event to `instance`'s stream.
pub(crate) async fn add(link: &Link, instance: &str, wire: &Wire) -> Result<(), LinkError> {
    let key = link.key(&["stream", instance]);
    let text = wire.encode();
    link.run(|mut c| async move {
        redis::cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_LEN)
            .arg("*")
            .arg(FIELD)
            .arg(&text)
            .query_async::<String>(&mut c)
            .await
    })
    .await
    .map(|_| ())
}

/// Reads this instance's stream until shutdown, handing each event to `incoming`.
pub(crate) async fn consume(
    link: std::sync::Arc<Link>,
    instance: String,
    incoming: mpsc::Sender<Incoming>,
    lag: std::sync::Arc<super::Lag>,
    shutdown: CancellationToken,
) {
    let key = link.key(&["stream", &instance]);
    let mut first = true;
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = link.dedicated() => connected,
        };
        let outcome = match connected {
            Ok(mut connection) => {
                match read(&mut connection, &key, &instance, &incoming, &lag, &mut first, &shutdown).await {
                    Ok(()) => return,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        debug!(error = %outcome, "stream consumer lost redis; reconnecting");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Makes sure the group exists; `true` when it had to be made (the stream is new, or Redis
/// lost it).
async fn ensure_group(connection: &mut MultiplexedConnection, key: &str) -> Result<bool, RedisError> {
    match connection.xgroup_create_mkstream::<_, _, _, ()>(key, GROUP, "$").await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments, reason = "the consumer's loop state, passed down once")]
async fn read(
    connection: &mut MultiplexedConnection,
    key: &str,
    instance: &str,
    incoming: &mpsc::Sender<Incoming>,
    lag: &super::Lag,
    first: &mut bool,
    shutdown: &CancellationToken,
) -> Result<(), RedisError> {
    if ensure_group(connection, key).await? && !std::mem::take(first) {
        // Redis lost this stream, and with it what was handed here and where this instance's
        // users are: register again, then replay.
        info!("redis lost this instance's stream; joining again");
        let _ = incoming.send(Incoming::Rejoin).await;
    }
    *first = false;
    // Entries read before a connection dropped but not acknowledged come first ("0"), then
    // new ones (">").
    let mut from = "0";
    loop {
        let options = StreamReadOptions::default()
            .group(GROUP, instance)
            .count(READ_COUNT)
            .block(usize::try_from(BLOCK.as_millis()).unwrap_or(2000));
        let (keys, ids) = ([key], [from]);
        let reply: Option<StreamReadReply> = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            reply = connection.xread_options(&keys, &ids, &options) => match reply {
                Ok(reply) => reply,
                Err(e) if e.code() == Some("NOGROUP") => {
                    ensure_group(connection, key).await?;
                    info!("redis lost this instance's stream; joining again");
                    let _ = incoming.send(Incoming::Rejoin).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let entries: Vec<_> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
        if entries.is_empty() {
            if from == "0" {
                from = ">";
            }
            continue;
        }
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            lag.observe(&entry.id);
            if let Some(wire) = entry.get::<String>(FIELD).as_deref().and_then(Wire::decode) {
                if incoming.send(Incoming::from(wire)).await.is_err() {
                    return Ok(());
                }
            } else {
                warn!(entry = %entry.id, "an entry this version cannot read; skipped");
            }
            ids.push(entry.id);
        }
        redis::pipe()
            .cmd("XACK")
            .arg(key)
            .arg(GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(key)
            .arg(&ids)
            .ignore()
            .query_async::<()>(connection)
            .await?;
    }
}
