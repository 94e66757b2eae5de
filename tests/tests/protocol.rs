//! The automerge-repo wire protocol: messages as the JavaScript client writes them, round trips,
//! limits and garbage; document ids.

use outpost_sync::DocumentId;
use outpost_sync::protocol::{DecodeError, Message, PeerMetadata, decode, encode};
use serde_bytes::ByteBuf;

#[test]
fn messages_round_trip_through_cbor() {
    let messages = vec![
        Message::Join {
            sender_id: "client".into(),
            supported_protocol_versions: Some(vec!["1".into()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some("s1".into()),
                is_ephemeral: false,
            }),
        },
        Message::Peer {
            sender_id: "server".into(),
            target_id: "client".into(),
            selected_protocol_version: "1".into(),
            peer_metadata: None,
        },
        Message::Request {
            document_id: DocumentId::generate().to_string(),
            sender_id: "a".into(),
            target_id: "b".into(),
            data: ByteBuf::from(vec![0x42, 1, 2]),
        },
        Message::Sync {
            document_id: "d".into(),
            sender_id: "a".into(),
            target_id: "b".into(),
            data: ByteBuf::from(vec![0x42]),
        },
        Message::DocUnavailable {
            document_id: "d".into(),
            sender_id: "a".into(),
            target_id: "b".into(),
        },
        Message::Ephemeral {
            document_id: "d".into(),
            sender_id: "a".into(),
            target_id: "b".into(),
            count: 3,
            session_id: "s".into(),
            data: ByteBuf::from(vec![1]),
        },
        Message::Error {
            message: "bad".into(),
            sender_id: None,
            target_id: None,
        },
        Message::Leave {
            sender_id: "a".into(),
        },
    ];
    for message in messages {
        let bytes = encode(&message);
        assert_eq!(decode(&bytes, 1 << 20).unwrap(), message);
    }
}

#[test]
fn the_javascript_shapes_decode() {
    // What the JS client sends: `type` first, camelCase keys, `supportedProtocolVersions` a list,
    // `peerMetadata` a map, `data` a byte string.
    use ciborium::Value;
    let join = Value::Map(vec![
        ("type".into(), "join".into()),
        ("senderId".into(), "peer-xyz".into()),
        (
            "peerMetadata".into(),
            Value::Map(vec![
                ("storageId".into(), "st-1".into()),
                ("isEphemeral".into(), false.into()),
            ]),
        ),
        (
            "supportedProtocolVersions".into(),
            Value::Array(vec!["1".into()]),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&join, &mut bytes).unwrap();
    match decode(&bytes, 1024).unwrap() {
        Message::Join {
            sender_id,
            supported_protocol_versions,
            peer_metadata,
        } => {
            assert_eq!(sender_id, "peer-xyz");
            assert_eq!(supported_protocol_versions, Some(vec!["1".to_string()]));
            assert_eq!(peer_metadata.unwrap().storage_id.as_deref(), Some("st-1"));
        }
        other => panic!("{other:?}"),
    }
    let sync = ciborium::Value::Map(vec![
        ("type".into(), "sync".into()),
        ("documentId".into(), "doc".into()),
        ("senderId".into(), "a".into()),
        ("targetId".into(), "b".into()),
        ("data".into(), ciborium::Value::Bytes(vec![0x42, 7])),
    ]);
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&sync, &mut bytes).unwrap();
    assert!(
        matches!(decode(&bytes, 1024).unwrap(), Message::Sync { data, .. } if data.as_slice() == [0x42, 7])
    );
}

#[test]
fn garbage_and_oversized_frames_are_refused() {
    assert!(matches!(
        decode(b"\xff\x00garbage", 1024),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(decode(&[], 1024), Err(DecodeError::Malformed(_))));
    let unknown = encode(&Message::Leave {
        sender_id: "a".into(),
    });
    let mut tampered = unknown.clone();
    if let Some(pos) = tampered.windows(5).position(|w| w == b"leave") {
        tampered[pos..pos + 5].copy_from_slice(b"xxxxx");
    }
    assert!(
        matches!(decode(&tampered, 1024), Err(DecodeError::Malformed(_))),
        "an unknown type"
    );
    assert!(matches!(
        decode(&vec![0u8; 2048], 1024),
        Err(DecodeError::TooLarge {
            size: 2048,
            limit: 1024
        })
    ));
}

#[test]
fn document_ids_are_base58check_of_16_bytes() {
    let id = DocumentId::generate();
    assert_eq!(DocumentId::parse(id.as_str()), Some(id.clone()));
    assert_eq!(DocumentId::parse(&id.url()), Some(id.clone()));
    assert_ne!(DocumentId::generate(), id);
    assert_eq!(DocumentId::parse("not-base58-0OIl"), None);
    let mut corrupted = id.as_str().to_string();
    let last = corrupted.pop().unwrap();
    corrupted.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(
        DocumentId::parse(&corrupted),
        None,
        "the checksum catches a typo"
    );
    assert_eq!(
        DocumentId::parse(&bs58_of(&[1, 2, 3])),
        None,
        "not 16 bytes"
    );
}

/// The same encoding as a document id, for a payload of the wrong length.
fn bs58_of(bytes: &[u8]) -> String {
    bs58::encode(bytes).with_check().into_string()
}
