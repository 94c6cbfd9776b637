//! Response bodies from upstream, wrapped so that what the request holds lives exactly as long as
//! the response is being sent: the endpoint's active-request count, the cluster's request
//! count, an HTTP/2 stream slot, and an HTTP/1.1 connection that goes back to its pool once the
//! body has been read to the end (a body abandoned half way closes the connection instead).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::body::{self, Body, BoxError};
use crate::upstream::cluster::{ActiveRequest, ClusterRequest};
use crate::upstream::pool::{Http1Lease, StreamGuard};

/// Something kept until the body is done with.
#[derive(Debug)]
enum Held {
    Stream(#[allow(dead_code)] StreamGuard),
    Endpoint(#[allow(dead_code)] ActiveRequest),
    Cluster(#[allow(dead_code)] ClusterRequest),
}

pub(crate) struct UpstreamBody {
    inner: Body,
    /// An HTTP/1.1 connection to return to its pool when the body ends cleanly.
    release: Option<Http1Lease>,
    _held: Option<Held>,
}

impl UpstreamBody {
    /// A body read from a pooled HTTP/1.1 connection.
    pub(crate) fn pooled(incoming: hyper::body::Incoming, lease: Http1Lease) -> Body {
        body::boxed(UpstreamBody {
            inner: body::boxed(incoming),
            release: Some(lease),
            _held: None,
        })
    }

    /// A body read from an HTTP/2 stream, holding the stream's slot.
    pub(crate) fn streamed(incoming: hyper::body::Incoming, streams: StreamGuard) -> Body {
        Self::holding(body::boxed(incoming), Held::Stream(streams))
    }

    /// Holds the endpoint's active-request count.
    pub(crate) fn with_endpoint(inner: Body, endpoint: ActiveRequest) -> Body {
        Self::holding(inner, Held::Endpoint(endpoint))
    }

    /// Holds the cluster's request count.
    pub(crate) fn hold(inner: Body, request: ClusterRequest) -> Body {
        Self::holding(inner, Held::Cluster(request))
    }

    fn holding(inner: Body, held: Held) -> Body {
        body::boxed(UpstreamBody {
            inner,
            release: None,
            _held: Some(held),
        })
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = &poll
            && let Some(lease) = self.release.take()
        {
            lease.release();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body with nothing left (say a 204) is complete without being read.
        if self.inner.is_end_stream()
            && let Some(lease) = self.release.take()
        {
            lease.release();
        }
    }
}
