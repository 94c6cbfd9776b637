use super::*;

fn header() -> StreamHeader {
    StreamHeader {
        service: "reviews.default.svc.cluster.local".to_owned(),
        port: 9080,
        subset: "v1".to_owned(),
        original_sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local".to_owned(),
        source_network: "network-east".to_owned(),
    }
}

#[test]
fn a_header_round_trips() {
    let bytes = header().encode().unwrap();
    assert_eq!(&bytes[..2], &[MAGIC, VERSION]);
    assert_eq!(
        StreamHeader::decode(&bytes).unwrap(),
        Some((header(), bytes.len()))
    );
    let empty = StreamHeader {
        subset: String::new(),
        original_sni: String::new(),
        source_network: String::new(),
        ..header()
    };
    let bytes = empty.encode().unwrap();
    assert_eq!(
        StreamHeader::decode(&bytes).unwrap(),
        Some((empty, bytes.len()))
    );
}

#[test]
fn decode_leaves_the_bytes_after_the_header_alone() {
    let mut bytes = header().encode().unwrap();
    let length = bytes.len();
    bytes.extend_from_slice(b"\x16\x03\x01 the ClientHello");
    assert_eq!(
        StreamHeader::decode(&bytes).unwrap(),
        Some((header(), length))
    );
}

#[test]
fn every_truncation_asks_for_more_and_never_misreads() {
    let bytes = header().encode().unwrap();
    for end in 0..bytes.len() {
        assert!(
            StreamHeader::decode(&bytes[..end]).unwrap().is_none(),
            "{end} bytes"
        );
    }
    let status = StreamStatus::refused(RefusalReason::NotExported, "no").encode();
    for end in 0..status.len() {
        assert!(StreamStatus::decode(&status[..end]).unwrap().is_none());
    }
}

#[tokio::test]
async fn reading_a_truncated_frame_from_a_stream_says_so() {
    let bytes = header().encode().unwrap();
    for end in [0, 1, 3, 4, bytes.len() - 1] {
        let mut reader = &bytes[..end];
        let error = StreamHeader::read(&mut reader).await.unwrap_err();
        assert!(
            matches!(error, FrameError::Truncated("header")),
            "{end}: {error}"
        );
    }
    let mut reader = &bytes[..];
    assert_eq!(StreamHeader::read(&mut reader).await.unwrap(), header());
    assert!(reader.is_empty(), "exactly the header's bytes are taken");
}

#[test]
fn an_unknown_version_or_magic_is_refused_at_once() {
    let mut bytes = header().encode().unwrap();
    bytes[1] = 2;
    assert!(matches!(
        StreamHeader::decode(&bytes[..2]),
        Err(FrameError::UnsupportedVersion(2))
    ));
    let error = StreamHeader::decode(&bytes).unwrap_err();
    assert_eq!(
        error.to_string(),
        "trunk frame version 2 is not supported (this side speaks version 1)"
    );
    // TLS (a sidecar dialling the trunk port by mistake) is not a trunk frame.
    assert!(matches!(
        StreamHeader::decode(b"\x16\x03\x01"),
        Err(FrameError::BadMagic(0x16))
    ));
}

#[test]
fn fields_out_of_bounds_are_never_written_nor_read() {
    let cases = [
        StreamHeader {
            service: String::new(),
            ..header()
        },
        StreamHeader {
            service: "a".repeat(254),
            ..header()
        },
        StreamHeader {
            service: "reviews default".to_owned(),
            ..header()
        },
        StreamHeader {
            port: 0,
            ..header()
        },
        StreamHeader {
            subset: "v".repeat(64),
            ..header()
        },
        StreamHeader {
            subset: "v1\n".to_owned(),
            ..header()
        },
        StreamHeader {
            original_sni: "é".to_owned(),
            ..header()
        },
        StreamHeader {
            source_network: "n".repeat(64),
            ..header()
        },
    ];
    for case in cases {
        assert!(case.encode().is_err(), "{case:?}");
    }
    // The same, written by a peer that does not check: a service with a space in it.
    let mut bytes = header().encode().unwrap();
    bytes[5 + 7] = b' ';
    let error = StreamHeader::decode(&bytes).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the service \"reviews default.svc"),
        "{error}"
    );
}

