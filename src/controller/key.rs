//! A WPA's identity inside the controller: namespace and name, formatted once.

use std::fmt;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::crd::WorkerPodAutoScaler;

/// Namespace and name of one WPA. The queue registry knows subscribers by a string id; this
/// type is the one place that formats it and reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WpaKey {
    namespace: String,
    name: String,
    /// `namespace/name`, kept to hand to the registry without formatting each time.
    id: String,
}

impl WpaKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = namespace.into();
        let name = name.into();
        let id = format!("{namespace}/{name}");
        Self {
            namespace,
            name,
            id,
        }
    }

    pub fn of(wpa: &WorkerPodAutoScaler) -> Self {
        Self::new(wpa.namespace().unwrap_or_default(), wpa.name_any())
    }

    /// Reads back an id made by [`WpaKey::id`]; `None` for anything else.
    pub fn from_id(id: &str) -> Option<Self> {
        let (namespace, name) = id.split_once('/')?;
        (!name.is_empty()).then(|| Self::new(namespace, name))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subscriber id in the queue registry.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn object_ref(&self) -> ObjectRef<WorkerPodAutoScaler> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl fmt::Display for WpaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips() {
        let key = WpaKey::new("edx", "lms-worker");
        assert_eq!(key.id(), "edx/lms-worker");
        assert_eq!(WpaKey::from_id(key.id()), Some(key.clone()));
        assert_eq!(key.to_string(), "edx/lms-worker");
        assert_eq!(key.object_ref(), ObjectRef::new("lms-worker").within("edx"));
    }

    #[test]
    fn ids_without_a_name_are_refused() {
        assert_eq!(WpaKey::from_id("no-slash"), None);
        assert_eq!(WpaKey::from_id("ns/"), None);
    }
}
