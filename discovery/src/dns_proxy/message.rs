//! One DNS query, decided: answered from the [`NameTable`] (A and AAAA of a known name), or
//! forwarded upstream unchanged, or dropped when it is not a DNS query at all.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::names::NameTable;

/// The TTL of the proxy's own answers (Istio's).
pub const ANSWER_TTL: u32 = 30;
/// The largest UDP answer for a query that does not say (RFC 1035).
const CLASSIC_UDP_SIZE: usize = 512;
/// The largest UDP answer the proxy sends, whatever the query's EDNS size says.
const MAX_UDP_SIZE: usize = 4096;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The proxy's own answer, encoded.
    Answer(Vec<u8>),
    /// Not a name the proxy knows (or not a question it answers): ask upstream.
    Forward,
    /// Not a DNS query: no answer.
    Drop,
}

/// How the query came: over UDP the answer must fit the client's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// Decides what to do with the DNS message in `bytes`.
pub(crate) fn decide(bytes: &[u8], names: &NameTable, transport: Transport) -> Decision {
    let Ok(query) = Message::from_vec(bytes) else {
        return Decision::Drop;
    };
    if query.metadata.message_type != MessageType::Query {
        return Decision::Drop;
    }
    if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
        return Decision::Forward;
    }
    let question = &query.queries[0];
    let record_type = question.query_type;
    if question.query_class != DNSClass::IN
        || !matches!(record_type, RecordType::A | RecordType::AAAA)
    {
        return Decision::Forward;
    }
    let Some(entry) = names.lookup(&question.name.to_ascii()) else {
        return Decision::Forward;
    };
    let mut response = Message::response(query.metadata.id, OpCode::Query);
    response.metadata = Metadata::response_from_request(&query.metadata);
    response.metadata.authoritative = true;
    response.metadata.recursion_available = true;
    response.metadata.response_code = ResponseCode::NoError;
    response.add_query(question.clone());
    // A known name without an address of the asked family: NOERROR with no answers (NODATA).
    let owner = question.name.clone();
    match record_type {
        RecordType::A => {
            for ip in &entry.v4 {
                response.add_answer(Record::from_rdata(
                    owner.clone(),
                    ANSWER_TTL,
                    RData::A(A(*ip)),
                ));
            }
        }
        _ => {
            for ip in &entry.v6 {
                response.add_answer(Record::from_rdata(
                    owner.clone(),
                    ANSWER_TTL,
                    RData::AAAA(AAAA(*ip)),
                ));
            }
        }
    }
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => query.edns.as_ref().map_or(CLASSIC_UDP_SIZE, |edns| {
            usize::from(edns.max_payload()).clamp(CLASSIC_UDP_SIZE, MAX_UDP_SIZE)
        }),
    };
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_SIZE as u16);
        response.set_edns(edns);
    }
    let Ok(mut encoded) = response.to_vec() else {
        return Decision::Forward;
    };
    if encoded.len() > limit {
        // Too big for the client's UDP size: the question alone, truncated, so that it asks
        // again over TCP.
        response.answers.clear();
        response.metadata.truncation = true;
        match response.to_vec() {
            Ok(truncated) => encoded = truncated,
            Err(_) => return Decision::Forward,
        }
    }
    Decision::Answer(encoded)
}

/// SERVFAIL for the query in `bytes` (no upstream answered); `None` when it is not one.
pub(crate) fn server_failure(bytes: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(bytes).ok()?;
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata = Metadata::response_from_request(&query.metadata);
    response.metadata.recursion_available = true;
    response.metadata.response_code = ResponseCode::ServFail;
    response.add_queries(query.queries);
    response.to_vec().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::IpAddr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    fn table() -> NameTable {
        let mut table = NameTable::new("default", "cluster.local");
        table.insert("api.example.com", ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        table
    }

    fn query(name: &str, record_type: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        message.to_vec().unwrap()
    }

    fn answer(decision: Decision) -> Message {
        match decision {
            Decision::Answer(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("not answered: {other:?}"),
        }
    }

    #[test]
    fn a_known_name_is_answered_with_its_addresses_and_the_same_id() {
        let bytes = query("API.example.com.", RecordType::A);
        let id = Message::from_vec(&bytes).unwrap().metadata.id;
        let response = answer(decide(&bytes, &table(), Transport::Udp));
        assert_eq!(response.metadata.id, id);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(response.answers.len(), 1);
        assert_eq!(response.answers[0].ttl, ANSWER_TTL);
        assert_eq!(
            response.answers[0].data.ip_addr(),
            Some("10.1.2.3".parse().unwrap())
        );
        // The owner name is the name as asked.
        assert_eq!(response.answers[0].name.to_ascii(), "API.example.com.");
    }

    #[test]
    fn a_known_name_without_the_family_is_nodata_not_nxdomain() {
        let response = answer(decide(
            &query("api.example.com.", RecordType::AAAA),
            &table(),
            Transport::Udp,
        ));
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());
    }

    #[test]
    fn unknown_names_and_other_types_are_forwarded() {
        let names = table();
        for (name, record_type) in [
            ("www.example.org.", RecordType::A),
            ("api.example.com.", RecordType::MX),
            ("api.example.com.", RecordType::TXT),
        ] {
            assert_eq!(
                decide(&query(name, record_type), &names, Transport::Udp),
                Decision::Forward,
                "{name} {record_type}"
            );
        }
    }

    #[test]
    fn garbage_and_responses_are_dropped() {
        let names = table();
        assert_eq!(decide(&[], &names, Transport::Udp), Decision::Drop);
        assert_eq!(decide(&[0xff; 7], &names, Transport::Udp), Decision::Drop);
        let mut bytes = query("api.example.com.", RecordType::A);
        // Counts that promise more than the packet holds.
        bytes[5] = 9;
        assert_eq!(decide(&bytes, &names, Transport::Udp), Decision::Drop);
        let mut response = Message::from_vec(&query("api.example.com.", RecordType::A)).unwrap();
        response.metadata.message_type = MessageType::Response;
        assert_eq!(
            decide(&response.to_vec().unwrap(), &names, Transport::Udp),
            Decision::Drop
        );
        // Random bytes never panic.
        for seed in 0..2000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let len = rng.usize(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = decide(&bytes, &names, Transport::Udp);
        }
    }

    #[test]
    fn an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() {
        let mut names = NameTable::new("default", "cluster.local");
        let many: Vec<IpAddr> = (1..=60u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        names.insert("big.example.com", many);
        let bytes = query("big.example.com.", RecordType::A);
        let udp = answer(decide(&bytes, &names, Transport::Udp));
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        let tcp = answer(decide(&bytes, &names, Transport::Tcp));
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 60);
    }
}
