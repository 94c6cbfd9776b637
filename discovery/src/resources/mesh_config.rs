//! Istio's mesh documents: MeshConfig (`mesh.yaml`, including `defaultConfig`, the mesh-wide
//! ProxyConfig, and everything reachable from it) and MeshNetworks (`networks: {...}`).

use std::collections::BTreeMap;

use super::common::{Duration, Opaque};
use super::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LocalityLoadBalancerSetting, OutlierDetection,
    TcpKeepalive, ZoneAwareLoadBalancerSetting,
};
use super::virtual_service::HttpRetry;

// ---------------------------------------------------------------------------------------------
// MeshConfig
// ---------------------------------------------------------------------------------------------

/// `istio.mesh.v1alpha1.MeshConfig`: the whole `mesh.yaml` document.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MeshConfig {
    /// Outbound capture port. Default 15001.
    pub proxy_listen_port: Option<i32>,
    /// Inbound capture port. Default 15006.
    pub proxy_inbound_listen_port: Option<i32>,
    pub proxy_http_port: Option<i32>,
    /// Default 10s.
    pub connect_timeout: Option<Duration>,
    /// Idle timeout of Envoy's connection pool to ztunnel. Default 3600s.
    pub hbone_idle_timeout: Option<Duration>,
    /// Default 0s (no timeout).
    pub protocol_detection_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub ingress_class: Option<String>,
    /// Default `istio-ingressgateway`.
    pub ingress_service: Option<String>,
    /// Default STRICT.
    pub ingress_controller_mode: Option<IngressControllerMode>,
    /// Default `ingressgateway`.
    pub ingress_selector: Option<String>,
    pub enable_tracing: Option<bool>,
    /// Empty means access logging is off.
    pub access_log_file: Option<String>,
    pub access_log_format: Option<String>,
    /// Default TEXT.
    pub access_log_encoding: Option<AccessLogEncoding>,
    pub enable_envoy_access_log_service: Option<bool>,
    pub disable_envoy_listener_log: Option<bool>,
    pub default_config: Option<ProxyConfig>,
    /// Default mode ALLOW_ANY.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    pub inbound_traffic_policy: Option<InboundTrafficPolicy>,
    pub config_sources: Vec<ConfigSource>,
    /// Default true.
    pub enable_auto_mtls: Option<bool>,
    pub trust_domain: Option<String>,
    pub trust_domain_aliases: Vec<String>,
    /// Extra root certificates (not the file path of `ClientTLSSettings.caCertificates`).
    pub ca_certificates: Vec<CertificateData>,
    /// Default `["*"]`.
    pub default_service_export_to: Vec<String>,
    /// Default `["*"]`.
    pub default_virtual_service_export_to: Vec<String>,
    /// Default `["*"]`.
    pub default_destination_rule_export_to: Vec<String>,
    pub root_namespace: Option<String>,
    /// Enabled by default; ignored when `zoneAwareLbSetting` is set.
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    pub zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
    /// Default 60s.
    pub dns_refresh_rate: Option<Duration>,
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    pub inbound_cluster_stat_name: Option<String>,
    pub outbound_cluster_stat_name: Option<String>,
    /// Deprecated.
    pub certificates: Vec<Certificate>,
    pub service_settings: Vec<ServiceSettings>,
    pub service_scope_configs: Vec<ServiceScopeConfigs>,
    /// Default true.
    pub enable_prometheus_merge: Option<bool>,
    /// Deprecated.
    pub verify_certificate_at_client: Option<bool>,
    pub ca: Option<Ca>,
    pub extension_providers: Vec<ExtensionProvider>,
    pub default_providers: Option<DefaultProviders>,
    /// Namespace selectors, ORed.
    pub discovery_selectors: Vec<LabelSelector>,
    pub path_normalization: Option<ProxyPathNormalization>,
    /// Default 2 attempts on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`.
    pub default_http_retry_policy: Option<HttpRetry>,
    /// Sidecar inbound retries. Default 2 attempts on `reset-before-request`.
    pub default_inbound_http_retry_policy: Option<HttpRetry>,
    /// TLS settings of ISTIO_MUTUAL traffic.
    #[serde(rename = "meshMTLS")]
    pub mesh_mtls: Option<TlsConfig>,
    pub tls_defaults: Option<TlsConfig>,
    pub default_traffic_policy: Option<DefaultTrafficPolicy>,
    /// Unset means every ServiceEntry is PUBLIC.
    pub service_entry_visibility: Option<ServiceEntryVisibility>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngressControllerMode {
    #[default]
    Unspecified,
    Off,
    Default,
    Strict,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// MeshConfig's own `h2UpgradePolicy`; not the DestinationRule enum of the same name, whose
/// values differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    #[default]
    DoNotUpgrade,
    Upgrade,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    pub mode: Option<OutboundTrafficPolicyMode>,
    /// Only for ALLOW_ANY_DYNAMIC_DNS.
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    #[default]
    RegistryOnly,
    AllowAny,
    AllowAnyDynamicDns,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InboundTrafficPolicy {
    pub mode: Option<InboundTrafficPolicyMode>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundTrafficPolicyMode {
    #[default]
    Passthrough,
    Localhost,
}

/// A root certificate: `pem` or `spiffeBundleUrl` (at most one).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CertificateData {
    pub pem: Option<String>,
    pub spiffe_bundle_url: Option<String>,
    pub cert_signers: Vec<String>,
    pub trust_domains: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceSettings {
    pub settings: Option<Settings>,
    pub hosts: Vec<String>,
}

/// `MeshConfig.ServiceSettings.Settings`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Settings {
    pub cluster_local: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceScopeConfigs {
    /// Singular, unlike the `namespacesSelector` of Istio's own doc example.
    pub namespace_selector: Option<LabelSelector>,
    pub services_selector: Option<LabelSelector>,
    /// Default LOCAL.
    pub scope: Option<Scope>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    #[default]
    Local,
    Global,
}

/// `MeshConfig.CA`: an external CA.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Ca {
    pub address: Option<String>,
    pub tls_settings: Option<ClientTlsSettings>,
    /// Default 10s.
    pub request_timeout: Option<Duration>,
    /// Default true.
    pub istiod_side: Option<bool>,
}

/// Names of `extensionProviders` used when a Telemetry resource names none.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DefaultProviders {
    pub tracing: Vec<String>,
    pub metrics: Vec<String>,
    pub access_logging: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProxyPathNormalization {
    pub normalization: Option<NormalizationType>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    /// Same as BASE.
    #[default]
    Default,
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

/// `MeshConfig.TLSConfig`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TlsConfig {
    /// Default TLS 1.2.
    pub min_protocol_version: Option<TlsProtocol>,
    pub ecdh_curves: Vec<String>,
    pub cipher_suites: Vec<String>,
}

/// `MeshConfig.TLSConfig.TLSProtocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub enum TlsProtocol {
    #[default]
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// Mesh-wide baseline for DestinationRules; a DestinationRule's block replaces the whole block.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DefaultTrafficPolicy {
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
}

