//! An Event a plan asks `apply` to publish: its own module so that every part of the plan
//! (the wait, the drain) can name it without importing the plan itself.

use kube::runtime::events::EventType;

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

impl PlannedEvent {
    pub fn new(type_: EventType, reason: impl Into<String>, note: String) -> Self {
        Self {
            type_,
            reason: reason.into(),
            note,
        }
    }
}
