//! Client → server messages, parsed with simd-json into typed structs.
//!
//! The input is copied into a per-shard scratch buffer first because simd-json parses in
//! place (it unescapes strings into the input); the typed message borrows from it.
//! Field extraction is by hand on the tape DOM so every mistake gets a precise message
//! ("subscribe: `topic` must be a string") instead of a positional serde error.
use simd_json::prelude::*;
use simd_json::BorrowedValue;
use std::borrow::Cow;

use super::code;

/// A request id to echo back: only integers and short strings are accepted, kept as
/// their JSON text so echoing is a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// `since` of a `subscribe` with recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub epoch: String,
    pub offset: u64,
}

/// One parsed client message.
#[derive(Debug)]
pub enum ClientMsg<'a> {
    Authenticate {
        token: Cow<'a, str>,
        prefix: Option<Cow<'a, str>>,
    },
    Subscribe {
        topic: Cow<'a, str>,
        since: Option<Since>,
    },
    Unsubscribe {
        topic: Cow<'a, str>,
    },
    Publish {
        topic: Cow<'a, str>,
        data: BorrowedValue<'a>,
        ephemeral: bool,
    },
    Ping,
    Custom {
        message_type: Cow<'a, str>,
        payload: BorrowedValue<'a>,
    },
}

/// A message with its optional request id.
#[derive(Debug)]
pub struct Request<'a> {
    pub id: Option<RequestId>,
    pub msg: ClientMsg<'a>,
}

/// Why a client message was refused; sent back as an `error` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: &'static str,
    pub message: String,
    /// The request id, when it could be read before the error.
    pub id: Option<RequestId>,
}

impl ParseError {
    fn new(code: &'static str, message: impl Into<String>, id: Option<RequestId>) -> Self {
        ParseError {
            code,
            message: message.into(),
            id,
        }
    }
}

/// Longest request id accepted (as JSON text).
const MAX_ID_LEN: usize = 64;

/// Parse one client text message. `buf` is modified (simd-json parses in place).
pub fn parse(buf: &mut [u8]) -> Result<Request<'_>, ParseError> {
    let value = simd_json::to_borrowed_value(buf)
        .map_err(|e| ParseError::new(code::BAD_JSON, format!("invalid JSON: {e}"), None))?;
    let BorrowedValue::Object(mut obj) = value else {
        return Err(ParseError::new(
            code::BAD_REQUEST,
            "message must be a JSON object",
            None,
        ));
    };
    let id = match obj.remove("id") {
        None | Some(BorrowedValue::Static(simd_json::StaticNode::Null)) => None,
        Some(v) => Some(request_id(&v)?),
    };
    let ty = match obj.remove("type") {
        Some(BorrowedValue::String(s)) => s,
        Some(_) => {
            return Err(ParseError::new(
                code::BAD_REQUEST,
                "`type` must be a string",
                id,
            ))
        }
        None => return Err(ParseError::new(code::BAD_REQUEST, "missing `type`", id)),
    };
    let msg = match ty.as_ref() {
        "authenticate" => {
            let token =
                take_str(&mut obj, &ty, "token", &id)?.ok_or_else(|| missing(&ty, "token", &id))?;
            let prefix = take_str(&mut obj, &ty, "prefix", &id)?;
            ClientMsg::Authenticate { token, prefix }
        }
        "subscribe" => {
            let topic =
                take_str(&mut obj, &ty, "topic", &id)?.ok_or_else(|| missing(&ty, "topic", &id))?;
            let since = match obj.remove("since") {
                None | Some(BorrowedValue::Static(simd_json::StaticNode::Null)) => None,
                Some(v) => Some(since(&v).ok_or_else(|| {
                    ParseError::new(
                        code::BAD_REQUEST,
                        "subscribe: `since` must be {\"epoch\": string, \"offset\": integer}",
                        id.clone(),
                    )
                })?),
            };
            ClientMsg::Subscribe { topic, since }
        }
        "unsubscribe" => {
            let topic =
                take_str(&mut obj, &ty, "topic", &id)?.ok_or_else(|| missing(&ty, "topic", &id))?;
            ClientMsg::Unsubscribe { topic }
        }
        "publish" => {
            let topic =
                take_str(&mut obj, &ty, "topic", &id)?.ok_or_else(|| missing(&ty, "topic", &id))?;
            let data = obj
                .remove("data")
                .ok_or_else(|| missing(&ty, "data", &id))?;
            let ephemeral = match obj.remove("ephemeral") {
                None => false,
                Some(v) => v.as_bool().ok_or_else(|| {
                    ParseError::new(
                        code::BAD_REQUEST,
                        "publish: `ephemeral` must be a boolean",
                        id.clone(),
                    )
                })?,
            };
            ClientMsg::Publish {
                topic,
                data,
                ephemeral,
            }
        }
        "ping" => ClientMsg::Ping,
        "custom" => {
            let message_type = take_str(&mut obj, &ty, "message_type", &id)?
                .ok_or_else(|| missing(&ty, "message_type", &id))?;
            let payload = obj
                .remove("payload")
                .unwrap_or(BorrowedValue::Static(simd_json::StaticNode::Null));
            ClientMsg::Custom {
                message_type,
                payload,
            }
        }
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(ParseError::new(
                code::UNKNOWN_TYPE,
                format!("unknown message type `{shown}`"),
                id,
            ));
        }
    };
    Ok(Request { id, msg })
}

