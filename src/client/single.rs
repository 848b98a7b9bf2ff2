//! Course exercise 5: one bet from the environment, sent on its own.

use super::auth;
use super::{AgencyConnection, Backoff, ClientError};
use crate::bet::Bet;
use crate::config::ClientConfig;
use crate::net::{Request, Response};
use slog::{info, Logger};
use tokio_util::sync::CancellationToken;

/// Course exercise 5: one bet from `NOMBRE`, `APELLIDO`, `DOCUMENTO`, `NACIMIENTO`, `NUMERO`.
pub fn bet_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Bet>, ClientError> {
    const VARS: [&str; 5] = ["NOMBRE", "APELLIDO", "DOCUMENTO", "NACIMIENTO", "NUMERO"];
    let values: Vec<Option<String>> = VARS.iter().map(|v| env(v)).collect();
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let missing: Vec<&str> = VARS.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
    if !missing.is_empty() {
        return Err(ClientError::BadEnvBet(format!("missing {}", missing.join(", "))));
    }
    let v: Vec<String> = values.into_iter().flatten().collect();
    Bet::from_fields(&v[0], &v[1], v[2].trim(), v[3].trim(), v[4].trim())
        .map(Some)
        .map_err(|e| ClientError::BadEnvBet(e.to_string()))
}

/// Sends one bet and waits for its ack.
pub async fn send_single_bet(
    cfg: &ClientConfig,
    bet: Bet,
    log: &Logger,
    cancel: &CancellationToken,
) -> Result<(), ClientError> {
    // Only the connection is retried: a resent bet without an index could be stored twice.
    let mut backoff = Backoff::new(cfg.retry_initial, cfg.retry_max, cfg.retry_attempts);
    let mut conn = loop {
        match AgencyConnection::connect(
            super::run::address_for_attempt(&cfg.server_address, 0),
            cfg.tls.as_ref(),
            cancel,
        )
        .await
        {
            Ok(conn) => break conn,
            Err(e) => backoff.retry_or_fail(e, log, cancel).await?,
        }
    };
    if let Some(key) = &cfg.auth_key {
        if let Err(e) = auth::authenticate(&mut conn, cfg.id, key, log, cancel).await {
            conn.close().await;
            return Err(e);
        }
    }
    let (document, number) = (bet.document.clone(), bet.number);
    conn.send(&Request::Bet { agency: cfg.id, bet: bet.into() }).await?;
    let result = match conn.recv_in_flight(cancel).await {
        Ok(Response::Ack { .. }) => {
            info!(log, "action: apuesta_enviada | result: success"; "dni" => &document, "numero" => number);
            Ok(())
        }
        Ok(other) => Err(ClientError::Unexpected(format!("{other:?} instead of an ack"))),
        Err(e) => Err(e),
    };
    conn.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn single_bet_env_needs_all_five_vars() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            let m: HashMap<&str, &str> = pairs.iter().copied().collect();
            move |k: &str| m.get(k).map(|v| v.to_string())
        };
        assert!(bet_from_env(&env(&[])).unwrap().is_none());
        let err = bet_from_env(&env(&[("NOMBRE", "Ana")])).unwrap_err().to_string();
        assert!(err.contains("APELLIDO") && err.contains("NUMERO"), "{err}");
        static ALL: [(&str, &str); 5] = [
            ("NOMBRE", "Ana"),
            ("APELLIDO", "Pérez"),
            ("DOCUMENTO", "00000042"),
            ("NACIMIENTO", "1990-01-01"),
            ("NUMERO", "7574"),
        ];
        let bet = bet_from_env(&env(&ALL)).unwrap().unwrap();
        assert_eq!(bet.document, "00000042");
    }
}