/// `istio.mesh.v1alpha1.LabelSelector`, MeshConfig's copy of Kubernetes' label selector.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: Option<String>,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: Option<String>,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceEntryVisibility {
    /// Unspecified means PUBLIC.
    pub default_visibility: Option<Visibility>,
    /// Default false (ambient only).
    pub apply_to_sidecars: Option<bool>,
    /// The first policy whose rules all match wins.
    pub policies: Vec<Policy>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Visibility {
    #[default]
    #[serde(rename = "VISIBILITY_UNSPECIFIED")]
    Unspecified,
    None,
    Namespace,
    Public,
}

/// `ServiceEntryVisibility.Policy`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Policy {
    pub visibility: Option<Visibility>,
    /// ANDed.
    pub matching_rules: Vec<MatchRule>,
}

/// `ServiceEntryVisibility.MatchRule`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MatchRule {
    pub namespace_selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConfigSource {
    /// `xds://`, `k8s://` or `fs:///`.
    pub address: Option<String>,
    pub tls_settings: Option<ClientTlsSettings>,
    pub subscribed_resources: Vec<Resource>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resource {
    #[default]
    ServiceRegistry,
}

/// Used by the deprecated `certificates`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Certificate {
    pub secret_name: Option<String>,
    pub dns_names: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Extension providers
// ---------------------------------------------------------------------------------------------

/// `MeshConfig.ExtensionProvider`: a name and exactly one provider.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: Option<String>,
    pub envoy_ext_authz_http: Option<EnvoyExternalAuthorizationHttpProvider>,
    pub envoy_ext_authz_grpc: Option<EnvoyExternalAuthorizationGrpcProvider>,
    pub zipkin: Option<ZipkinTracingProvider>,
    /// Deprecated.
    pub lightstep: Option<LightstepTracingProvider>,
    pub datadog: Option<DatadogTracingProvider>,
    pub stackdriver: Option<StackdriverProvider>,
    /// Deprecated.
    pub opencensus: Option<OpenCensusAgentTracingProvider>,
    pub skywalking: Option<SkyWalkingTracingProvider>,
    pub opentelemetry: Option<OpenTelemetryTracingProvider>,
    pub prometheus: Option<PrometheusMetricsProvider>,
    pub envoy_file_access_log: Option<EnvoyFileAccessLogProvider>,
    pub envoy_http_als: Option<EnvoyHttpGrpcV3LogProvider>,
    pub envoy_tcp_als: Option<EnvoyTcpGrpcV3LogProvider>,
    pub envoy_otel_als: Option<EnvoyOpenTelemetryLogProvider>,
    pub sds: Option<SdsProvider>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyExternalAuthorizationRequestBody {
    pub max_request_bytes: Option<u32>,
    pub allow_partial_message: Option<bool>,
    /// gRPC provider only.
    pub pack_as_bytes: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyExternalAuthorizationHttpProvider {
    /// `[namespace/]host`.
    pub service: Option<String>,
    pub port: Option<u32>,
    /// Default 600s.
    pub timeout: Option<Duration>,
    pub path_prefix: Option<String>,
    pub fail_open: Option<bool>,
    pub clear_route_cache: Option<bool>,
    /// Default "403".
    pub status_on_error: Option<String>,
    /// Deprecated.
    pub include_headers_in_check: Vec<String>,
    pub include_request_headers_in_check: Vec<String>,
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    pub include_request_body_in_check: Option<EnvoyExternalAuthorizationRequestBody>,
    pub headers_to_upstream_on_allow: Vec<String>,
    pub headers_to_downstream_on_deny: Vec<String>,
    pub headers_to_downstream_on_allow: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyExternalAuthorizationGrpcProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    /// Default 600s.
    pub timeout: Option<Duration>,
    pub fail_open: Option<bool>,
    pub clear_route_cache: Option<bool>,
    /// Default "403".
    pub status_on_error: Option<String>,
    pub include_request_body_in_check: Option<EnvoyExternalAuthorizationRequestBody>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ZipkinTracingProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    pub max_tag_length: Option<u32>,
    /// Default false (128-bit trace ids).
    #[serde(rename = "enable64bitTraceId")]
    pub enable_64bit_trace_id: Option<bool>,
    /// Default `/api/v2/spans`.
    pub path: Option<String>,
    pub trace_context_option: Option<TraceContextOption>,
    /// Envoy's default is 5s.
    pub timeout: Option<Duration>,
    pub headers: Vec<HttpHeader>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TraceContextOption {
    #[default]
    UseB3,
    UseB3WithW3cPropagation,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LightstepTracingProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    pub access_token: Option<String>,
    pub max_tag_length: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DatadogTracingProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    pub max_tag_length: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SkyWalkingTracingProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    pub access_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StackdriverProvider {
    /// Deprecated.
    pub debug: Option<bool>,
    /// Deprecated. Default 200.
    pub max_number_of_attributes: Option<i64>,
    /// Deprecated. Default 200.
    pub max_number_of_annotations: Option<i64>,
    /// Deprecated. Default 200.
    pub max_number_of_message_events: Option<i64>,
    pub max_tag_length: Option<u32>,
    pub logging: Option<Logging>,
}

/// `StackdriverProvider.Logging`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Logging {
    /// Tag name to CEL expression.
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OpenCensusAgentTracingProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    /// Default `[W3C_TRACE_CONTEXT]`.
    pub context: Vec<TraceContext>,
    pub max_tag_length: Option<u32>,
}

/// OpenCensus trace context propagation, shared by `OpenCensusAgentTracingProvider.context` and
/// `Tracing.OpenCensusAgent.context` (the two proto enums have the same values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TraceContext {
    #[default]
    Unspecified,
    W3cTraceContext,
    GrpcBin,
    CloudTraceContext,
    B3,
}

/// No fields: `prometheus: {}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PrometheusMetricsProvider {}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyFileAccessLogProvider {
    /// Default `/dev/stdout`.
    pub path: Option<String>,
    pub log_format: Option<FileAccessLogFormat>,
    pub omit_empty_values: Option<bool>,
}

/// `EnvoyFileAccessLogProvider.LogFormat`: `text` or `labels` (at most one).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FileAccessLogFormat {
    pub text: Option<String>,
    /// JSON log entries; `{}` is Envoy's default JSON format.
    pub labels: Opaque,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyHttpGrpcV3LogProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    pub log_name: Option<String>,
    pub filter_state_objects_to_log: Vec<String>,
    pub additional_request_headers_to_log: Vec<String>,
    pub additional_response_headers_to_log: Vec<String>,
    pub additional_response_trailers_to_log: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyTcpGrpcV3LogProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    pub log_name: Option<String>,
    pub filter_state_objects_to_log: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyOpenTelemetryLogProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    /// Default `otel_envoy_accesslog`.
    pub log_name: Option<String>,
    pub log_format: Option<OpenTelemetryLogFormat>,
}

