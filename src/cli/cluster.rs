//! The flags that make a node one of several: `--backplane`, `--cluster-name`,
//! `--cluster-secret`, `--backplane-creds`, `--node-id`, `--trusted-proxies`,
//! `--ready-requires-backplane`, and the combinations refused at start-up.

use anyhow::bail;
use syncgate::backplane::NatsOptions;
use syncgate::backplane::subjects::Subjects;
use syncgate::config::ServerConfig;

use super::StoreKind;
use super::serve::ServeArgs;

/// Shortest cluster secret accepted (bytes).
const MIN_CLUSTER_SECRET: usize = 16;

/// Applies the cluster flags to `config`; returns the backplane to connect
/// to, or one line saying which flag to change.
pub(super) fn resolve(
    args: &ServeArgs,
    store: &StoreKind,
    production: bool,
    config: &mut ServerConfig,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<NatsOptions>> {
    if let Some(id) = &args.node_id {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            bail!("--node-id {id:?} must be 1 to 64 letters, digits, '-', '_' or '.'");
        }
        config.node_id = id.clone();
    }
    for cidr in args.trusted_proxies.iter().flatten().filter(|c| !c.trim().is_empty()) {
        let cidr = cidr.trim();
        let net = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| anyhow::anyhow!("--trusted-proxies: {cidr:?} is not an address or a CIDR range"))?;
        config.trusted_proxies.push(net);
    }
    config.ready_requires_backplane = args.ready_requires_backplane.unwrap_or(false);
    let Some(url) = &args.backplane else {
        for (given, flag) in [
            (args.cluster_name.is_some(), "--cluster-name"),
            (args.cluster_secret.is_some(), "--cluster-secret"),
            (args.backplane_creds.is_some(), "--backplane-creds"),
            (config.ready_requires_backplane, "--ready-requires-backplane"),
        ] {
            if given {
                bail!("{flag} needs --backplane nats://…");
            }
        }
        return Ok(None);
    };
    if !(url.starts_with("nats://") || url.starts_with("tls://")) {
        bail!("--backplane must be a nats:// (or tls://) URL");
    }
    if !matches!(store, StoreKind::Postgres(_)) {
        let kind = if *store == StoreKind::Memory { "memory" } else { "disk" };
        bail!(
            "--backplane needs a store every node shares: use --store postgres://… (a {kind} store belongs to one node)"
        );
    }
    let cluster = args.cluster_name.clone().unwrap_or_else(|| "syncgate".into());
    Subjects::new(&cluster).map_err(|e| anyhow::anyhow!("--cluster-name: {e}"))?;
    let secret = args.cluster_secret.clone().filter(|s| !s.is_empty());
    match &secret {
        Some(s) if s.len() < MIN_CLUSTER_SECRET => {
            bail!("--cluster-secret must be at least {MIN_CLUSTER_SECRET} bytes (e.g. `openssl rand -hex 32`)")
        }
        None if production => bail!(
            "--env production with a backplane needs --cluster-secret: without it anyone who can publish on NATS can forge messages between nodes"
        ),
        None => warnings.push(
            "--backplane without --cluster-secret: backplane messages are not signed (anyone who can publish on the cluster's NATS subjects can forge them)".into(),
        ),
        Some(_) => {}
    }
    Ok(Some(NatsOptions {
        url: url.clone(),
        cluster,
        secret: secret.map(String::into_bytes),
        creds: args.backplane_creds.clone(),
        node_id: config.node_id.clone(),
    }))
}
