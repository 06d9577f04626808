//! Every way the server ends a streaming connection, with its WebSocket close code
//! and the reason a client reads. Transports only carry these: a WebSocket sends the
//! code, SSE sends the reason as its last event, GraphQL ends the operation.

/// Why the server ends a connection (or, for SSE and GraphQL, a stream).
#[derive(Debug, Clone, PartialEq)]
pub enum Close {
    /// The token expired and no fresh one came in-band.
    TokenExpired,
    /// A token sent in-band was refused.
    TokenRefused(String),
    /// The client fell further behind than `maxPendingRows`; it resumes from the
    /// last position it received on each subscription (positions are too long for
    /// a close frame, and the client has them).
    TooSlow,
    /// A message waited too long to be read.
    NotReading,
    /// graphql-transport-ws: no `connection_init` in time.
    InitTimeout,
    /// The store failed; the log has the details under this correlation id.
    Internal(String),
    /// The pod is going away (a rollout, a rebuilt definition taking over, a scale
    /// down): reconnect, through the Service, to another pod and resume.
    ShuttingDown,
}

/// Close codes. 4xxx are Facet's own; 4401/4408 are what graphql-ws clients know.
pub const TOKEN: u16 = 4401;
pub const TOO_SLOW: u16 = 4008;
pub const INIT_TIMEOUT: u16 = 4408;
pub const INTERNAL: u16 = 1011;
/// RFC 6455 "going away": clients reconnect at once.
pub const GOING_AWAY: u16 = 1001;

/// How long a client may take to read one message.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a graphql-transport-ws client has to send `connection_init`.
pub const INIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

impl Close {
    pub fn code(&self) -> u16 {
        match self {
            Close::TokenExpired | Close::TokenRefused(_) => TOKEN,
            Close::TooSlow | Close::NotReading => TOO_SLOW,
            Close::InitTimeout => INIT_TIMEOUT,
            Close::Internal(_) => INTERNAL,
            Close::ShuttingDown => GOING_AWAY,
        }
    }

    /// The reason, short enough for a WebSocket close frame (123 bytes).
    pub fn reason(&self) -> String {
        let reason = match self {
            Close::TokenExpired => {
                "token expired: send a fresh token in-band before it does, or reconnect".to_string()
            }
            Close::TokenRefused(why) => why.clone(),
            Close::TooSlow => {
                "too slow: resume with since set to the last position received".into()
            }
            Close::NotReading => "too slow: a message waited too long to be read".into(),
            Close::InitTimeout => "no connection_init within 3 s".into(),
            Close::Internal(id) => format!("internal error (correlation id {id})"),
            Close::ShuttingDown => {
                "shutting down: reconnect and resume with since set to the last position received"
                    .into()
            }
        };
        truncate(reason)
    }

    /// A store error: logged with a correlation id that the client is given.
    pub fn internal(error: impl std::fmt::Display) -> Close {
        Close::Internal(crate::logging::log_internal(error))
    }
}

/// Close reasons must fit in a control frame.
pub fn truncate(mut reason: String) -> String {
    if reason.len() > 120 {
        let mut cut = 120;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}
