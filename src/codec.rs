//! Length-prefixed postcard framing.
//!
//! A frame is a `u32` little-endian body length followed by the body. The length is checked
//! against the maximum **before** anything is allocated or awaited, so a hostile header costs
//! nothing; a body is decoded with [`decode_envelope`], which rejects trailing bytes.
//!
//! Frames are encoded into a caller-owned buffer ([`encode_frame`]) so that many frames can be
//! written with one `write(2)`: batching is what makes small messages cheap on a pipe.
//!
//! # Caveats
//! - A decode error means the stream is corrupt: there is no resynchronisation. The master ends a
//!   worker whose stream fails to decode.
//! - Zero-length bodies are framed like any other and fail at [`decode_envelope`].

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::FrameError;
use crate::protocol::Envelope;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default largest frame body accepted or sent: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Appends one frame holding `envelope` to `buf`.
///
/// # Errors
/// [`FrameError::TooLarge`] when the body exceeds `max_frame_bytes`; `buf` is then left as it was.
/// [`FrameError::Encode`] when serialisation fails (it does not for [`Envelope`]).
pub fn encode_frame(
    buf: &mut Vec<u8>,
    envelope: &Envelope<'_>,
    max_frame_bytes: usize,
) -> Result<(), FrameError> {
    framed(buf, max_frame_bytes, |buf| {
        postcard::to_io(envelope, buf)
            .map(drop)
            .map_err(|e| FrameError::Encode(e.to_string()))
    })
}

/// Bytes a frame of [`encode_frame_value`] takes beyond its value's encoded size, at most: the
/// length prefix and the envelope's other fields. A buffer with this much room over the value's
/// size takes the frame without growing.
pub(crate) const VALUE_FRAME_OVERHEAD: usize = HEADER_LEN + 32;

/// The size of `value` postcard-encoded, measured without encoding it.
///
/// # Errors
/// [`FrameError::Encode`] when the value cannot be serialised by postcard.
pub(crate) fn value_size<T: Serialize + ?Sized>(value: &T) -> Result<usize, FrameError> {
    postcard::experimental::serialized_size(value).map_err(|e| FrameError::Encode(e.to_string()))
}

/// Appends one frame holding `envelope` with `value`, postcard-encoded, as its payload: the
/// value is encoded straight into `buf`, with no buffer between (a 64 KiB message is copied
/// once, not twice).
///
/// `envelope` is given with an empty payload, and its payload must be its **last** field (true
/// of `Request`, `Reply` and `Tell`): the empty payload's length (`0`) is replaced by `size`,
/// the value's encoded length measured by [`value_size`], and the value follows.
///
/// # Errors
/// As [`encode_frame`]; the body's size is checked before anything is written, and `buf` is
/// left as it was on any error.
pub(crate) fn encode_frame_value<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    envelope: &Envelope<'_>,
    value: &T,
    size: usize,
    max_frame_bytes: usize,
) -> Result<(), FrameError> {
    if size > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len: size,
            max: max_frame_bytes,
        });
    }
    buf.reserve(VALUE_FRAME_OVERHEAD + size);
    framed(buf, max_frame_bytes, |buf| {
        encode_tail(buf, envelope, value, size)
    })
}