/// `EnvoyOpenTelemetryLogProvider.LogFormat`: both fields may be set.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OpenTelemetryLogFormat {
    /// The OpenTelemetry log body.
    pub text: Option<String>,
    /// OpenTelemetry attributes.
    pub labels: Opaque,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OpenTelemetryTracingProvider {
    pub service: Option<String>,
    pub port: Option<u32>,
    pub max_tag_length: Option<u32>,
    /// Set means OTLP/HTTP; unset means OTLP/gRPC.
    pub http: Option<HttpService>,
    pub grpc: Option<GrpcService>,
    pub resource_detectors: Option<ResourceDetectors>,
    /// Default ISTIO_CANONICAL.
    pub service_attribute_enrichment: Option<ServiceAttributeEnrichment>,
    pub dynatrace_sampler: Option<DynatraceSampler>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceAttributeEnrichment {
    #[default]
    IstioCanonical,
    OtelSemanticConventions,
}

/// `OpenTelemetryTracingProvider.DynatraceSampler`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DynatraceSampler {
    pub tenant: Option<String>,
    pub cluster_id: Option<i32>,
    /// Default 1000.
    pub root_spans_per_minute: Option<u32>,
    pub http_service: Option<DynatraceApi>,
}

/// `DynatraceSampler.DynatraceApi`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DynatraceApi {
    pub service: Option<String>,
    pub port: Option<u32>,
    pub http: Option<HttpService>,
}

