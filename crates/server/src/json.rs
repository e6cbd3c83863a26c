//! Small JSON helpers shared by the collector and the WebSocket protocol.

use serde_json::Value;

/// The JSON type of `value`, for error messages ("found an array").
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
