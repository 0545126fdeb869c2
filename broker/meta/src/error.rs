//! Why a submitted resource was refused.

/// A submitted resource that is not valid. The message names the field so the client knows
/// what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The body is not the JSON shape expected (unknown field, wrong type…).
    #[error("invalid body at '{path}': {message}")]
    Body {
        /// Where in the body (`spec.filters[0]`), `.` for the whole body.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// A field has an invalid value.
    #[error("invalid field '{field}': {message}")]
    Field {
        /// The field, e.g. `spec.subscriber.uri`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ValidationError {
    /// An invalid field value.
    pub fn field(field: &str, message: String) -> ValidationError {
        ValidationError::Field { field: field.to_owned(), message }
    }
}