/// Appends a length prefix and the body `body` writes, then the prefix's value; on any error, or
/// a body over `max_frame_bytes`, `buf` is left as it was.
fn framed(
    buf: &mut Vec<u8>,
    max_frame_bytes: usize,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = body(&mut *buf) {
        buf.truncate(start);
        return Err(e);
    }
    let len = buf.len() - start - HEADER_LEN;
    if len > max_frame_bytes {
        buf.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    buf[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// `envelope` then `value` as its payload, at the end of `buf` (see [`encode_frame_value`]).
fn encode_tail<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    envelope: &Envelope<'_>,
    value: &T,
    size: usize,
) -> Result<(), FrameError> {
    postcard::to_io(envelope, &mut *buf).map_err(|e| FrameError::Encode(e.to_string()))?;
    // The empty payload's length, replaced by the value's.
    if buf.pop() != Some(0) {
        return Err(FrameError::Encode(format!(
            "{} has no empty payload last",
            envelope.kind()
        )));
    }
    push_varint(buf, size);
    let before = buf.len();
    postcard::to_io(value, &mut *buf).map_err(|e| FrameError::Encode(e.to_string()))?;
    if buf.len() - before != size {
        return Err(FrameError::Encode(
            "the value's encoding changed its length between two passes".into(),
        ));
    }
    Ok(())
}

/// Appends `n` as postcard writes a length: LEB128, 7 bits a byte.
fn push_varint(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Serialises a user value with postcard into `scratch` (cleared first).
///
/// # Errors
/// [`FrameError::Encode`] when the value cannot be serialised by postcard (e.g. a map with
/// non-string keys is fine, but `serde(flatten)` or an unknown-length sequence is not).
pub fn encode_value<T: Serialize + ?Sized>(
    scratch: &mut Vec<u8>,
    value: &T,
) -> Result<(), FrameError> {
    scratch.clear();
    postcard::to_io(value, &mut *scratch).map_err(|e| FrameError::Encode(e.to_string()))?;
    Ok(())
}

/// Decodes one frame body as an [`Envelope`] borrowing from it.
///
/// # Errors
/// [`FrameError::Decode`] for a body that is not an envelope, [`FrameError::TrailingBytes`] when
/// bytes remain after it.
pub fn decode_envelope(body: &[u8]) -> Result<Envelope<'_>, FrameError> {
    decode_value(body)
}

/// Decodes a whole postcard value from `bytes`, rejecting trailing bytes.
///
/// # Errors
/// As [`decode_envelope`].
pub fn decode_value<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, FrameError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| FrameError::Decode(e.to_string()))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(FrameError::TrailingBytes { extra: rest.len() })
    }
}

/// Splits frames off a read buffer, enforcing the maximum body length before allocating.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// Takes the next complete frame body off the front of `buf`, if there is one.
    ///
    /// When a frame is incomplete, reserves room for the rest of it (never more than the
    /// maximum) and returns `Ok(None)`.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] as soon as a header announces more than the maximum.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(len) = self.next_len(buf)? else {
            return Ok(None);
        };
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(len)))
    }

    /// The body length of the next frame when the whole frame is in `buf` (its body is then
    /// `buf[HEADER_LEN..HEADER_LEN + len]`), for a reader that decodes in place; otherwise
    /// reserves room for the rest of it (never more than the maximum) and returns `Ok(None)`.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] as soon as a header announces more than the maximum.
    pub fn next_len(&self, buf: &mut BytesMut) -> Result<Option<usize>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        let total = HEADER_LEN + len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        Ok(Some(len))
    }

    /// Checks what is left when the stream ends: anything but nothing is a truncated frame.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when `buf` holds part of a frame.
    pub fn decode_eof(&self, buf: &BytesMut) -> Result<(), FrameError> {
        if buf.is_empty() {
            return Ok(());
        }
        let expected = if buf.len() >= HEADER_LEN {
            u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + HEADER_LEN
        } else {
            HEADER_LEN
        };
        Err(FrameError::Truncated {
            expected,
            got: buf.len(),
        })
    }
}

