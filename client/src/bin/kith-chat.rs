//! `kith-chat`: end-to-end encrypted chat on a kith node, from the command line.
//!
//! ```text
//! kith-chat --server http://127.0.0.1:8080 register alice
//! kith-chat link                      # on a device of alice: shows a code, waits
//! kith-chat link accept <code>        # on the new device: joins alice's account
//! kith-chat send bob "hello"
//! kith-chat listen [--json]
//! kith-chat history bob [--json]
//! kith-chat safety-number bob
//! kith-chat trust bob
//! kith-chat devices
//! kith-chat remove-device 7
//! kith-chat chat bob
//! ```
//!
//! Every command works on a profile directory (`--profile` / `KITH_PROFILE`, default
//! `$XDG_CONFIG_HOME/kith/default`) holding the device's keys, sessions and decrypted history,
//! encrypted at rest with a passphrase (`KITH_PASSPHRASE`, or asked for on a terminal).

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command line prints")]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use kith_client::proto::{DeviceId, ErrorCode, ServerFrame, UserId};
use kith_client::{
    Body, ClientError, Event, HistoryEntry, LINK_WAIT, Messenger, MessengerError, Profile, ProfileError, SessionError,
    Trust,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The node a new profile talks to when no `--server` is given.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// End-to-end encrypted chat on a kith node.
#[derive(Debug, Parser)]
#[command(name = "kith-chat", version, about, long_about = None)]
struct Cli {
    /// The node's URL, http:// or https://. Default: the profile's node, or
    /// http://127.0.0.1:8080 for register, login and link accept.
    #[arg(long, env = "KITH_SERVER", global = true, value_name = "URL")]
    server: Option<String>,

    /// For an https:// node: trust only the CA certificates in this PEM file, instead of the
    /// system's (for a private CA or a self-signed node).
    #[arg(long, env = "KITH_CA_FILE", global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// The profile directory: this device's keys, sessions and decrypted history.
    /// Default: $XDG_CONFIG_HOME/kith/default (or ~/.config/kith/default).
    #[arg(long, env = "KITH_PROFILE", global = true, value_name = "DIR")]
    profile: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account and a profile for this device (password from KITH_PASSWORD or a
    /// prompt; the profile's passphrase from KITH_PASSPHRASE or a prompt).
    Register {
        /// 1 to 32 characters of a-z, 0-9, '.', '_', '-'.
        username: String,
        /// This device's id (default: random).
        #[arg(long, value_name = "N")]
        device: Option<u32>,
    },
    /// Log in: refresh the profile's token. A new device joins with `link accept` instead.
    Login {
        /// The account.
        username: String,
        /// This device's id (default: the profile's, or random for a new profile).
        #[arg(long, value_name = "N")]
        device: Option<u32>,
        /// Make a new profile with a NEW identity for the account, replacing the old one (for
        /// when every device is lost). Contacts are warned loudly and must accept it; the
        /// account's other devices are no longer trusted.
        #[arg(long)]
        new_identity: bool,
    },
    /// Add a device to this account: shows a code to type on the new device (`link accept`),
    /// then waits for it. With `accept <code>`: join an account, on the new device.
    Link {
        #[command(subcommand)]
        accept: Option<LinkCommand>,
        /// How long to wait for the other device, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = LINK_WAIT.as_secs(), global = true)]
        wait: u64,
    },
    /// List this account's other devices (the ones its identity certified).
    Devices,
    /// Remove another device of this account, with a removal signed by the account's identity:
    /// contacts stop writing to it for good.
    RemoveDevice {
        /// The device's id (see `kith-chat devices`).
        device: u32,
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
    /// Show the safety number to compare with a user (one per pair of users, whatever
    /// devices either has).
    SafetyNumber {
        /// `name` or `name@server`.
        user: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Accept a user's changed identity (after comparing safety numbers).
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

#[derive(Debug, Subcommand)]
enum LinkCommand {
    /// On the new device: join the account whose device shows `code` (the account's password
    /// from KITH_PASSWORD or a prompt opens the server; the code makes the device trusted).
    Accept {
        /// The code the other device shows: `<user id>/<32 hex digits>`.
        code: String,
        /// This device's id (default: random).
        #[arg(long, value_name = "N")]
        device: Option<u32>,
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
    let dir = match cli.profile {
        Some(dir) => dir,
        None => Profile::default_dir().context("no profile directory: pass --profile or set KITH_PROFILE")?,
    };
    let server = cli.server.as_deref();
    let trust = cli.ca_file.map_or(Trust::System, Trust::CaFile);
    match cli.command {
        Command::Register { username, device } => {
            let password = password(&format!("New password for {username}: "), true)?;
            let profile = new_profile(dir, &trust)?;
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
            warn_if_unencrypted(m.profile());
        }
        Command::Login { username, device, new_identity } => {
            let password = password(&format!("Password for {username}: "), false)?;
            let existing = Profile::new(&dir).exists();
            let profile = if existing { existing_profile(dir, &trust)? } else { new_profile(dir, &trust)? };
            let account = profile.account().ok();
            let server = server.or(account.as_ref().map(|a| a.server.as_str())).unwrap_or(DEFAULT_SERVER).to_owned();
            let m = Messenger::login(profile, &server, &username, &password, device.map(DeviceId), new_identity)
                .await
                .map_err(|e| failed(e, &server))?;
            println!(
                "logged in as {} (device {}); profile in {}",
                m.user_id(),
                m.device_id(),
                m.profile().dir().display()
            );
            if !existing {
                eprintln!(
                    "this device has a NEW identity for {}: contacts are warned and must accept it; the account's other devices are no longer trusted",
                    m.user_id()
                );
                warn_if_unencrypted(m.profile());
            }
        }
        Command::Link { accept: None, wait } => {
            let mut m = open(dir, server, &trust)?;
            let offer = m.link_offer();
            eprintln!("On the new device, run:");
            println!("kith-chat link accept {}", offer.code().as_str());
            eprintln!("This code adds a device to {}: type it only on your own device. Waiting for it…", m.user_id());
            let device = m.link_device(&offer, Duration::from_secs(wait)).await.map_err(|e| failed(e, m.server()))?;
            println!("linked device {device} to {}", m.user_id());
        }
        Command::Link { accept: Some(LinkCommand::Accept { code, device }), wait } => {
            let user = code.rsplit_once('/').map_or(code.as_str(), |(user, _)| user).to_owned();
            let password = password(&format!("Password for {user}: "), false)?;
            let profile = new_profile(dir, &trust)?;
            let server = server.unwrap_or(DEFAULT_SERVER);
            let m = Messenger::link(profile, server, &code, &password, device.map(DeviceId), Duration::from_secs(wait))
                .await
                .map_err(|e| failed(e, server))?;
            println!(
                "linked: this is device {} of {}; profile in {}",
                m.device_id(),
                m.user_id(),
                m.profile().dir().display()
            );
            warn_if_unencrypted(m.profile());
        }
        Command::Devices => {
            let mut m = open(dir, server, &trust)?;
            let (devices, events) = m.own_devices().await.map_err(|e| failed(e, m.server()))?;
            for event in &events {
                print_event(event, false);
            }
            println!("this device: {}", m.device_id());
            for d in devices {
                println!("device {}", d.device_id);
            }
        }
        Command::RemoveDevice { device } => {
            let mut m = open(dir, server, &trust)?;
            m.remove_device(DeviceId(device)).await.map_err(|e| failed(e, m.server()))?;
            println!("removed device {device}; contacts stop writing to it");
        }
        Command::Send { user, text } => {
            let mut m = open(dir, server, &trust)?;
            let to = m.resolve(&user)?;
            let sent = m.send(&to, &text).await.map_err(|e| failed(e, m.server()))?;
            for event in &sent.events {
                print_event(event, false);
            }
            println!("sent {}", sent.entry.message_id);
        }
        Command::Listen { json } => listen(open(dir, server, &trust)?, json).await?,
        Command::History { user, json } => {
            let mut m = open(dir, server, &trust)?;
            let peer = m.resolve(&user)?;
            let synced = m.sync().await;
            if let Ok(events) = &synced {
                // New messages show up in the history below; trust news is worth a line.
                for event in events.iter().filter(|e| !matches!(e, Event::Message(_) | Event::CaughtUp)) {
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
            let mut m = open(dir, server, &trust)?;
            let peer = m.resolve(&user)?;
            let (number, _) = m.safety_number(&peer).await.map_err(|e| failed(e, m.server()))?;
            if json {
                let line = serde_json::json!({
                    "userId": number.user_id, "safetyNumber": number.number, "changed": number.changed,
                });
                println!("{line}");
            } else {
                println!(
                    "Safety number of {} with {peer}; compare it with {peer} in person or over a channel you trust:",
                    m.user_id()
                );
                let note = if number.changed { "   <- CHANGED, not accepted yet" } else { "" };
                println!("  {}{note}", number.number);
            }
            warn_if_changed(&m, &peer)?;
        }
        Command::Trust { user } => {
            let mut m = open(dir, server, &trust)?;
            let peer = m.resolve(&user)?;
            if m.trust(&peer).await.map_err(|e| failed(e, m.server()))? {
                println!("accepted the new identity of {peer}; sending works again");
            } else {
                println!("nothing to accept: the identity of {peer} did not change");
            }
        }
        Command::Chat { user } => chat(open(dir, server, &trust)?, &user).await?,
    }
    Ok(())
}

fn open(dir: PathBuf, server: Option<&str>, trust: &Trust) -> Result<Messenger> {
    let profile = existing_profile(dir.clone(), trust)?;
    Messenger::open(profile, server).map_err(|e| match e {
        MessengerError::Profile(ProfileError::Missing(_)) => anyhow!(
            "no profile in {}: run `kith-chat register <name>`, or `kith-chat link accept <code>` to add this device to an account (or pass --profile)",
            dir.display()
        ),
        other => other.into(),
    })
}

/// The profile in `dir` as it is: with its passphrase (KITH_PASSPHRASE or a prompt) if it is
/// encrypted.
fn existing_profile(dir: PathBuf, trust: &Trust) -> Result<Profile> {
    if !Profile::new(&dir).encrypted() {
        return Ok(Profile::new(dir).with_trust(trust.clone()));
    }
    let passphrase = match std::env::var("KITH_PASSPHRASE") {
        Ok(passphrase) => passphrase,
        Err(_) if std::io::stdin().is_terminal() => rpassword::prompt_password("Passphrase of this profile: ")
            .context("cannot ask for the passphrase; set KITH_PASSPHRASE")?,
        Err(_) => bail!("the profile in {} is encrypted: set KITH_PASSPHRASE", dir.display()),
    };
    Ok(Profile::with_passphrase(dir, Some(passphrase)).with_trust(trust.clone()))
}

/// A profile about to be made, encrypted with a passphrase from KITH_PASSPHRASE or a prompt
/// (empty for none).
fn new_profile(dir: PathBuf, trust: &Trust) -> Result<Profile> {
    let passphrase = match std::env::var("KITH_PASSPHRASE") {
        Ok(passphrase) => passphrase,
        Err(_) if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password("Passphrase to encrypt this profile (empty for none): ")
                .context("cannot ask for the passphrase; set KITH_PASSPHRASE")?;
            if !first.is_empty() {
                let again = rpassword::prompt_password("Repeat it: ").context("cannot ask for the passphrase")?;
                if again != first {
                    bail!("the passphrases differ");
                }
            }
            first
        }
        Err(_) => String::new(),
    };
    Ok(Profile::with_passphrase(dir, Some(passphrase)).with_trust(trust.clone()))
}

/// The one warning about a profile kept in clear.
fn warn_if_unencrypted(profile: &Profile) {
    if !profile.encrypted() {
        eprintln!(
            "warning: the profile in {} is NOT encrypted: anyone who can read it gets your keys and messages. \
             Set KITH_PASSPHRASE (or answer the prompt) when making a profile to encrypt it.",
            profile.dir().display()
        );
    }
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
        MessengerError::Session(SessionError::IdentityChanged { user }) => format!(
            "NOT SENT: the identity of {user} CHANGED. Compare safety numbers \
             (`kith-chat safety-number {user}`), then accept it with `kith-chat trust {user}`"
        ),
        other => other.to_string(),
    }
}

fn explain_client(e: &ClientError, server: &str) -> String {
    match e {
        ClientError::Transport(reason) => format!("cannot reach {server}: {reason}"),
        ClientError::Tls(reason) => format!("no secure connection to {server}: {reason}"),
        ClientError::TimedOut(what) => format!("{server} did not answer in time: {what}"),
        ClientError::Api { code: ErrorCode::InvalidCredentials, .. } => "wrong username or password".into(),
        ClientError::Api { code: ErrorCode::TokenExpired | ErrorCode::InvalidToken, .. } => {
            "your login has expired or is not valid on this server; run `kith-chat login <name>`".into()
        }
        ClientError::Api { code: ErrorCode::TooManyDevices, message, .. } => {
            format!("{message} (each installation is a device; remove an old one with `kith-chat remove-device`)")
        }
        ClientError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The loud warning about a changed identity.
fn identity_warning(user: &UserId) -> String {
    let bar = "!".repeat(72);
    format!(
        "{bar}\n\
         !!! WARNING: the identity of {user} HAS CHANGED.\n\
         !!! They may have started over on a new device, or someone may be intercepting your messages.\n\
         !!! Compare safety numbers:      kith-chat safety-number {user}\n\
         !!! Sending to {user} is blocked until you run:  kith-chat trust {user}\n\
         {bar}"
    )
}

fn warn_if_changed(m: &Messenger, peer: &UserId) -> Result<()> {
    if m.identity_changed(peer)? {
        eprintln!("{}", identity_warning(peer));
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
        Event::IdentityChanged { user_id } => {
            if json {
                println!("{}", serde_json::json!({"type": "identityChanged", "userId": user_id}));
            }
            eprintln!("{}", identity_warning(user_id));
        }
        Event::NewDevice { user_id, device_id } => {
            if json {
                println!("{}", serde_json::json!({"type": "newDevice", "userId": user_id, "deviceId": device_id}));
            } else {
                println!(
                    "* {user_id} has a new device ({device_id}), certified by their identity (the safety number is unchanged)"
                );
            }
        }
        Event::UntrustedDevice { user_id, device_id, reason } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"type": "untrustedDevice", "userId": user_id, "deviceId": device_id, "reason": reason})
                );
            }
            eprintln!(
                "!! NOT writing to device {device_id} of {user_id}: it is not signed by the identity of {user_id} ({reason}). \
                 The server lists a device {user_id} did not add."
            );
        }
        Event::DeviceRemoved { user_id, device_id } => {
            if json {
                println!("{}", serde_json::json!({"type": "deviceRemoved", "userId": user_id, "deviceId": device_id}));
            } else {
                println!("* {user_id} removed device {device_id}; it is not written to any more");
            }
        }
        Event::MessagesLost { user_id, device_id, count } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"type": "messagesLost", "userId": user_id, "deviceId": device_id, "count": count})
                );
            } else {
                println!(
                    "!! {count} message(s) from {user_id} (device {device_id}) never arrived and can no longer be decrypted"
                );
            }
        }
        Event::LinkMessage { .. } => {}
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