/// `SDSProvider`: an SDS server gateways reference as `sds://name`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SdsProvider {
    pub name: Option<String>,
    pub service: Option<String>,
    pub port: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpService {
    pub path: Option<String>,
    /// Default 3s.
    pub timeout: Option<Duration>,
    pub headers: Vec<HttpHeader>,
}

/// A header sent to a provider: `value` or `envName` (at most one).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpHeader {
    pub name: Option<String>,
    pub value: Option<String>,
    /// An environment variable of istiod.
    pub env_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceDetectors {
    pub environment: Option<EnvironmentResourceDetector>,
    pub dynatrace: Option<DynatraceResourceDetector>,
}

/// No fields: `environment: {}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvironmentResourceDetector {}

/// No fields: `dynatrace: {}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DynatraceResourceDetector {}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GrpcService {
    pub timeout: Option<Duration>,
    pub initial_metadata: Vec<HttpHeader>,
}

// ---------------------------------------------------------------------------------------------
// ProxyConfig
// ---------------------------------------------------------------------------------------------

/// `istio.mesh.v1alpha1.ProxyConfig`: `defaultConfig` of MeshConfig (also the pod annotation
/// `proxy.istio.io/config`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProxyConfig {
    pub config_path: Option<String>,
    pub binary_path: Option<String>,
    /// At most one of `serviceCluster` and `tracingServiceName`.
    pub service_cluster: Option<String>,
    /// Default APP_LABEL_AND_NAMESPACE.
    pub tracing_service_name: Option<TracingServiceName>,
    /// Default 45s.
    pub drain_duration: Option<Duration>,
    pub discovery_address: Option<String>,
    /// Deprecated.
    pub discovery_refresh_delay: Option<Duration>,
    /// Deprecated: `tracing` replaces it.
    pub zipkin_address: Option<String>,
    pub statsd_udp_address: Option<String>,
    /// Deprecated.
    pub envoy_metrics_service_address: Option<String>,
    /// Default 15000.
    pub proxy_admin_port: Option<i32>,
    /// Deprecated.
    pub availability_zone: Option<String>,
    /// Default MUTUAL_TLS.
    pub control_plane_auth_policy: Option<AuthenticationPolicy>,
    pub custom_config_file: Option<String>,
    /// Default 189.
    pub stat_name_length: Option<i32>,
    /// Unset means automatic; 0 means all cores.
    pub concurrency: Option<i32>,
    pub proxy_bootstrap_template_path: Option<String>,
    /// Default REDIRECT.
    pub interception_mode: Option<InboundInterceptionMode>,
    pub tracing: Option<Tracing>,
    /// Deprecated.
    pub sds: Option<Sds>,
    pub envoy_access_log_service: Option<RemoteService>,
    pub envoy_metrics_service: Option<RemoteService>,
    /// Environment variables of the proxy.
    pub proxy_metadata: BTreeMap<String, String>,
    pub runtime_values: BTreeMap<String, String>,
    /// Default 15020.
    pub status_port: Option<i32>,
    pub extra_stat_tags: Vec<String>,
    pub gateway_topology: Option<Topology>,
    /// Default 5s.
    pub termination_drain_duration: Option<Duration>,
    pub mesh_id: Option<String>,
    pub readiness_probe: Option<ReadinessProbe>,
    pub proxy_stats_matcher: Option<ProxyStatsMatcher>,
    /// Default false.
    pub hold_application_until_proxy_starts: Option<bool>,
    pub ca_certificates_pem: Vec<String>,
    pub image: Option<ProxyImage>,
    pub private_key_provider: Option<PrivateKeyProvider>,
    pub proxy_headers: Option<ProxyHeaders>,
    /// Default 1000ms.
    pub file_flush_interval: Option<Duration>,
    /// Default 64.
    pub file_flush_min_size_kb: Option<u32>,
    /// Default true.
    pub stats_compression: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TracingServiceName {
    #[default]
    AppLabelAndNamespace,
    CanonicalNameOnly,
    CanonicalNameAndNamespace,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundInterceptionMode {
    #[default]
    Redirect,
    Tproxy,
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthenticationPolicy {
    #[default]
    None,
    MutualTls,
    Inherit,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ForwardClientCertDetails {
    #[default]
    Undefined,
    Sanitize,
    ForwardOnly,
    AppendForward,
    SanitizeSet,
    AlwaysForwardOnly,
}

/// `ProxyConfig.ProxyStatsMatcher`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProxyStatsMatcher {
    pub inclusion_prefixes: Vec<String>,
    pub inclusion_suffixes: Vec<String>,
    pub inclusion_regexps: Vec<String>,
}

/// `ProxyConfig.ProxyHeaders`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProxyHeaders {
    /// Sidecar inbound. Default APPEND_FORWARD.
    pub forwarded_client_cert: Option<ForwardClientCertDetails>,
    pub set_current_client_cert_details: Option<SetCurrentClientCertDetails>,
    pub request_id: Option<RequestId>,
    pub server: Option<Server>,
    pub attempt_count: Option<AttemptCount>,
    pub envoy_debug_headers: Option<EnvoyDebugHeaders>,
    pub metadata_exchange_headers: Option<MetadataExchangeHeaders>,
    pub preserve_http1_header_case: Option<bool>,
    /// Disabled by default.
    pub x_forwarded_host: Option<XForwardedHost>,
    /// Disabled by default.
    pub x_forwarded_port: Option<XForwardedPort>,
}

/// `ProxyHeaders.SetCurrentClientCertDetails`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SetCurrentClientCertDetails {
    /// Default true.
    pub subject: Option<bool>,
    /// Default false.
    pub cert: Option<bool>,
    /// Default false.
    pub chain: Option<bool>,
    /// Default true.
    pub dns: Option<bool>,
    /// Default true.
    pub uri: Option<bool>,
}

