//! A tiny reader of an XMPP stream: splits the bytes a server sends into the stream header and
//! whole top-level stanzas, and picks names, attributes and child text out of a stanza.
//!
//! It is not an XML parser, and need not be one: it reads what ejabberd and Prosody send a
//! client (no DTDs, no CDATA in stanzas a load test receives) and tolerates what it does not
//! understand. Quoted attribute values may hold `>`; comments and processing instructions are
//! skipped. Text is returned raw (entities are not decoded): the load generator only reads
//! bodies it wrote itself, which hold none.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::BenchError;

/// The most a single stanza may take before the stream is considered broken.
const MAX_STANZA: usize = 1 << 20;

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// The server's `<stream:stream …>` opening tag.
    StreamStart(String),
    /// A complete top-level element (a stanza, or features, SASL answers …).
    Stanza(String),
    /// The server closed the stream (`</stream:stream>`).
    StreamEnd,
}

/// Splits an XMPP byte stream into [`Item`]s.
#[derive(Debug)]
pub(crate) struct StanzaReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Where scanning resumes: always at a token boundary.
    pos: usize,
    /// Element depth at `pos` (1 inside the stream).
    depth: usize,
    /// Where the current top-level element starts, if one is open.
    start: Option<usize>,
}

/// The result of scanning one token.
enum Token {
    /// More bytes are needed.
    Incomplete,
    /// An item is complete; the buffer up to `end` can go.
    Item(Item, usize),
    /// A token that completes nothing; scanning goes on.
    Skip,
}

impl<R: AsyncRead + Unpin> StanzaReader<R> {
    /// A reader over `inner`.
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, buf: Vec::with_capacity(4096), pos: 0, depth: 0, start: None }
    }

    /// Forgets the stream state for a stream restart (after SASL): the next item is a new
    /// stream header.
    pub(crate) fn restart(&mut self) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.depth = 0;
        self.start = None;
    }

    /// The next item; cancel-safe (bytes read are kept for the next call).
    ///
    /// # Errors
    /// [`BenchError::Protocol`] when the connection ends or a stanza grows past 1 MiB.
    pub(crate) async fn next(&mut self) -> Result<Item, BenchError> {
        loop {
            if let Some(item) = self.buffered() {
                return Ok(item);
            }
            if self.buf.len() > MAX_STANZA {
                return Err(BenchError::Protocol("stanza larger than 1 MiB".into()));
            }
            self.buf.reserve(4096);
            let read =
                self.inner.read_buf(&mut self.buf).await.map_err(|e| BenchError::Protocol(format!("reading: {e}")))?;
            if read == 0 {
                return Err(BenchError::Protocol("connection closed".into()));
            }
        }
    }

    /// The next item if it is already in the buffer.
    pub(crate) fn buffered(&mut self) -> Option<Item> {
        loop {
            match self.scan_token() {
                Token::Incomplete => return None,
                Token::Skip => {}
                Token::Item(item, end) => {
                    self.buf.drain(..end);
                    self.pos -= end;
                    return Some(item);
                }
            }
        }
    }

    fn scan_token(&mut self) -> Token {
        let buf = &self.buf;
        let Some(lt) = buf[self.pos..].iter().position(|b| *b == b'<') else {
            // Text (whitespace keep-alives between stanzas): consume it unless inside one.
            if self.start.is_none() {
                self.buf.drain(..);
                self.pos = 0;
            }
            return Token::Incomplete;
        };
        let at = self.pos + lt;
        let Some(next) = buf.get(at + 1).copied() else {
            return Token::Incomplete;
        };
        match next {
            b'?' | b'!' => {
                let close: &[u8] = if next == b'?' { b"?>" } else { b">" };
                match find(&buf[at..], close) {
                    Some(i) => {
                        self.pos = at + i + close.len();
                        Token::Skip
                    }
                    None => Token::Incomplete,
                }
            }
            b'/' => {
                let Some(gt) = buf[at..].iter().position(|b| *b == b'>') else {
                    return Token::Incomplete;
                };
                let end = at + gt + 1;
                self.pos = end;
                self.depth = self.depth.saturating_sub(1);
                match self.depth {
                    0 => Token::Item(Item::StreamEnd, end),
                    1 => self.finish(end),
                    _ => Token::Skip,
                }
            }
            _ => {
                let Some(end) = tag_end(&buf[at..]) else {
                    return Token::Incomplete;
                };
                let end = at + end;
                let self_closing = buf[..end].ends_with(b"/>");
                self.pos = end;
                if self.depth == 0 {
                    self.depth = 1;
                    let header = String::from_utf8_lossy(&buf[at..end]).into_owned();
                    return Token::Item(Item::StreamStart(header), end);
                }
                if self.depth == 1 {
                    self.start = Some(at);
                }
                if self_closing {
                    if self.depth == 1 {
                        return self.finish(end);
                    }
                    Token::Skip
                } else {
                    self.depth += 1;
                    Token::Skip
                }
            }
        }
    }

    /// A top-level element ended at `end`.
    fn finish(&mut self, end: usize) -> Token {
        let start = self.start.take().unwrap_or(0);
        let stanza = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
        Token::Item(Item::Stanza(stanza), end)
    }
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The length of the tag at the start of `bytes` (through its `>`), skipping quoted values.
fn tag_end(bytes: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, b) in bytes.iter().enumerate() {
        match (quote, *b) {
            (None, b'\'' | b'"') => quote = Some(*b),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The element name of a stanza (`message`, `iq`, `stream:features` …).
pub(crate) fn name(stanza: &str) -> &str {
    let rest = stanza.trim_start().trim_start_matches('<');
    let end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/').unwrap_or(rest.len());
    &rest[..end]
}

/// The value of attribute `attr` on a stanza's opening tag.
pub(crate) fn attr<'a>(stanza: &'a str, attr: &str) -> Option<&'a str> {
    let open = &stanza[..tag_end(stanza.as_bytes()).unwrap_or(stanza.len())];
    let mut from = 0;
    while let Some(i) = open[from..].find(attr) {
        let at = from + i;
        from = at + attr.len();
        let preceded = open[..at].ends_with(|c: char| c.is_whitespace());
        let rest = &open[at + attr.len()..];
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        if !preceded {
            continue;
        }
        let quote = rest.chars().next()?;
        if quote != '\'' && quote != '"' {
            continue;
        }
        let value = &rest[1..];
        return value.find(quote).map(|end| &value[..end]);
    }
    None
}