fn missing(ty: &str, name: &str, id: &Option<RequestId>) -> ParseError {
    ParseError::new(
        code::BAD_REQUEST,
        format!("{ty}: missing `{name}`"),
        id.clone(),
    )
}

fn take_str<'a>(
    obj: &mut simd_json::borrowed::Object<'a>,
    ty: &str,
    name: &str,
    id: &Option<RequestId>,
) -> Result<Option<Cow<'a, str>>, ParseError> {
    match obj.remove(name) {
        Some(BorrowedValue::String(s)) => Ok(Some(s)),
        None | Some(BorrowedValue::Static(simd_json::StaticNode::Null)) => Ok(None),
        Some(_) => Err(ParseError::new(
            code::BAD_REQUEST,
            format!("{ty}: `{name}` must be a string"),
            id.clone(),
        )),
    }
}

fn request_id(v: &BorrowedValue<'_>) -> Result<RequestId, ParseError> {
    let text = match v {
        BorrowedValue::String(s) => serde_json::to_string(s.as_ref()).expect("string serializes"),
        BorrowedValue::Static(simd_json::StaticNode::I64(n)) => n.to_string(),
        BorrowedValue::Static(simd_json::StaticNode::U64(n)) => n.to_string(),
        _ => {
            return Err(ParseError::new(
                code::BAD_REQUEST,
                "`id` must be an integer or a string",
                None,
            ));
        }
    };
    if text.len() > MAX_ID_LEN {
        return Err(ParseError::new(code::BAD_REQUEST, "`id` is too long", None));
    }
    Ok(RequestId(text))
}

fn since(v: &BorrowedValue<'_>) -> Option<Since> {
    let epoch = v.get_str("epoch")?.to_owned();
    let offset = v.get_u64("offset")?;
    Some(Since { epoch, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, ParseError> {
        let mut b = s.as_bytes().to_vec();
        parse(&mut b).map(|r| format!("{:?} {:?}", r.id.map(|i| i.0), r.msg))
    }

    #[test]
    fn parses_each_type() {
        assert!(p(r#"{"type":"subscribe","topic":"chat:1","id":7}"#)
            .unwrap()
            .contains("Subscribe"));
        assert!(p(r#"{"type":"unsubscribe","topic":"chat:1"}"#)
            .unwrap()
            .contains("Unsubscribe"));
        assert!(p(r#"{"type":"publish","topic":"t","data":{"a":[1,2]}}"#)
            .unwrap()
            .contains("Publish"));
        assert!(p(r#"{"type":"ping"}"#).unwrap().contains("Ping"));
        assert!(p(r#"{"type":"authenticate","token":"abc"}"#)
            .unwrap()
            .contains("Authenticate"));
        assert!(p(r#"{"type":"custom","message_type":"echo","payload":1}"#)
            .unwrap()
            .contains("Custom"));
    }

    #[test]
    fn id_is_echoed_as_json_text() {
        let mut b = br#"{"type":"ping","id":"a\"b"}"#.to_vec();
        assert_eq!(parse(&mut b).unwrap().id.unwrap().0, r#""a\"b""#);
        let mut b = br#"{"type":"ping","id":42}"#.to_vec();
        assert_eq!(parse(&mut b).unwrap().id.unwrap().0, "42");
    }

    #[test]
    fn errors_are_precise() {
        let e = p("{").unwrap_err();
        assert_eq!(e.code, code::BAD_JSON);
        let e = p("[1]").unwrap_err();
        assert_eq!(e.code, code::BAD_REQUEST);
        let e = p(r#"{"type":"subscribe","id":3}"#).unwrap_err();
        assert_eq!((e.code, e.id.unwrap().0.as_str()), (code::BAD_REQUEST, "3"));
        assert!(e.message.contains("topic"));
        let e = p(r#"{"type":"subscribe","topic":5}"#).unwrap_err();
        assert!(e.message.contains("must be a string"));
        let e = p(r#"{"type":"nope"}"#).unwrap_err();
        assert_eq!(e.code, code::UNKNOWN_TYPE);
        let e = p(r#"{"type":"ping","id":[1]}"#).unwrap_err();
        assert_eq!(e.code, code::BAD_REQUEST);
        let e = p(r#"{"type":"publish","topic":"t","data":1,"ephemeral":"yes"}"#).unwrap_err();
        assert!(e.message.contains("ephemeral"));
        let e = p(r#"{"type":"subscribe","topic":"t","since":{"epoch":1}}"#).unwrap_err();
        assert!(e.message.contains("since"));
    }

    #[test]
    fn since_parses() {
        let mut b =
            br#"{"type":"subscribe","topic":"t","since":{"epoch":"e1","offset":12}}"#.to_vec();
        let since = match parse(&mut b).unwrap().msg {
            ClientMsg::Subscribe { since, .. } => since,
            m => panic!("{m:?}"),
        };
        assert_eq!(
            since,
            Some(Since {
                epoch: "e1".into(),
                offset: 12
            })
        );
    }
}