/// `ProxyHeaders.RequestId`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestId {
    pub disabled: Option<bool>,
}

/// `ProxyHeaders.Server`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Server {
    pub disabled: Option<bool>,
    /// Default `istio-envoy`.
    pub value: Option<String>,
}

/// `ProxyHeaders.AttemptCount`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AttemptCount {
    pub disabled: Option<bool>,
}

/// `ProxyHeaders.EnvoyDebugHeaders`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvoyDebugHeaders {
    pub disabled: Option<bool>,
}

/// `ProxyHeaders.MetadataExchangeHeaders`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetadataExchangeHeaders {
    pub mode: Option<MetadataExchangeMode>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MetadataExchangeMode {
    #[default]
    Undefined,
    InMesh,
}

/// `ProxyHeaders.XForwardedHost`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct XForwardedHost {
    pub enabled: Option<bool>,
}

/// `ProxyHeaders.XForwardedPort`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct XForwardedPort {
    pub enabled: Option<bool>,
}

/// ProxyConfig's tracer: at most one of `zipkin`, `lightstep`, `datadog`, `stackdriver` and
/// `openCensusAgent`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Tracing {
    pub zipkin: Option<Zipkin>,
    pub lightstep: Option<Lightstep>,
    pub datadog: Option<Datadog>,
    pub stackdriver: Option<Stackdriver>,
    pub open_census_agent: Option<OpenCensusAgent>,
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Default 256.
    pub max_path_tag_length: Option<u32>,
    /// Percent of requests traced, 0-100. Default 1.0.
    pub sampling: Option<f64>,
    pub tls_settings: Option<ClientTlsSettings>,
    /// Default true.
    pub enable_istio_tags: Option<bool>,
}

/// `Tracing.Zipkin`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Zipkin {
    /// `host:port`.
    pub address: Option<String>,
}

/// `Tracing.Lightstep`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Lightstep {
    pub address: Option<String>,
    pub access_token: Option<String>,
}

/// `Tracing.Datadog`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Datadog {
    pub address: Option<String>,
}

/// `Tracing.Stackdriver`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Stackdriver {
    pub debug: Option<bool>,
    /// Default 200.
    pub max_number_of_attributes: Option<i64>,
    /// Default 200.
    pub max_number_of_annotations: Option<i64>,
    /// Default 200.
    pub max_number_of_message_events: Option<i64>,
}

/// `Tracing.OpenCensusAgent`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OpenCensusAgent {
    /// gRPC address.
    pub address: Option<String>,
    /// Default `[W3C_TRACE_CONTEXT]`.
    pub context: Vec<TraceContext>,
}

/// `Tracing.CustomTag`: at most one of `literal`, `environment` and `header`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CustomTag {
    pub literal: Option<Literal>,
    pub environment: Option<Environment>,
    pub header: Option<RequestHeader>,
}