/// The raw text of the first child element `child` (e.g. `body`), if present.
pub(crate) fn child_text<'a>(stanza: &'a str, child: &str) -> Option<&'a str> {
    let open = format!("<{child}");
    let mut from = 0;
    loop {
        let at = from + stanza[from..].find(&open)?;
        let after = &stanza[at + open.len()..];
        from = at + open.len();
        match after.chars().next() {
            Some('>') => {
                let text = &after[1..];
                return text.find(&format!("</{child}>")).map(|end| &text[..end]);
            }
            Some(c) if c.is_whitespace() => {
                let gt = after.find('>')?;
                if after[..gt].ends_with('/') {
                    return Some("");
                }
                let text = &after[gt + 1..];
                return text.find(&format!("</{child}>")).map(|end| &text[..end]);
            }
            Some('/') => return Some(""),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn items(chunks: &[&str]) -> Vec<Item> {
        let bytes = chunks.concat();
        let mut reader = StanzaReader::new(bytes.as_bytes());
        let mut out = Vec::new();
        while let Ok(item) = reader.next().await {
            let end = item == Item::StreamEnd;
            out.push(item);
            if end {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn splits_a_stream_into_header_and_stanzas() {
        let got = items(&[
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='a>b' version='1.0'>",
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>",
            "<mechanism>PLAIN</mechanism></mechanisms></stream:features> ",
            "<message from='a@x/r' id='1'><body>1.2.3.xx</body><request xmlns='urn:xmpp:receipts'/></message>",
            "<presence/>",
            "</stream:stream>",
        ])
        .await;
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(matches!(&got[0], Item::StreamStart(h) if h.contains("id='a>b'")));
        let Item::Stanza(features) = &got[1] else { panic!() };
        assert_eq!(name(features), "stream:features");
        let Item::Stanza(message) = &got[2] else { panic!() };
        assert_eq!(name(message), "message");
        assert_eq!(attr(message, "from"), Some("a@x/r"));
        assert_eq!(attr(message, "id"), Some("1"));
        assert_eq!(child_text(message, "body"), Some("1.2.3.xx"));
        assert_eq!(got[3], Item::Stanza("<presence/>".into()));
        assert_eq!(got[4], Item::StreamEnd);
    }

    #[tokio::test]
    async fn reads_stanzas_split_across_reads() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut reader = StanzaReader::new(client);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in ["<stream:stream>", "<iq type='res", "ult' id='b'><bind><jid>a@b/c</jid>", "</bind></iq>"] {
                server.write_all(chunk.as_bytes()).await.unwrap();
                tokio::task::yield_now().await;
            }
            server
        });
        assert!(matches!(reader.next().await.unwrap(), Item::StreamStart(_)));
        let Item::Stanza(iq) = reader.next().await.unwrap() else { panic!() };
        assert_eq!(attr(&iq, "type"), Some("result"));
        assert_eq!(child_text(&iq, "jid"), Some("a@b/c"));
        drop(writer.await.unwrap());
    }

    #[test]
    fn attributes_match_whole_names_only() {
        let s = "<message xml:lang='en' lang=\"de\" id='x'/>";
        assert_eq!(attr(s, "lang"), Some("de"));
        assert_eq!(attr(s, "to"), None);
        assert_eq!(child_text("<a><received xmlns='r' id='1'/></a>", "received"), Some(""));
    }
}
