//! Service export between east-west gateways: the federation API (`ExportService.Watch`, gRPC
//! over mesh mTLS on port 15445) streams the set of services a cluster exports to the peer
//! gateways that watch it.
//!
//! - [`ExportSet`]: the set as both sides keep it, and its conversion to and from the wire.
//! - [`server`]: the serving side, which admits only the east-west gateways of known peers.
//! - [`client`]: the watching side, one stream per peer, kept up with backoff.
//!
//! What the importing side makes of a set is [`crate::import`]'s business.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};
use strait_discovery::compile::exports::{EndpointGroup, ExportedPort, ExportedService};

/// The generated messages, client and server of `proto/federation.proto`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("strait.federation.v1");
}

/// The largest set either side sends or takes (many services with many groups).
pub(crate) const MAX_SET_BYTES: usize = 16 * 1024 * 1024;

/// The federation API's default port.
pub const FEDERATION_API_PORT: u16 = 15445;

/// The services one cluster exports, as of `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSet {
    /// Changes with the set: milliseconds since the Unix epoch of the change.
    pub version: u64,
    /// The exporting cluster's trust domain.
    pub trust_domain: String,
    /// The exporting gateway's network.
    pub network: String,
    pub services: Vec<ExportedService>,
}

impl From<&ExportSet> for proto::ExportSet {
    fn from(set: &ExportSet) -> Self {
        proto::ExportSet {
            version: set.version,
            trust_domain: set.trust_domain.clone(),
            network: set.network.clone(),
            services: set
                .services
                .iter()
                .map(|service| proto::ExportedService {
                    host: service.host.clone(),
                    namespace: service.namespace.clone(),
                    ports: service
                        .ports
                        .iter()
                        .map(|p| proto::Port {
                            number: p.number,
                            name: p.name.clone(),
                            protocol: p.protocol.clone(),
                        })
                        .collect(),
                    endpoints: service
                        .endpoints
                        .iter()
                        .map(|g| proto::EndpointGroup {
                            labels: g.labels.clone(),
                            locality: g.locality.clone(),
                            spiffe_id: g.spiffe_id.clone(),
                            count: g.count,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<proto::ExportSet> for ExportSet {
    fn from(set: proto::ExportSet) -> Self {
        ExportSet {
            version: set.version,
            trust_domain: set.trust_domain,
            network: set.network,
            services: set
                .services
                .into_iter()
                .map(|service| ExportedService {
                    host: service.host,
                    namespace: service.namespace,
                    ports: service
                        .ports
                        .into_iter()
                        .map(|p| ExportedPort {
                            number: p.number,
                            name: p.name,
                            protocol: p.protocol,
                        })
                        .collect(),
                    endpoints: service
                        .endpoints
                        .into_iter()
                        .map(|g| EndpointGroup {
                            labels: g.labels,
                            locality: g.locality,
                            spiffe_id: g.spiffe_id,
                            count: g.count,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::*;

    #[test]
    fn a_set_survives_the_wire() {
        let set = ExportSet {
            version: 7,
            trust_domain: "west.mesh".to_owned(),
            network: "west".to_owned(),
            services: vec![ExportedService {
                host: "reviews.default.svc.cluster.local".to_owned(),
                namespace: "default".to_owned(),
                ports: vec![ExportedPort {
                    number: 9080,
                    name: "http".to_owned(),
                    protocol: "HTTP".to_owned(),
                }],
                endpoints: vec![EndpointGroup {
                    labels: BTreeMap::from([("version".to_owned(), "v1".to_owned())]),
                    locality: "eu/a".to_owned(),
                    spiffe_id: "spiffe://west.mesh/ns/default/sa/reviews".to_owned(),
                    count: 3,
                }],
            }],
        };
        let bytes = proto::ExportSet::from(&set).encode_to_vec();
        let decoded = proto::ExportSet::decode(bytes.as_slice()).unwrap();
        assert_eq!(ExportSet::from(decoded), set);
    }
}