/// `Tracing.Literal`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Literal {
    pub value: Option<String>,
}

/// `Tracing.Environment`: a tag from an environment variable of the proxy.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Environment {
    pub name: Option<String>,
    pub default_value: Option<String>,
}

/// `Tracing.RequestHeader`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestHeader {
    pub name: Option<String>,
    pub default_value: Option<String>,
}

/// `SDS`, used by the deprecated `ProxyConfig.sds`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Sds {
    pub enabled: Option<bool>,
    pub k8s_sa_jwt_path: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Topology {
    /// Default 0.
    pub num_trusted_proxies: Option<u32>,
    /// Gateway default SANITIZE_SET.
    pub forward_client_cert_details: Option<ForwardClientCertDetails>,
    /// `{}` enables the PROXY protocol.
    pub proxy_protocol: Option<ProxyProtocolConfiguration>,
}

/// `Topology.ProxyProtocolConfiguration`. No fields: `proxyProtocol: {}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProxyProtocolConfiguration {}

/// At most one of `cryptomb` and `qat`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PrivateKeyProvider {
    pub cryptomb: Option<CryptoMb>,
    pub qat: Option<Qat>,
}

/// `PrivateKeyProvider.CryptoMb`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CryptoMb {
    pub poll_delay: Option<Duration>,
    /// Default false.
    pub fallback: Option<bool>,
}

/// `PrivateKeyProvider.QAT`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Qat {
    pub poll_delay: Option<Duration>,
    /// Default false.
    pub fallback: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RemoteService {
    pub address: Option<String>,
    pub tls_settings: Option<ClientTlsSettings>,
    pub tcp_keepalive: Option<TcpKeepalive>,
}

// ---------------------------------------------------------------------------------------------
// networking.istio.io types reachable only from ProxyConfig
// ---------------------------------------------------------------------------------------------

/// `networking.v1alpha3.ReadinessProbe` (WorkloadGroup): at most one of `httpGet`, `tcpSocket`,
/// `exec` and `grpc`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReadinessProbe {
    pub initial_delay_seconds: Option<i32>,
    /// Default 1.
    pub timeout_seconds: Option<i32>,
    /// Default 10.
    pub period_seconds: Option<i32>,
    /// Default 1.
    pub success_threshold: Option<i32>,
    /// Default 3.
    pub failure_threshold: Option<i32>,
    pub http_get: Option<HttpHealthCheckConfig>,
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    pub exec: Option<ExecHealthCheckConfig>,
    pub grpc: Option<GrpcHealthCheckConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpHealthCheckConfig {
    pub path: Option<String>,
    pub port: Option<u32>,
    /// Default the pod IP.
    pub host: Option<String>,
    /// `HTTP` or `HTTPS`. Default HTTP.
    pub scheme: Option<String>,
    pub http_headers: Vec<HttpHealthCheckHeader>,
}

/// `networking.v1alpha3.HTTPHeader` of a health check (no `envName`, unlike `HttpHeader`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpHealthCheckHeader {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TcpHealthCheckConfig {
    /// Default localhost.
    pub host: Option<String>,
    pub port: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExecHealthCheckConfig {
    pub command: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GrpcHealthCheckConfig {
    pub port: Option<u32>,
    pub service: Option<String>,
}

/// `networking.v1beta1.ProxyImage`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProxyImage {
    /// `default`, `debug`, `distroless`, ...
    pub image_type: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// MeshNetworks
// ---------------------------------------------------------------------------------------------

/// `istio.mesh.v1alpha1.MeshNetworks`: the document `networks: {...}`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MeshNetworks {
    pub networks: BTreeMap<String, Network>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Network {
    pub endpoints: Vec<NetworkEndpoints>,
    pub gateways: Vec<IstioNetworkGateway>,
}

/// `Network.NetworkEndpoints`: `fromCidr` or `fromRegistry` (at most one).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NetworkEndpoints {
    pub from_cidr: Option<String>,
    /// A registry (cluster) name.
    pub from_registry: Option<String>,
}

/// `Network.IstioNetworkGateway`: `registryServiceName` or `address` (at most one).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct IstioNetworkGateway {
    /// The gateway Service's fully qualified name.
    pub registry_service_name: Option<String>,
    pub address: Option<String>,
    pub port: Option<u32>,
    pub locality: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Finding;
    use crate::resources::common::parse_go_duration;
    use crate::resources::destination_rule::ClientTlsMode;
    use crate::yaml::{FieldPath, from_node, parse_documents};

    fn read<T: serde::de::DeserializeOwned + Default>(text: &str) -> (T, Vec<Finding>) {
        let docs = parse_documents(text).unwrap();
        let mut findings = Vec::new();
        let value = from_node::<T>(&docs[0], FieldPath::ROOT, &mut findings);
        (value, findings)
    }

    const MESH: &str = r#"
