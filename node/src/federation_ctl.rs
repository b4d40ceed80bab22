//! `kith federation status` and `kith federation retry PEER`: the operator's view of a running
//! node's outboxes, asked over the node's admin routes ([`super::admin`]) on its
//! `--metrics-listen` address, from the same machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use kith_proto::ErrorBody;

use crate::outbox::admin::RetryAnswer;
use crate::outbox::status::{DestinationStatus, FederationStatus};

/// `kith federation` subcommands.
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Show each peer's outbox: depth, age of the oldest envelope, failed attempts since the
    /// last success, the last error, and when the next attempt is due.
    Status {
        /// Which node to ask.
        #[command(flatten)]
        node: AdminArgs,
        /// Print the node's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the outbox pump of PEER retry now instead of waiting out its backoff.
    Retry {
        /// Which node to ask.
        #[command(flatten)]
        node: AdminArgs,
        /// The peer's server name.
        peer: String,
    },
}

/// Where a running node serves its admin routes.
#[derive(Debug, Clone, Default, Args)]
pub struct AdminArgs {
    /// The node's --metrics-listen address (an unspecified IP means loopback).
    #[arg(long, env = "KITH_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// The node's TOML config file, to read `metrics_listen` from.
    #[arg(long, env = "KITH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How long a call to the node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a `kith federation` subcommand.
///
/// # Errors
/// A message for the operator: no address, the node not answering, or its error.
pub async fn run(command: FederationCommand) -> Result<(), String> {
    match command {
        FederationCommand::Status { node, json } => {
            let body = call(&node, Method::GET, "/federation/status").await?;
            if json {
                print_line(&String::from_utf8_lossy(&body));
                return Ok(());
            }
            let status: FederationStatus =
                serde_json::from_slice(&body).map_err(|e| format!("the node answered something else: {e}"))?;
            print_line(&table(&status));
            Ok(())
        }
        FederationCommand::Retry { node, peer } => {
            let body = call(&node, Method::POST, &format!("/federation/retry/{peer}")).await?;
            let answer: RetryAnswer =
                serde_json::from_slice(&body).map_err(|e| format!("the node answered something else: {e}"))?;
            print_line(&format!("{} retries now", answer.destination));
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout, reason = "printing the answer is the command's job")]
fn print_line(text: &str) {
    println!("{}", text.trim_end());
}

/// The address to call: the node's, with an unspecified IP made loopback.
fn target(node: &AdminArgs) -> Result<SocketAddr, String> {
    let addr = crate::config::metrics_listen(node.metrics_listen, node.config.as_deref())
        .map_err(|e| e.to_string())?
        .ok_or("the node's admin routes are on its --metrics-listen address: give it with --metrics-listen (or KITH_METRICS_LISTEN, or --config)")?;
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, addr.port()))
}

/// One HTTP/1 request to the node; the body of a 2xx answer, or the node's error message.
async fn call(node: &AdminArgs, method: Method, path: &str) -> Result<Bytes, String> {
    let addr = target(node)?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connecting to {addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("talking to {addr}: {e}"))?;
        let driver = tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| format!("talking to {addr}: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("reading from {addr}: {e}"))?.to_bytes();
        driver.abort();
        Ok::<_, String>((status, body))
    };
    let (status, body) =
        tokio::time::timeout(CALL_TIMEOUT, exchange).await.map_err(|_| format!("{addr} did not answer in time"))??;
    if status.is_success() {
        return Ok(body);
    }
    Err(match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(error) => error.error.message,
        Err(_) if status == StatusCode::NOT_FOUND => {
            format!("{addr} has no admin routes: is it a kith node's --metrics-listen address?")
        }
        Err(_) => format!("{addr} answered {status}"),
    })
}

/// The status as a table, one destination a line.
fn table(status: &FederationStatus) -> String {
    let mut lines = vec![format!(
        "{:<16} {:<5} {:<6} {:>7} {:>8} {:>8} {:>8}  {}",
        "PEER", "LINK", "PUMPS", "DEPTH", "OLDEST", "ATTEMPTS", "NEXT", "LAST ERROR"
    )];
    for d in &status.destinations {
        lines.push(row(d));
    }
    if status.destinations.is_empty() {
        lines.push("(no peers pinned and nothing queued)".into());
    }
    lines.join("\n")
}

fn row(d: &DestinationStatus) -> String {
    let link = match (d.pinned, d.connected) {
        (false, _) => "unpinned",
        (true, true) => "up",
        (true, false) => "down",
    };
    let last_error = d
        .last_error
        .as_ref()
        .map_or_else(|| "-".to_owned(), |e| format!("{} {} ago: {}", e.kind.as_str(), age(e.age_seconds), e.detail));
    // With several instances, the one holding the destination's lease pumps it.
    let pumps = if d.pumping_here { "here" } else { "other" };
    format!(
        "{:<16} {:<5} {:<6} {:>7} {:>8} {:>8} {:>8}  {}",
        d.destination,
        link,
        pumps,
        d.depth,
        d.oldest_age_seconds.map_or_else(|| "-".to_owned(), age),
        d.attempts,
        d.next_attempt_in_seconds.map_or_else(|| "-".to_owned(), |s| format!("in {}", age(s))),
        last_error
    )
}

/// Seconds as `850ms`, `12s`, `3m20s`, `2h5m`.
fn age(seconds: f64) -> String {
    let whole = seconds.max(0.0);
    if whole < 1.0 {
        return format!("{}ms", (whole * 1000.0).round());
    }
    let s = whole.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::status::{FailureKind, LastError};

    #[test]
    fn the_table_says_what_waits_and_why() {
        let status = FederationStatus {
            destinations: vec![DestinationStatus {
                destination: "beta".into(),
                pinned: true,
                connected: false,
                pumping_here: true,
                depth: 200,
                oldest_age_seconds: Some(75.2),
                attempts: 4,
                last_error: Some(LastError {
                    kind: FailureKind::Unreachable,
                    detail: "connection refused".into(),
                    age_seconds: 1.4,
                }),
                next_attempt_in_seconds: Some(0.4),
            }],
        };
        let text = table(&status);
        let line = text.lines().nth(1).unwrap();
        for part in ["beta", "down", "here", "200", "1m15s", "4", "in 400ms", "unreachable 1s ago: connection refused"]
        {
            assert!(line.contains(part), "{part} in {line}");
        }
    }

    #[test]
    fn an_unspecified_listen_address_is_called_on_loopback() {
        let node = AdminArgs { metrics_listen: Some("0.0.0.0:9100".parse().unwrap()), config: None };
        assert_eq!(target(&node).unwrap(), "127.0.0.1:9100".parse().unwrap());
        assert!(target(&AdminArgs::default()).unwrap_err().contains("--metrics-listen"));
    }
}
