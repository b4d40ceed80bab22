//! `kith-chat`: end-to-end encrypted chat on a kith node, from the command line.
//!
//! ```text
//! kith-chat --server http://127.0.0.1:8080 register alice
//! kith-chat send bob "hello"
//! kith-chat listen [--json]
//! kith-chat history bob [--json]
//! kith-chat safety-number bob
//! kith-chat trust bob
//! kith-chat chat bob
//! ```
//!
//! Every command works on a profile directory (`--profile` / `KITH_PROFILE`, default
//! `$XDG_CONFIG_HOME/kith/default`) holding the device's keys, sessions and decrypted history.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command line prints")]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use kith_client::proto::{DeviceId, ErrorCode, ServerFrame, UserId};
use kith_client::{
    Body, ClientError, Event, HistoryEntry, Messenger, MessengerError, Profile, ProfileError, SessionError,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The node a new profile talks to when no `--server` is given.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// End-to-end encrypted chat on a kith node.
#[derive(Debug, Parser)]
#[command(name = "kith-chat", version, about, long_about = None)]
struct Cli {
    /// The node's URL (http:// only; TLS is not supported yet). Default: the profile's node,
    /// or http://127.0.0.1:8080 for register and login.
    #[arg(long, env = "KITH_SERVER", global = true, value_name = "URL")]
    server: Option<String>,

    /// The profile directory: this device's keys, sessions and decrypted history.
    /// Default: $XDG_CONFIG_HOME/kith/default (or ~/.config/kith/default).
    #[arg(long, env = "KITH_PROFILE", global = true, value_name = "DIR")]
    profile: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account and a profile for this device (password from KITH_PASSWORD or a prompt).
    Register {
        /// 1 to 32 characters of a-z, 0-9, '.', '_', '-'.
        username: String,
        /// This device's id (default: random).
        #[arg(long, value_name = "N")]
        device: Option<u32>,
    },
    /// Log in: refresh the profile's token, or make a new profile for this device.
    Login {
        /// The account.
        username: String,
        /// This device's id (default: the profile's, or random for a new profile). Reusing
        /// another installation's id replaces that device's identity.
        #[arg(long, value_name = "N")]
        device: Option<u32>,
    },
    /// Send an encrypted message.
    Send {
        /// `name` (this node) or `name@server`.
        user: String,
        /// The message.
        text: String,
    },
    /// Print messages as they arrive (after everything pending), until interrupted.
    Listen {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Fetch what is pending, then print the conversation with a user.
    History {
        /// `name` or `name@server`.
        user: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the safety numbers to compare with a user (one per device pair).
    SafetyNumber {
        /// `name` or `name@server`.
        user: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Accept a user's changed identity key (after comparing safety numbers).
    Trust {
        /// `name` or `name@server`.
        user: String,
    },
    /// Chat interactively: type lines to send them, see messages as they arrive; /quit ends.
    Chat {
        /// `name` or `name@server`.
        user: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KITH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let server_hint = cli.server.clone();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", explain(&e, server_hint.as_deref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let profile = Profile::new(match cli.profile {
        Some(dir) => dir,
        None => Profile::default_dir().context("no profile directory: pass --profile or set KITH_PROFILE")?,
    });
    let server = cli.server.as_deref();
    match cli.command {
        Command::Register { username, device } => {
            let password = password(&format!("New password for {username}: "), true)?;
            let server = server.unwrap_or(DEFAULT_SERVER);
            let m = Messenger::register(profile, server, &username, &password, device.map(DeviceId))
                .await
                .map_err(|e| failed(e, server))?;
            println!(
                "registered {} (device {}); profile in {}",
                m.user_id(),
                m.device_id(),
                m.profile().dir().display()
            );
        }
        Command::Login { username, device } => {
            let password = password(&format!("Password for {username}: "), false)?;
            let account = profile.account().ok();
            let server = server.or(account.as_ref().map(|a| a.server.as_str())).unwrap_or(DEFAULT_SERVER).to_owned();
            let m = Messenger::login(profile, &server, &username, &password, device.map(DeviceId))
                .await
                .map_err(|e| failed(e, &server))?;
            println!(
                "logged in as {} (device {}); profile in {}",
                m.user_id(),
                m.device_id(),
                m.profile().dir().display()
            );
        }
        Command::Send { user, text } => {
            let mut m = open(profile, server)?;
            let to = m.resolve(&user)?;
            let sent = m.send(&to, &text).await.map_err(|e| failed(e, m.server()))?;
            for event in &sent.events {
                print_event(event, false);
            }
            println!("sent {}", sent.entry.message_id);
        }
        Command::Listen { json } => listen(open(profile, server)?, json).await?,
        Command::History { user, json } => {
            let mut m = open(profile, server)?;
            let peer = m.resolve(&user)?;
            let synced = m.sync().await;
            if let Ok(events) = &synced {
                // New messages show up in the history below; identity news is worth a line.
                for event in
                    events.iter().filter(|e| matches!(e, Event::IdentityChanged { .. } | Event::NewDevice { .. }))
                {
                    print_event(event, json);
                }
            }
            for entry in m.history(&peer)? {
                print_entry(&entry, json);
            }
            warn_if_changed(&m, &peer)?;
            synced.map_err(|e| failed(e, m.server()))?;
        }
        Command::SafetyNumber { user, json } => {
            let mut m = open(profile, server)?;
            let peer = m.resolve(&user)?;
            let (numbers, _) = m.safety_numbers(&peer).await.map_err(|e| failed(e, m.server()))?;
            if numbers.is_empty() {
                bail!("{peer} has no device with end-to-end encryption keys");
            }
            if !json {
                println!(
                    "Safety numbers of your device {} with {peer}; compare them with {peer} in person or over a channel you trust:",
                    m.device_id()
                );
            }
            for n in &numbers {
                if json {
                    let line = serde_json::json!({
                        "userId": n.user_id, "deviceId": n.device_id, "ourDeviceId": n.our_device_id,
                        "safetyNumber": n.number, "changed": n.changed,
                    });
                    println!("{line}");
                } else {
                    let note = if n.changed { "   <- CHANGED, not accepted yet" } else { "" };
                    println!("  device {:>10}: {}{note}", n.device_id, n.number);
                }
            }
            warn_if_changed(&m, &peer)?;
        }
        Command::Trust { user } => {
            let mut m = open(profile, server)?;
            let peer = m.resolve(&user)?;
            match m.trust(&peer).await? {
                0 => println!("nothing to accept: no changed identity for {peer}"),
                n => println!("accepted the new identity of {peer} ({n} device{}); sending works again", plural(n)),
            }
        }
        Command::Chat { user } => chat(open(profile, server)?, &user).await?,
    }
    Ok(())
}

fn open(profile: Profile, server: Option<&str>) -> Result<Messenger> {
    let dir = profile.dir().to_owned();
    Messenger::open(profile, server).map_err(|e| match e {
        MessengerError::Profile(ProfileError::Missing(_)) => anyhow!(
            "no profile in {}: run `kith-chat register <name>` or `kith-chat login <name>` first (or pass --profile)",
            dir.display()
        ),
        other => other.into(),
    })
}

/// The password: `KITH_PASSWORD`, or asked for without echo.
fn password(prompt: &str, confirm: bool) -> Result<String> {
    if let Ok(password) = std::env::var("KITH_PASSWORD") {
        return Ok(password);
    }
    let first =
        rpassword::prompt_password(prompt).context("cannot ask for the password (no terminal?); set KITH_PASSWORD")?;
    if confirm {
        let again = rpassword::prompt_password("Repeat it: ").context("cannot ask for the password")?;
        if again != first {
            bail!("the passwords differ");
        }
    }
    Ok(first)
}

/// Wraps an SDK error with the server it concerns, for [`explain`].
fn failed(e: MessengerError, server: &str) -> anyhow::Error {
    anyhow::Error::new(e).context(Server(server.to_owned()))
}

/// Which server an error concerns.
#[derive(Debug)]
struct Server(String);

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One clear line for an error.
fn explain(e: &anyhow::Error, server_hint: Option<&str>) -> String {
    let server = e.downcast_ref::<Server>().map(|s| s.0.clone()).or(server_hint.map(str::to_owned));
    let server = server.as_deref().unwrap_or("the server");
    let Some(m) = e.downcast_ref::<MessengerError>() else {
        return format!("{e:#}");
    };
    match m {
        MessengerError::Client(c) => explain_client(c, server),
        MessengerError::Queued(c) => format!(
            "{}; the message is saved and will be sent by the next kith-chat command that reaches the server",
            explain_client(c, server)
        ),
        MessengerError::UnknownUser(user) => format!("no such user: {user}"),
        MessengerError::Session(SessionError::IdentityChanged { user, devices }) => format!(
            "NOT SENT: the identity key of {user} CHANGED (device {}). Compare safety numbers \
             (`kith-chat safety-number {user}`), then accept it with `kith-chat trust {user}`",
            devices.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

fn explain_client(e: &ClientError, server: &str) -> String {
    match e {
        ClientError::Transport(reason) => format!("cannot reach {server}: {reason}"),
        ClientError::TimedOut(what) => format!("{server} did not answer in time: {what}"),
        ClientError::Api { code: ErrorCode::InvalidCredentials, .. } => "wrong username or password".into(),
        ClientError::Api { code: ErrorCode::TokenExpired | ErrorCode::InvalidToken, .. } => {
            "your login has expired or is not valid on this server; run `kith-chat login <name>`".into()
        }
        ClientError::Api { code: ErrorCode::TooManyDevices, message, .. } => {
            format!("{message} (each installation is a device; remove an old one)")
        }
        ClientError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The loud warning about a changed identity.
fn identity_warning(user: &UserId, devices: &[DeviceId]) -> String {
    let devices = devices.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let bar = "!".repeat(72);
    format!(
        "{bar}\n\
         !!! WARNING: the identity key of {user} (device {devices}) HAS CHANGED.\n\
         !!! They may have reinstalled, or someone may be intercepting your messages.\n\
         !!! Compare safety numbers:      kith-chat safety-number {user}\n\
         !!! Sending to {user} is blocked until you run:  kith-chat trust {user}\n\
         {bar}"
    )
}

fn warn_if_changed(m: &Messenger, peer: &UserId) -> Result<()> {
    let changed = m.changed_identities(peer)?;
    if !changed.is_empty() {
        eprintln!("{}", identity_warning(peer, &changed));
    }
    Ok(())
}

fn print_entry(entry: &HistoryEntry, json: bool) {
    if json {
        match serde_json::to_string(entry) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("error: cannot print message {}: {e}", entry.message_id),
        }
        return;
    }
    let device = entry.from_device.map(|d| format!(" (device {d})")).unwrap_or_default();
    match &entry.body {
        Body::Message { text, encrypted: true } => {
            println!("[{}] {} -> {}: {text}", entry.timestamp, entry.from, entry.to)
        }
        Body::Message { text, encrypted: false } => {
            println!("[{}] {} -> {} [UNENCRYPTED]: {text}", entry.timestamp, entry.from, entry.to);
        }
        Body::Undecryptable { reason } => println!(
            "[{}] !! message {} from {}{device} could not be decrypted: {reason}",
            entry.timestamp, entry.message_id, entry.from
        ),
    }
}

fn print_event(event: &Event, json: bool) {
    match event {
        Event::Message(entry) => print_entry(entry, json),
        Event::IdentityChanged { user_id, device_id } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"type": "identityChanged", "userId": user_id, "deviceId": device_id})
                );
            }
            eprintln!("{}", identity_warning(user_id, &[*device_id]));
        }
        Event::NewDevice { user_id, device_id } => {
            if json {
                println!("{}", serde_json::json!({"type": "newDevice", "userId": user_id, "deviceId": device_id}));
            } else {
                println!(
                    "* {user_id} has a new device ({device_id}); `kith-chat safety-number {user_id}` shows its safety number"
                );
            }
        }
        Event::CaughtUp => {
            if json {
                println!("{}", serde_json::json!({"type": "caughtUp"}));
            }
        }
        Event::Receipt { message_id, status } => {
            if json {
                println!("{}", serde_json::json!({"type": "receipt", "messageId": message_id, "status": status}));
            }
        }
        Event::ServerError { code, message } => {
            if json {
                println!("{}", serde_json::json!({"type": "serverError", "code": code, "message": message}));
            }
            eprintln!("the server refused something: {message}");
        }
    }
}

/// Whether reconnecting may help.
fn transient(e: &MessengerError) -> bool {
    match e {
        MessengerError::Client(ClientError::Transport(_) | ClientError::TimedOut(_) | ClientError::Closed { .. }) => {
            true
        }
        MessengerError::Client(ClientError::Api { status, .. }) => *status >= 500 || *status == 429,
        MessengerError::Queued(_) | MessengerError::Timeout(_) => true,
        _ => false,
    }
}

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

async fn listen(mut m: Messenger, json: bool) -> Result<()> {
    let mut inbox = m.connect().await.map_err(|e| failed(e, m.server()))?;
    eprintln!("listening as {} (device {}); Ctrl-C to stop", m.user_id(), m.device_id());
    let mut backoff = Duration::from_secs(1);
    loop {
        let frame = tokio::select! {
            frame = inbox.next_frame() => frame,
            _ = tokio::signal::ctrl_c() => {
                let _ = inbox.close().await;
                return Ok(());
            }
        };
        on_frame(&mut m, &mut inbox, frame, &mut backoff, json).await?;
    }
}

/// Handles what the inbox read: prints the events a frame brings, or reconnects after a
/// transient failure (with `backoff`). Fails only when the failure is final.
async fn on_frame(
    m: &mut Messenger,
    inbox: &mut kith_client::Inbox,
    frame: Result<ServerFrame, ClientError>,
    backoff: &mut Duration,
    json: bool,
) -> Result<()> {
    let result = match frame {
        Ok(frame) => m.handle(inbox, frame).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(events) => {
            *backoff = Duration::from_secs(1);
            for event in &events {
                print_event(event, json);
            }
        }
        Err(e) if transient(&e) => {
            eprintln!("connection lost ({}); reconnecting", explain(&failed(e, m.server()), None));
            *inbox = reconnect(m, backoff).await?;
        }
        Err(e) => return Err(failed(e, m.server())),
    }
    Ok(())
}

async fn reconnect(m: &mut Messenger, backoff: &mut Duration) -> Result<kith_client::Inbox> {
    loop {
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        match m.connect().await {
            Ok(inbox) => {
                eprintln!("reconnected");
                return Ok(inbox);
            }
            Err(e) if transient(&e) => {
                eprintln!("{}; retrying in {}s", explain(&failed(e, m.server()), None), backoff.as_secs());
            }
            Err(e) => return Err(failed(e, m.server())),
        }
    }
}

/// How many earlier messages `chat` shows.
const CHAT_CONTEXT: usize = 20;

async fn chat(mut m: Messenger, user: &str) -> Result<()> {
    let peer = m.resolve(user)?;
    let mut inbox = m.connect().await.map_err(|e| failed(e, m.server()))?;
    let history = m.history(&peer)?;
    for entry in &history[history.len().saturating_sub(CHAT_CONTEXT)..] {
        print_entry(entry, false);
    }
    warn_if_changed(&m, &peer)?;
    eprintln!("chatting with {peer} as {}; type a message and press Enter, /quit to leave", m.user_id());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.context("reading the terminal")? else { break };
                let text = line.trim();
                if text == "/quit" {
                    break;
                }
                if text.is_empty() {
                    continue;
                }
                match m.send(&peer, text).await {
                    Ok(sent) => {
                        for event in &sent.events {
                            print_event(event, false);
                        }
                        print_entry(&sent.entry, false);
                    }
                    Err(e) => eprintln!("error: {}", explain(&failed(e, m.server()), None)),
                }
            }
            frame = inbox.next_frame() => on_frame(&mut m, &mut inbox, frame, &mut backoff, false).await?,
        }
    }
    let _ = inbox.close().await;
    Ok(())
}