accessLogFile: /dev/stdout
accessLogEncoding: JSON
enableAutoMtls: true
trustDomain: cluster.local
trustDomainAliases: [old.example, legacy.example]
rootNamespace: istio-system
dnsRefreshRate: 30s
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
  holdApplicationUntilProxyStarts: true
  concurrency: 2
  proxyMetadata:
    ISTIO_META_DNS_CAPTURE: "true"
    ISTIO_META_DNS_AUTO_ALLOCATE: "true"
  tracing:
    sampling: 10
    zipkin:
      address: zipkin.istio-system:9411
    customTags:
      cluster:
        environment:
          name: CLUSTER_ID
          defaultValue: unknown
  proxyHeaders:
    server:
      disabled: true
    metadataExchangeHeaders:
      mode: IN_MESH
  gatewayTopology:
    numTrustedProxies: 1
    proxyProtocol: {}
extensionProviders:
- name: ext-authz
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    timeout: 2s
    includeRequestHeadersInCheck: [x-ext-authz]
    headersToUpstreamOnAllow: [x-user]
- name: otel
  opentelemetry:
    service: opentelemetry-collector.observability.svc.cluster.local
    port: 4317
    resourceDetectors:
      environment: {}
- name: prometheus
  prometheus: {}
defaultProviders:
  tracing: [otel]
outboundTrafficPolicy:
  mode: REGISTRY_ONLY
localityLbSetting:
  enabled: true
  failover:
  - from: us-east
    to: us-west
defaultHttpRetryPolicy:
  attempts: 3
  retryOn: connect-failure,refused-stream,503
  perTryTimeout: 2s
caCertificates:
- pem: |
    -----BEGIN CERTIFICATE-----
    MIIB
    -----END CERTIFICATE-----
  trustDomains: [remote.example]
meshMTLS:
  minProtocolVersion: TLSV1_3
