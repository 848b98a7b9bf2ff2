//! The replicated mode's NATS cluster: one nats-server configuration per node,
//! written by gen_compose beside the compose file (`.nats/<stem>.natsK.conf`).
//!
//! Every node runs JetStream with `sync_interval: "always"` (an acknowledged
//! publish is fsynced on each node of the quorum, not within the default two
//! minutes), serves its clients over TLS with the deployment's NATS certificate,
//! and meets the other nodes on routes that are mutual TLS verified against the
//! deployment's CA. Each node advertises its name, not its container address,
//! both to clients and to the other nodes, because the certificate carries names
//! (`nats1`..`natsK`) and every TLS peer checks the name it dialed.

use std::path::{Path, PathBuf};

/// Nodes of the cluster: three, the smallest Raft group that survives losing one.
pub const NODES: u32 = 3;
/// Where each node finds its certificates and store in its container.
const TLS_DIR: &str = "/etc/nats/tls";
const STORE_DIR: &str = "/data";
/// The client, cluster and monitoring ports, inside the network only.
pub const CLIENT_PORT: u16 = 4222;
const CLUSTER_PORT: u16 = 6222;
const MONITOR_PORT: u16 = 8222;
/// Where the configuration files go, relative to the compose file's directory.
pub const CONF_DIR: &str = ".nats";

/// The NATS nodes a deployment of `servers` runs: none for one server (the file store).
pub fn nodes_for(servers: u32) -> u32 {
    if servers > 1 {
        NODES
    } else {
        0
    }
}

/// The node's name (`nats1`..): its container, its `server_name` and a name in
/// the certificate.
pub fn node(k: u32) -> String {
    format!("nats{k}")
}

/// What the servers dial: every node's client port over TLS (`SERVER_NATS_URLS`).
pub fn client_urls(nodes: u32) -> String {
    (1..=nodes).map(|k| format!("tls://{}:{CLIENT_PORT}", node(k))).collect::<Vec<_>>().join(",")
}

/// The configuration of node `k` of `nodes`.
pub fn config(k: u32, nodes: u32) -> String {
    let name = node(k);
    let routes: String =
        (1..=nodes).map(|j| format!("    nats-route://{}:{CLUSTER_PORT}\n", node(j))).collect::<Vec<_>>().concat();
    format!(
        "# Node {k} of {nodes} of the deployment's NATS cluster, written by gen_compose.\n\
         # Across machines: replace the names below (advertise, client_advertise, routes)\n\
         # with the hosts' names, which the NATS certificate must carry (gen_pki --nats-name).\n\
         server_name: {name}\n\
         listen: 0.0.0.0:{CLIENT_PORT}\n\
         client_advertise: \"{name}:{CLIENT_PORT}\"\n\
         http: 0.0.0.0:{MONITOR_PORT}\n\
         # Clients (the central servers) over TLS; they verify this certificate against the CA.\n\
         tls {{\n  cert_file: \"{TLS_DIR}/nats.pem\"\n  key_file: \"{TLS_DIR}/nats.key\"\n  timeout: 5\n}}\n\
         jetstream {{\n  store_dir: \"{STORE_DIR}\"\n  # fsync every write before it is acknowledged (the default syncs every 2 minutes)\n  sync_interval: \"always\"\n}}\n\
         cluster {{\n  name: loteria\n  listen: 0.0.0.0:{CLUSTER_PORT}\n  advertise: \"{name}:{CLUSTER_PORT}\"\n\
         \x20 # Routes are mutual TLS: each side presents the NATS certificate and checks the other's against the CA.\n\
         \x20 tls {{\n    cert_file: \"{TLS_DIR}/nats.pem\"\n    key_file: \"{TLS_DIR}/nats.key\"\n    ca_file: \"{TLS_DIR}/ca.pem\"\n    timeout: 5\n  }}\n\
         \x20 routes: [\n{routes}  ]\n}}\n"
    )
}

/// The configuration file of node `k` for a deployment, relative to the compose
/// file's directory (the compose file mounts it read-only).
pub fn conf_file(stem: &str, k: u32) -> String {
    format!("{CONF_DIR}/{stem}.{}.conf", node(k))
}

/// Writes every node's configuration beside the compose file.
pub fn write_configs(base: &Path, stem: &str, nodes: u32) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(base.join(CONF_DIR))?;
    (1..=nodes)
        .map(|k| {
            let path = base.join(conf_file(stem, k));
            std::fs::write(&path, config(k, nodes))?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_syncs_always_and_routes_to_all_over_verified_tls() {
        let conf = config(2, 3);
        assert!(conf.contains("server_name: nats2\n"));
        assert!(conf.contains("sync_interval: \"always\""));
        assert!(conf.contains("advertise: \"nats2:6222\"") && conf.contains("client_advertise: \"nats2:4222\""));
        for k in 1..=3 {
            assert!(conf.contains(&format!("nats-route://nats{k}:6222")), "{conf}");
        }
        let cluster = &conf[conf.find("cluster {").unwrap()..];
        assert!(cluster.contains("ca_file: \"/etc/nats/tls/ca.pem\""), "routes verify peers against the CA");
        assert_eq!(client_urls(3), "tls://nats1:4222,tls://nats2:4222,tls://nats3:4222");
        assert_eq!(conf_file("dc", 3), ".nats/dc.nats3.conf");
    }
}
