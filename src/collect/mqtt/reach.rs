//! `sitewatch check --connect` for `[mqtt]`: connect with the config's credentials and TLS,
//! subscribe to every filter the subscriptions need, and disconnect. It uses its own client
//! id and a clean session, so it never takes over the running service's persistent session,
//! and no share group, so it takes no message away from running instances.

use rumqttc::{AsyncClient, Event, Outgoing, Packet, SubscribeReasonCode};

use super::config::MqttConfig;
use super::subscriber::{mqtt_options, subscribe_request, MqttError};

/// Connects, subscribes and disconnects; `Ok` is the detail for the check table (how many
/// filters the broker accepted). The caller bounds the time.
pub async fn reach(cfg: &MqttConfig) -> Result<String, MqttError> {
    let decoders = cfg.compile()?;
    let subscribe = subscribe_request(&decoders, None, None);
    let base = if cfg.client_id.is_empty() {
        "sitewatch"
    } else {
        cfg.client_id.as_str()
    };
    let client_id = format!("{base}-check-{}", std::process::id());
    let options = mqtt_options(cfg, &client_id, true, false, &subscribe)?;
    let filters: Vec<String> = subscribe.filters.iter().map(|f| f.path.clone()).collect();
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let connect_error = |source| MqttError::Connect {
        host: cfg.host.clone(),
        port: cfg.port,
        source: Box::new(source),
    };
    loop {
        match eventloop.poll().await.map_err(connect_error)? {
            Event::Incoming(Packet::ConnAck(_)) => {
                eventloop
                    .pending
                    .push_back(rumqttc::Request::Subscribe(subscribe.clone()));
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused: Vec<&str> = ack
                    .return_codes
                    .iter()
                    .zip(&filters)
                    .filter(|(code, _)| matches!(code, SubscribeReasonCode::Failure))
                    .map(|(_, f)| f.as_str())
                    .collect();
                let _ = client.try_disconnect();
                // Let the DISCONNECT go out; the broker forgets the clean session either way.
                while let Ok(ev) = eventloop.poll().await {
                    if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
                if !refused.is_empty() {
                    return Err(MqttError::SubscribeRefused {
                        host: cfg.host.clone(),
                        port: cfg.port,
                        filters: refused.join(", "),
                    });
                }
                return Ok(format!("connected, subscribed to {}", filters.join(", ")));
            }
            _ => {}
        }
    }
}