"#;

    #[test]
    fn reads_a_realistic_mesh_config() {
        let (mesh, findings) = read::<MeshConfig>(MESH);
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(mesh.access_log_file.as_deref(), Some("/dev/stdout"));
        assert_eq!(mesh.access_log_encoding, Some(AccessLogEncoding::Json));
        assert_eq!(mesh.enable_auto_mtls, Some(true));
        assert_eq!(mesh.trust_domain_aliases, ["old.example", "legacy.example"]);
        assert_eq!(
            mesh.dns_refresh_rate.and_then(|d| d.value),
            parse_go_duration("30s")
        );

        let proxy = mesh.default_config.unwrap();
        assert_eq!(proxy.concurrency, Some(2));
        assert_eq!(proxy.hold_application_until_proxy_starts, Some(true));
        assert_eq!(proxy.proxy_metadata["ISTIO_META_DNS_CAPTURE"], "true");
        let tracing = proxy.tracing.unwrap();
        assert_eq!(tracing.sampling, Some(10.0));
        assert_eq!(
            tracing.zipkin.unwrap().address.as_deref(),
            Some("zipkin.istio-system:9411")
        );
        let tag = tracing.custom_tags["cluster"].environment.clone().unwrap();
        assert_eq!(tag.name.as_deref(), Some("CLUSTER_ID"));
        let headers = proxy.proxy_headers.unwrap();
        assert_eq!(headers.server.unwrap().disabled, Some(true));
        assert_eq!(
            headers.metadata_exchange_headers.unwrap().mode,
            Some(MetadataExchangeMode::InMesh)
        );
        let topology = proxy.gateway_topology.unwrap();
        assert_eq!(topology.num_trusted_proxies, Some(1));
        assert_eq!(topology.proxy_protocol, Some(ProxyProtocolConfiguration {}));

        let [authz, otel, prometheus] = mesh.extension_providers.as_slice() else {
            panic!("expected three providers: {:?}", mesh.extension_providers);
        };
        assert_eq!(authz.name.as_deref(), Some("ext-authz"));
        let http = authz.envoy_ext_authz_http.clone().unwrap();
        assert_eq!(http.port, Some(8000));
        assert_eq!(http.timeout.unwrap().raw, "2s");
        assert_eq!(http.include_request_headers_in_check, ["x-ext-authz"]);
        assert_eq!(http.headers_to_upstream_on_allow, ["x-user"]);
        let otel = otel.opentelemetry.clone().unwrap();
        assert_eq!(otel.port, Some(4317));
        assert!(otel.resource_detectors.unwrap().environment.is_some());
        assert_eq!(prometheus.prometheus, Some(PrometheusMetricsProvider {}));
        assert_eq!(mesh.default_providers.unwrap().tracing, ["otel"]);

        assert_eq!(
            mesh.outbound_traffic_policy.unwrap().mode,
            Some(OutboundTrafficPolicyMode::RegistryOnly)
        );
        let locality = mesh.locality_lb_setting.unwrap();
        assert_eq!(locality.enabled, Some(true));
        assert_eq!(locality.failover[0].to.as_deref(), Some("us-west"));
        let retry = mesh.default_http_retry_policy.unwrap();
        assert_eq!(retry.attempts, Some(3));
        assert_eq!(
            retry.retry_on.as_deref(),
            Some("connect-failure,refused-stream,503")
        );
        let [ca] = mesh.ca_certificates.as_slice() else {
            panic!("expected one CA: {:?}", mesh.ca_certificates);
        };
        assert!(
            ca.pem
                .as_deref()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----\n")
        );
        assert_eq!(ca.trust_domains, ["remote.example"]);
        assert_eq!(
            mesh.mesh_mtls.unwrap().min_protocol_version,
            Some(TlsProtocol::V1_3)
        );
    }

    #[test]
    fn a_misspelt_field_is_unknown() {
        let (mesh, findings) =
            read::<MeshConfig>("trustDomian: cluster.local\nrootNamespace: istio-system\n");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].code, "unknown-field");
        assert_eq!(findings[0].field, "trustDomian");
        assert!(
            findings[0].message.contains("\"trustDomain\""),
            "{findings:?}"
        );
        assert_eq!(mesh.root_namespace.as_deref(), Some("istio-system"));
    }

    #[test]
    fn reads_mesh_networks() {
        let (networks, findings) = read::<MeshNetworks>(
            "networks: {network1: {endpoints: [{fromRegistry: Kubernetes}], \
             gateways: [{address: 1.2.3.4, port: 15443}]}}\n",
        );
        assert!(findings.is_empty(), "{findings:?}");
        let network = &networks.networks["network1"];
        assert_eq!(
            network.endpoints[0].from_registry.as_deref(),
            Some("Kubernetes")
        );
        assert_eq!(network.gateways[0].address.as_deref(), Some("1.2.3.4"));
        assert_eq!(network.gateways[0].port, Some(15443));
    }

    #[test]
    fn removed_fields_are_unknown() {
        let (_, findings) = read::<MeshConfig>(
            "thriftConfig: {rateLimitUrl: http://ratelimit}\nmixerCheckServer: x:9091\n",
        );
        let fields: Vec<&str> = findings.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["thriftConfig", "mixerCheckServer"]);
        assert!(findings.iter().all(|f| f.code == "unknown-field"));
        // Moved to ProxyConfig: unknown at the top level, known under defaultConfig.
        let (mesh, findings) = read::<MeshConfig>(
            "terminationDrainDuration: 5s\ndefaultConfig: {terminationDrainDuration: 10s}\n",
        );
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].field, "terminationDrainDuration");
        assert!(
            mesh.default_config
                .unwrap()
                .termination_drain_duration
                .is_some()
        );
    }

    #[test]
    fn irregular_json_names_and_enum_values() {
        let (provider, findings) = read::<ExtensionProvider>(
            "name: zipkin\nzipkin:\n  service: zipkin.istio-system\n  port: 9411\n  \
             enable64bitTraceId: true\n  traceContextOption: USE_B3_WITH_W3C_PROPAGATION\n",
        );
        assert!(findings.is_empty(), "{findings:?}");
        let zipkin = provider.zipkin.unwrap();
        assert_eq!(zipkin.enable_64bit_trace_id, Some(true));
        assert_eq!(
            zipkin.trace_context_option,
            Some(TraceContextOption::UseB3WithW3cPropagation)
        );

        let (proxy, findings) = read::<ProxyConfig>(
            "sds: {enabled: true, k8sSaJwtPath: /var/run/token}\n\
             tracing:\n  openCensusAgent: {context: [W3C_TRACE_CONTEXT, B3]}\n  \
             tlsSettings: {mode: ISTIO_MUTUAL}\n\
             proxyHeaders: {preserveHttp1HeaderCase: true, xForwardedHost: {enabled: true}}\n\
             fileFlushMinSizeKb: 128\n",
        );
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(
            proxy.sds.unwrap().k8s_sa_jwt_path.as_deref(),
            Some("/var/run/token")
        );
        let tracing = proxy.tracing.unwrap();
        assert_eq!(
            tracing.open_census_agent.unwrap().context,
            [TraceContext::W3cTraceContext, TraceContext::B3]
        );
        assert_eq!(
            tracing.tls_settings.unwrap().mode,
            Some(ClientTlsMode::IstioMutual)
        );
        assert_eq!(proxy.file_flush_min_size_kb, Some(128));

        let (visibility, findings) =
            read::<ServiceEntryVisibility>("defaultVisibility: VISIBILITY_UNSPECIFIED\n");
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(visibility.default_visibility, Some(Visibility::Unspecified));
    }
}
