-- Prosody as a benchmark peer of kith (bench/compare.sh). Loopback only, no TLS, message
-- archiving on for everyone (mod_mam with default_archive_policy = true, the closest thing to
-- kith's durable history), no rate limits (mod_limits off), in-band registration open to
-- loopback. start.sh substitutes @PORT@, @DATA@ and @PID@.

daemonize = false
pidfile = "@PID@"
data_path = "@DATA@"
log = { warn = "*console" }

-- epoll: the default select() backend cannot hold more than ~1,000 connections.
network_backend = "epoll"

interfaces = { "127.0.0.1" }
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { @PORT@ }

modules_enabled = {
    "roster"; "saslauth"; "disco"; "register"; "mam"; "offline"; "posix";
}
-- No server-to-server listener, no traffic limits.
modules_disabled = { "s2s"; "limits"; "tls" }

-- SASL PLAIN without TLS on loopback (kith's clients use ws:// in the benchmark too).
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"

allow_registration = true
-- Loopback may register as fast as it likes (these are Prosody's own knobs).
registration_whitelist = { "127.0.0.1" }
min_seconds_between_registrations = 0
registration_throttle_max = 1000000

default_archive_policy = true
archive_expires_after = "never"

VirtualHost "localhost"
