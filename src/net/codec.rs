//! `tokio_util::codec` adapters for both ends of the connection.
//!
//! Decoding yields `Result<Message, ProtocolError>` items: an `Err` *item* is a
//! frame whose boundary is known but whose content is wrong (answer with a `Nack`
//! and go on); an `Err` from `decode` itself means the stream cannot be trusted any
//! more (oversized length, truncated at EOF, I/O) and the connection must close.

use super::error::ProtocolError;
use super::frame::{Request, Response, HEADER_LEN, MAX_FRAME, MAX_PAYLOAD};
use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Cuts one `(type, payload)` frame off `src`, checking the length before buffering.
pub fn split_frame(src: &mut BytesMut) -> Result<Option<(u8, Bytes)>, ProtocolError> {
    if src.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::FrameTooLong { len: len.saturating_add(HEADER_LEN), max: MAX_FRAME });
    }
    if src.len() < HEADER_LEN + len {
        src.reserve(HEADER_LEN + len - src.len());
        return Ok(None);
    }
    let kind = src[0];
    src.advance(HEADER_LEN);
    Ok(Some((kind, src.split_to(len).freeze())))
}

/// `decode_eof` of both codecs: bytes of an incomplete frame left at the end of
/// the stream are an error, not silence.
fn at_eof<T>(decoded: Option<T>, src: &mut BytesMut) -> Result<Option<T>, ProtocolError> {
    if decoded.is_some() || src.is_empty() {
        return Ok(decoded);
    }
    let buffered = src.len();
    src.clear();
    Err(ProtocolError::TruncatedStream { buffered })
}

