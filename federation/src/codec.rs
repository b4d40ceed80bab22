//! The wire codec of `/kith/federation/1`: one CBOR value per stream, read with a size cap and
//! refused when anything follows it, so a request has exactly one meaning. The pure
//! [`decode_request`] and [`decode_response`] are what the swarm's [`Codec`] reads with, and
//! what the fuzz targets (`fuzz/`) and their corpus replay test call.

use std::io;

use cbor4ii::core::dec::Read as _;
use cbor4ii::core::utils::SliceReader;
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, Request, Response};

/// Why bytes are not a request or a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// More bytes than the protocol allows.
    #[error("{got} bytes; the limit is {max}")]
    TooLarge {
        /// How many bytes came (at least).
        got: u64,
        /// The cap.
        max: u64,
    },
    /// Not CBOR of the expected shape.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Bytes after the value.
    #[error("{0} bytes after the value")]
    Trailing(usize),
}

/// Decodes one request: at most [`MAX_REQUEST_BYTES`], one CBOR value, nothing after it.
///
/// # Errors
/// [`CodecError`] naming what is wrong.
pub fn decode_request(bytes: &[u8]) -> Result<Request, CodecError> {
    decode(bytes, MAX_REQUEST_BYTES)
}

/// Decodes one response: at most [`MAX_RESPONSE_BYTES`], one CBOR value, nothing after it.
///
/// # Errors
/// [`CodecError`] naming what is wrong.
pub fn decode_response(bytes: &[u8]) -> Result<Response, CodecError> {
    decode(bytes, MAX_RESPONSE_BYTES)
}

/// Encodes a request or a response.
///
/// # Errors
/// Only when memory runs out.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| CodecError::Malformed(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], max: u64) -> Result<T, CodecError> {
    let got = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if got > max {
        return Err(CodecError::TooLarge { got, max });
    }
    let mut deserializer = cbor4ii::serde::Deserializer::new(SliceReader::new(bytes));
    let value = T::deserialize(&mut deserializer).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let mut rest = deserializer.into_inner();
    let trailing = match rest.fill(1) {
        Ok(reference) => reference.as_ref().len(),
        Err(never) => match never {},
    };
    if trailing > 0 {
        return Err(CodecError::Trailing(trailing));
    }
    Ok(value)
}

/// Reads a whole stream, refusing more than `max` bytes.
async fn read_capped<T: AsyncRead + Unpin + Send>(io: &mut T, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io.take(max.saturating_add(1)).read_to_end(&mut bytes).await?;
    Ok(bytes)
}

fn invalid(e: CodecError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The swarm's codec for `/kith/federation/1`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Codec;

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_request(&read_capped(io, MAX_REQUEST_BYTES).await?).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_response(&read_capped(io, MAX_RESPONSE_BYTES).await?).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &Self::Protocol, io: &mut T, request: Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&encode(&request).map_err(invalid)?).await
    }

    async fn write_response<T>(&mut self, _: &Self::Protocol, io: &mut T, response: Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&encode(&response).map_err(invalid)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Refusal, RefusalReason};

    #[test]
    fn one_value_round_trips_and_nothing_may_follow_it() {
        let response = Response::Refused(Refusal::new(RefusalReason::Invalid, "no"));
        let bytes = encode(&response).unwrap();
        assert_eq!(decode_response(&bytes), Ok(response));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_response(&longer), Err(CodecError::Trailing(1)));
        assert!(matches!(decode_response(&bytes[..bytes.len() - 1]), Err(CodecError::Malformed(_))));
        let huge = vec![0; usize::try_from(MAX_RESPONSE_BYTES).unwrap() + 1];
        assert!(matches!(decode_response(&huge), Err(CodecError::TooLarge { .. })));
    }
}
