//! REGISTRY_ONLY at the egress gateway, which Istio does not enforce there (its
//! `outboundTrafficPolicy` "does not apply to gateways") and Strait does: every route of an
//! egress gateway must lead to a registry host whose endpoints the gateway knows.
//!
//! A destination is refused when forwarding to it would mean forwarding to whatever address
//! the connection named (a loophole out of the registry), or back to the gateway itself:
//! - a host no ServiceEntry declares (refused where every gateway refuses it, in `clusters`);
//! - a ServiceEntry with `resolution: NONE` (the default): its endpoint is the original
//!   destination, which at a gateway is the gateway's own address (Istio's egress pattern
//!   documents this loop and asks for `resolution: DNS`);
//! - a DestinationRule `loadBalancer.simple: PASSTHROUGH` (the original destination, again);
//! - endpoints at an address the gateway listens on: a routing loop.
//!
//! A refused destination's cluster is left out with the reason, which `validate` and the log
//! report as a finding and which the access log repeats for each request routed there (503 NC)
//! or connection (reset, NC). DNS answers are checked whenever they change, since the
//! configuration is compiled again with them.

use std::net::{IpAddr, SocketAddr};

use strait_proxy::snapshot::Endpoint;

use super::Compiler;
use super::registry::Service;
use crate::resources::service_entry::Resolution;

/// What an egress gateway knows about itself beyond its listeners.
#[derive(Clone, Debug, Default)]
pub struct EgressOptions {
    /// The gateway's own IPs besides loopback (its `--instance-ip`): where listeners bound to
    /// the unspecified address can also be reached, so endpoints there are loops too.
    pub own_ips: Vec<IpAddr>,
}

impl Compiler<'_> {
    /// Why an egress gateway must not forward to this destination, if it must not.
    pub(super) fn egress_refusal(
        &self,
        host: &str,
        service: Service<'_>,
        endpoints: &[Endpoint],
        original_destination: bool,
    ) -> Option<String> {
        let egress = self.options.egress.as_ref()?;
        if service.entry.resolution.unwrap_or_default() == Resolution::None {
            return Some(format!(
                "REGISTRY_ONLY at the egress gateway: {host} has resolution NONE, so the gateway would forward to the original destination (its own address); declare the host with resolution DNS or STATIC"
            ));
        }
        if original_destination {
            return Some(format!(
                "REGISTRY_ONLY at the egress gateway: the DestinationRule of {host} sets loadBalancer PASSTHROUGH, which forwards to the original destination instead of the registry's endpoints"
            ));
        }
        let looping = endpoints
            .iter()
            .map(|e| e.address)
            .find(|address| self.is_own_address(*address, &egress.own_ips))?;
        Some(format!(
            "REGISTRY_ONLY at the egress gateway: endpoint {looping} of {host} is an address this gateway listens on; forwarding there would loop"
        ))
    }

    /// Whether `address` reaches one of the gateway's own listeners.
    fn is_own_address(&self, address: SocketAddr, own_ips: &[IpAddr]) -> bool {
        self.listening.iter().any(|listening| {
            if listening.port() != address.port() {
                return false;
            }
            let ip = address.ip();
            if listening.ip().is_unspecified() {
                ip.is_loopback() || ip.is_unspecified() || own_ips.contains(&ip)
            } else {
                ip == listening.ip()
            }
        })
    }
}