#[test]
fn the_body_must_be_exactly_its_fields() {
    let bytes = header().encode().unwrap();
    // One byte more in the body than the fields use.
    let mut longer = bytes.clone();
    longer.push(0);
    let length = u16::from_be_bytes([bytes[2], bytes[3]]) + 1;
    longer[2..4].copy_from_slice(&length.to_be_bytes());
    assert!(matches!(
        StreamHeader::decode(&longer),
        Err(FrameError::TrailingBytes(1))
    ));
    // One byte less: the last field runs past the body.
    let mut shorter = bytes.clone();
    shorter.pop();
    let length = u16::from_be_bytes([bytes[2], bytes[3]]) - 1;
    shorter[2..4].copy_from_slice(&length.to_be_bytes());
    assert!(matches!(
        StreamHeader::decode(&shorter),
        Err(FrameError::Truncated("source network"))
    ));
    // A length prefix past the limit is refused before waiting for the body.
    let huge = [MAGIC, VERSION, 0xff, 0xff];
    assert!(matches!(
        StreamHeader::decode(&huge),
        Err(FrameError::TooLong { length: 65535, .. })
    ));
}

#[test]
fn statuses_round_trip() {
    for status in [
        StreamStatus::Ok,
        StreamStatus::refused(RefusalReason::NotExported, "reviews:9080 is not exported"),
        StreamStatus::refused(RefusalReason::NoHealthyEndpoint, ""),
        StreamStatus::refused(RefusalReason::UpstreamConnectFailure, "refused"),
        StreamStatus::refused(RefusalReason::MalformedHeader, "bad"),
        StreamStatus::refused(RefusalReason::Other(200), "from a newer peer"),
    ] {
        let bytes = status.encode();
        assert_eq!(
            StreamStatus::decode(&bytes).unwrap(),
            Some((status, bytes.len()))
        );
    }
}

#[test]
fn a_long_refusal_text_is_cut_at_a_character_boundary() {
    let status = StreamStatus::refused(RefusalReason::NotExported, "é".repeat(MAX_STATUS_TEXT));
    let StreamStatus::Refused { text, .. } = &status else {
        panic!("refused")
    };
    assert_eq!(text.len(), MAX_STATUS_TEXT);
    let bytes = status.encode();
    assert_eq!(StreamStatus::decode(&bytes).unwrap().unwrap().0, status);
}

#[test]
fn malformed_statuses_are_errors() {
    let ok = StreamStatus::Ok.encode();
    let mut unknown = ok.clone();
    unknown[4] = 7;
    assert!(matches!(
        StreamStatus::decode(&unknown),
        Err(FrameError::UnknownStatus(7))
    ));
    let mut ok_with_reason = ok.clone();
    ok_with_reason[5] = 1;
    assert!(StreamStatus::decode(&ok_with_reason).is_err());
    let mut bad_text = StreamStatus::refused(RefusalReason::NotExported, "ab").encode();
    let last = bad_text.len() - 1;
    bad_text[last] = 0xff;
    assert!(matches!(
        StreamStatus::decode(&bad_text),
        Err(FrameError::InvalidField {
            field: "status text",
            ..
        })
    ));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x0074_7275_6e6b);
    let valid = header().encode().unwrap();
    for round in 0..20_000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            // Mutations of a valid header: the interesting inputs.
            let mut bytes = valid.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
            bytes.truncate(rng.usize(..=bytes.len()));
            bytes
        } else {
            let mut bytes: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
            if bytes.len() >= 2 {
                bytes[0] = MAGIC;
                bytes[1] = VERSION;
            }
            bytes
        };
        if let Ok(Some((decoded, used))) = StreamHeader::decode(&bytes) {
            // Whatever decodes is valid and encodes back to the bytes it came from.
            assert_eq!(decoded.encode().unwrap(), bytes[..used]);
        }
        let _ = StreamStatus::decode(&bytes);
    }
}