/// Both codecs frame alike and differ only in what they read and write.
macro_rules! codec {
    ($(#[$doc:meta])* $name:ident reads $item:ident, writes $out:ty) => {
        $(#[$doc])*
        #[derive(Debug, Default, Clone, Copy)]
        pub struct $name;

        impl Decoder for $name {
            type Item = Result<$item, ProtocolError>;
            type Error = ProtocolError;

            fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, ProtocolError> {
                Ok(split_frame(src)?.map(|(kind, payload)| $item::decode(kind, payload)))
            }

            fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, ProtocolError> {
                let decoded = self.decode(src)?;
                at_eof(decoded, src)
            }
        }

        impl Encoder<$out> for $name {
            type Error = ProtocolError;
            fn encode(&mut self, item: $out, dst: &mut BytesMut) -> Result<(), ProtocolError> {
                item.encode(dst)
            }
        }
    };
}

codec!(
    /// The server's side: reads [`Request`]s, writes [`Response`]s.
    ServerCodec reads Request, writes Response
);
codec!(
    /// The agency's side: reads [`Response`]s, writes [`Request`]s.
    ClientCodec reads Response, writes &Request
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::{Bet, Date};
    use crate::net::frame::{kind, winners_pages, NackCode};
    use bytes::BufMut;
    use proptest::prelude::*;

    fn bet(first: &str, last: &str, doc: &str) -> Bet {
        Bet {
            first_name: first.into(),
            last_name: last.into(),
            document: doc.into(),
            birthdate: Date::new(1999, 2, 28).unwrap(),
            number: 7574,
        }
    }

    fn roundtrip_request(req: Request) {
        let mut buf = BytesMut::new();
        req.encode(&mut buf).unwrap();
        assert!(buf.len() <= MAX_FRAME);
        let got = ServerCodec.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(got, req);
        assert!(buf.is_empty());
    }

    fn roundtrip_response(resp: Response) {
        let mut buf = BytesMut::new();
        ServerCodec.encode(resp.clone(), &mut buf).unwrap();
        let got = ClientCodec.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(got, resp);
    }

    #[test]
    fn every_request_round_trips() {
        roundtrip_request(Request::Echo(Bytes::from_static(b"hello\n")));
        roundtrip_request(Request::Bet { agency: 1, bet: bet("Ana", "Pérez", "00000042").into() });
        roundtrip_request(Request::Batch {
            agency: 3,
            first_index: 1 << 40,
            bets: vec![bet("O'Brien, Jr", "Núñez \"el\" | ;", "1"), bet("Zoë", "Ñandú", "99999999")].into(),
        });
        roundtrip_request(Request::Batch { agency: 3, first_index: 0, bets: vec![].into() });
        roundtrip_request(Request::Done { agency: 2, total: 123 });
        roundtrip_request(Request::WinnersRequest { agency: 5 });
        roundtrip_request(Request::Resume { agency: 7 });
        roundtrip_request(Request::AuthHello { agency: 4 });
        roundtrip_request(Request::AuthProof { mac: [0xa5; 32] });
    }

    #[test]
    fn every_response_round_trips() {
        roundtrip_response(Response::Echo(Bytes::from_static(b"\x00\xff")));
        roundtrip_response(Response::Ack { index: 7, count: 100 });
        roundtrip_response(Response::Nack { code: NackCode::OutOfOrder, index: 3, message: "gap | á".into() });
        roundtrip_response(Response::Winners {
            agency: 1,
            more: false,
            documents: vec!["00000042".into(), "1".into()],
        });
        roundtrip_response(Response::Progress { agency: 2, stored: 1 << 33, done: true });
        roundtrip_response(Response::Challenge { nonce: [7; 32] });
    }

    #[test]
    fn echo_is_answered_byte_for_byte() {
        let mut frame = BytesMut::new();
        Request::Echo(Bytes::from_static(b"ping")).encode(&mut frame).unwrap();
        let original = frame.clone();
        let Request::Echo(payload) = ServerCodec.decode(&mut frame).unwrap().unwrap().unwrap() else { panic!() };
        let mut answer = BytesMut::new();
        ServerCodec.encode(Response::Echo(payload), &mut answer).unwrap();
        assert_eq!(answer, original);
    }

    #[test]
    fn oversized_length_is_rejected_before_buffering() {
        let mut buf = BytesMut::new();
        buf.put_u8(kind::BATCH);
        buf.put_u32(9_000);
        let cap = buf.capacity();
        match ServerCodec.decode(&mut buf) {
            Err(ProtocolError::FrameTooLong { len: 9_005, max: 8192 }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.capacity(), cap);
        let mut huge = BytesMut::from(&[kind::ECHO, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(ServerCodec.decode(&mut huge), Err(ProtocolError::FrameTooLong { .. })));
    }

    #[test]
    fn largest_frame_is_accepted_and_one_more_byte_is_not() {
        let mut ok = BytesMut::new();
        Request::Echo(Bytes::from(vec![7u8; MAX_PAYLOAD])).encode(&mut ok).unwrap();
        assert_eq!(ok.len(), MAX_FRAME);
        assert!(ServerCodec.decode(&mut ok).unwrap().unwrap().is_ok());
        let mut too_big = BytesMut::new();
        assert!(Request::Echo(Bytes::from(vec![7u8; MAX_PAYLOAD + 1])).encode(&mut too_big).is_err());
    }

    #[test]
    fn partial_frames_wait_and_truncated_streams_fail() {
        let mut full = BytesMut::new();
        Request::Done { agency: 1, total: 5 }.encode(&mut full).unwrap();
        let mut part = BytesMut::from(&full[..full.len() - 1]);
        assert!(ServerCodec.decode(&mut part).unwrap().is_none());
        assert!(matches!(ServerCodec.decode_eof(&mut part), Err(ProtocolError::TruncatedStream { .. })));
        let mut header_only = BytesMut::from(&full[..3]);
        assert!(ServerCodec.decode(&mut header_only).unwrap().is_none());
    }

    fn frame(kind: u8, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(kind);
        b.put_u32(payload.len() as u32);
        b.put_slice(payload);
        b
    }

    #[test]
    fn readable_frames_with_bad_content_are_item_errors() {
        // Unknown type: the boundary is known, the stream goes on.
        let mut buf = frame(0x7f, b"abc");
        buf.extend_from_slice(&frame(kind::WINNERS_REQUEST, &1u32.to_be_bytes()));
        assert!(matches!(ServerCodec.decode(&mut buf).unwrap().unwrap(), Err(ProtocolError::UnknownType(0x7f))));
        assert_eq!(ServerCodec.decode(&mut buf).unwrap().unwrap().unwrap(), Request::WinnersRequest { agency: 1 });

        // Truncated payload: a Done with 2 bytes.
        let mut buf = frame(kind::DONE, &[0, 1]);
        assert!(matches!(ServerCodec.decode(&mut buf).unwrap().unwrap(), Err(ProtocolError::Truncated { .. })));

        // Trailing bytes.
        let mut buf = frame(kind::WINNERS_REQUEST, &[0, 0, 0, 1, 9]);
        assert!(matches!(ServerCodec.decode(&mut buf).unwrap().unwrap(), Err(ProtocolError::TrailingBytes(1))));
    }

    fn bet_payload(name: &[u8], doc: &[u8], y: u16, m: u8, d: u8, number: u16) -> Vec<u8> {
        let mut p = BytesMut::new();
        p.put_u32(1);
        for s in [name, b"X".as_slice(), doc] {
            p.put_u16(s.len() as u16);
            p.put_slice(s);
        }
        p.put_u16(y);
        p.put_u8(m);
        p.put_u8(d);
        p.put_u16(number);
        p.to_vec()
    }

    #[test]
    fn bad_utf8_dates_numbers_and_documents_are_typed() {
        let mut buf = frame(kind::BET, &bet_payload(b"\xff\xfe", b"1", 1990, 1, 1, 1));
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::BadUtf8 { field: "first_name" })
        ));
        let mut buf = frame(kind::BET, &bet_payload(b"A", b"1", 2023, 2, 29, 1));
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::InvalidField { field: "birthdate", .. })
        ));
        let mut buf = frame(kind::BET, &bet_payload(b"A", b"1", 1990, 1, 1, 10_000));
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::InvalidField { field: "bet", .. })
        ));
        let mut buf = frame(kind::BET, &bet_payload(b"A", b"12x", 1990, 1, 1, 1));
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::InvalidField { field: "bet", .. })
        ));
        let mut buf = frame(kind::BET, &bet_payload(b"A", b"1", 1990, 1, 1, 1));
        buf[5..9].copy_from_slice(&0u32.to_be_bytes());
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::InvalidField { field: "agency", .. })
        ));
    }

    #[test]
    fn handshake_frames_have_exact_lengths() {
        // AuthHello: exactly one agency; AuthProof and Challenge: exactly 32 bytes.
        let mut buf = frame(kind::AUTH_HELLO, &[0, 0, 1]);
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::Truncated { field: "agency", .. })
        ));
        let mut buf = frame(kind::AUTH_HELLO, &0u32.to_be_bytes());
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::InvalidField { field: "agency", .. })
        ));
        let mut buf = frame(kind::AUTH_PROOF, &[1; 31]);
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::Truncated { field: "mac", needed: 32, left: 31 })
        ));
        let mut buf = frame(kind::AUTH_PROOF, &[1; 33]);
        assert!(matches!(ServerCodec.decode(&mut buf).unwrap().unwrap(), Err(ProtocolError::TrailingBytes(1))));
        let mut buf = frame(kind::CHALLENGE, &[1; 16]);
        assert!(matches!(
            ClientCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::Truncated { field: "nonce", .. })
        ));
        let mut buf = frame(kind::CHALLENGE, &[1; 40]);
        assert!(matches!(ClientCodec.decode(&mut buf).unwrap().unwrap(), Err(ProtocolError::TrailingBytes(8))));
        // A Challenge is not a request, nor a proof a response.
        let mut buf = frame(kind::CHALLENGE, &[1; 32]);
        assert!(matches!(ServerCodec.decode(&mut buf).unwrap().unwrap(), Err(ProtocolError::UnknownType(0x85))));
        let mut buf = frame(kind::AUTH_PROOF, &[1; 32]);
        assert!(matches!(ClientCodec.decode(&mut buf).unwrap().unwrap(), Err(ProtocolError::UnknownType(0x08))));
    }

    #[test]
    fn batch_count_cannot_force_a_large_allocation() {
        let mut p = BytesMut::new();
        p.put_u32(1);
        p.put_u64(0);
        p.put_u16(u16::MAX);
        let mut buf = frame(kind::BATCH, &p);
        assert!(matches!(
            ServerCodec.decode(&mut buf).unwrap().unwrap(),
            Err(ProtocolError::InvalidBatch { count: 65535, position: 0, .. })
        ));
    }

    #[test]
    fn winners_are_paged_to_fit_frames() {
        let docs: Vec<String> = (0..3000).map(|i| format!("{i:08}")).collect();
        let pages = winners_pages(4, &docs);
        assert!(pages.len() > 1);
        let mut all = Vec::new();
        for (i, page) in pages.iter().enumerate() {
            let mut buf = BytesMut::new();
            page.encode(&mut buf).unwrap();
            assert!(buf.len() <= MAX_FRAME);
            let Response::Winners { more, documents, .. } = page else { panic!() };
            assert_eq!(*more, i + 1 < pages.len());
            all.extend(documents.iter().cloned());
        }
        assert_eq!(all, docs);
        assert_eq!(winners_pages(1, &[]), vec![Response::Winners { agency: 1, more: false, documents: vec![] }]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn arbitrary_bytes_never_panic_either_decoder(data in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            for chunk in [1usize, 7, 4096] {
                let mut buf = BytesMut::new();
                let mut client = BytesMut::new();
                for piece in data.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    client.extend_from_slice(piece);
                    loop {
                        match ServerCodec.decode(&mut buf) {
                            Ok(Some(_)) => continue,
                            Ok(None) => break,
                            Err(_) => { buf.clear(); break; }
                        }
                    }
                    prop_assert!(buf.capacity() <= 4 * MAX_FRAME + data.len());
                    loop {
                        match ClientCodec.decode(&mut client) {
                            Ok(Some(_)) => continue,
                            Ok(None) => break,
                            Err(_) => { client.clear(); break; }
                        }
                    }
                }
                let _ = ServerCodec.decode_eof(&mut buf);
            }
        }

        #[test]
        fn typed_frames_with_random_payloads_never_panic(
            kind in prop_oneof![Just(1u8), Just(2), Just(3), Just(4), Just(5), Just(6), Just(7), Just(8),
                Just(0x81), Just(0x82), Just(0x83), Just(0x84), Just(0x85), any::<u8>()],
                                                       payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = frame(kind, &payload);
            let _ = ServerCodec.decode(&mut buf);
            let mut buf = frame(kind, &payload);
            let _ = ClientCodec.decode(&mut buf);
        }

        #[test]
        fn names_round_trip_exactly(
            first in "[^\\p{Cc}]{1,40}",
            last in "[a-zA-Z,;|\"' áéíóúñÑ]{0,40}",
            doc in "[0-9]{1,16}",
        ) {
            prop_assume!(!first.trim().is_empty() && !last.trim().is_empty());
            let req = Request::Bet { agency: 9, bet: bet(&first, &last, &doc).into() };
            let mut buf = BytesMut::new();
            req.encode(&mut buf).unwrap();
            prop_assert_eq!(ServerCodec.decode(&mut buf).unwrap().unwrap().unwrap(), req);
        }
    }
}