impl tokio_util::codec::Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        FrameDecoder::decode(self, src)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match FrameDecoder::decode(self, buf)? {
            Some(frame) => Ok(Some(frame)),
            None => FrameDecoder::decode_eof(self, buf).map(|()| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(env: &Envelope<'_>) -> BytesMut {
        let mut v = Vec::new();
        encode_frame(&mut v, env, DEFAULT_MAX_FRAME_BYTES).unwrap();
        BytesMut::from(&v[..])
    }

    #[test]
    fn a_value_encoded_into_the_frame_is_the_frame_of_its_encoding() {
        for len in [0usize, 1, 126, 127, 128, 16_383, 16_384, 64 * 1024] {
            let value: (u8, Vec<u8>) = (7, vec![0xa5; len]);
            let mut scratch = Vec::new();
            encode_value(&mut scratch, &value).unwrap();
            for (empty, full) in [
                (
                    Envelope::Tell { payload: &[] },
                    Envelope::Tell { payload: &scratch },
                ),
                (
                    Envelope::Request {
                        id: 300,
                        payload: &[],
                    },
                    Envelope::Request {
                        id: 300,
                        payload: &scratch,
                    },
                ),
                (
                    Envelope::Reply {
                        id: 1,
                        payload: &[],
                    },
                    Envelope::Reply {
                        id: 1,
                        payload: &scratch,
                    },
                ),
            ] {
                let (mut direct, mut twice) = (vec![1, 2], vec![1, 2]);
                let size = value_size(&value).unwrap();
                encode_frame_value(&mut direct, &empty, &value, size, DEFAULT_MAX_FRAME_BYTES)
                    .unwrap();
                encode_frame(&mut twice, &full, DEFAULT_MAX_FRAME_BYTES).unwrap();
                assert_eq!(direct, twice, "{len} bytes in a {}", full.kind());
            }
        }
        let mut buf = vec![9];
        let too_big = vec![0u8; 2048];
        let size = value_size(&too_big).unwrap();
        let err = encode_frame_value(
            &mut buf,
            &Envelope::Tell { payload: &[] },
            &too_big,
            size,
            1024,
        );
        assert!(matches!(err, Err(FrameError::TooLarge { .. })), "{err:?}");
        let err = encode_frame_value(&mut buf, &Envelope::Ping { seq: 5 }, &1u8, 1, 1024);
        assert!(matches!(err, Err(FrameError::Encode(_))), "{err:?}");
        assert_eq!(buf, [9], "left as it was");
    }

    #[test]
    fn round_trip_every_variant() {
        let envs = [
            Envelope::Hello {
                protocol_version: 1,
                pid: 42,
            },
            Envelope::Ready,
            Envelope::Request {
                id: u64::MAX,
                payload: b"abc",
            },
            Envelope::Reply {
                id: 7,
                payload: &[],
            },
            Envelope::Failed { id: 3, error: "no" },
            Envelope::Tell { payload: b"x" },
            Envelope::Event { payload: b"y" },
            Envelope::Shutdown,
            Envelope::Ping { seq: 9 },
            Envelope::Pong { seq: u64::MAX },
        ];
        let mut stream = BytesMut::new();
        for env in &envs {
            stream.extend_from_slice(&frame(env));
        }
        let dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        for env in &envs {
            let body = dec.decode(&mut stream).unwrap().unwrap();
            assert_eq!(&decode_envelope(&body).unwrap(), env);
        }
        assert!(stream.is_empty());
        dec.decode_eof(&stream).unwrap();
    }

    #[test]
    fn oversized_length_is_rejected_before_the_body_arrives() {
        let dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let err = dec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, max: 1024 } if len == u32::MAX as usize));
        assert!(
            buf.capacity() < 64 * 1024,
            "nothing was reserved for the body"
        );
    }

    #[test]
    fn partial_frame_waits_then_eof_is_truncated() {
        let dec = FrameDecoder::new(1024);
        let full = frame(&Envelope::Tell { payload: &[9; 100] });
        let mut buf = BytesMut::from(&full[..10]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        let err = dec.decode_eof(&buf).unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { expected, got: 10 } if expected == full.len())
        );
        let mut header_only = BytesMut::from(&full[..2]);
        assert!(dec.decode(&mut header_only).unwrap().is_none());
        assert!(dec.decode_eof(&header_only).is_err());
    }

    #[test]
    fn encode_refuses_bodies_over_the_maximum_and_leaves_the_buffer() {
        let mut buf = vec![1, 2, 3];
        let err = encode_frame(&mut buf, &Envelope::Tell { payload: &[0; 200] }, 100).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 100, .. }));
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        // Unknown variant tag, truncated body, over-long varint, non-UTF-8 string, trailing byte,
        // and an allocation bomb: a length of 2^60 for a byte field in a 12-byte frame.
        let cases: [&[u8]; 7] = [
            &[200],
            &[2, 1],
            &[
                2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
            &[4, 1, 2, 0xff, 0xfe],
            &[1, 0],
            &[2, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10],
            &[],
        ];
        for body in cases {
            let err = decode_envelope(body).unwrap_err();
            assert!(
                matches!(
                    err,
                    FrameError::Decode(_) | FrameError::TrailingBytes { .. }
                ),
                "{body:?} gave {err:?}"
            );
        }
        assert!(matches!(
            decode_envelope(&[1, 0]).unwrap_err(),
            FrameError::TrailingBytes { extra: 1 }
        ));
    }
}
