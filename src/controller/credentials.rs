//! Reading a WPA's broker credentials from the Secret it references. Values never leave
//! this module except inside [`Credentials`], whose Debug output is redacted.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;

use super::problem::{Problem, SECRET_KEY_MISSING, SECRET_NOT_FOUND, SECRET_UNREADABLE};
use crate::crd::CredentialsSecretRef;
use crate::queue::Credentials;

/// The credentials a WPA references, or none when it references no Secret.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    reference: Option<&CredentialsSecretRef>,
) -> Result<Credentials, Problem> {
    let Some(reference) = reference else {
        return Ok(Credentials::default());
    };
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&reference.name)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 404 => Problem::new(
                SECRET_NOT_FOUND,
                format!(
                    "Secret {} not found in namespace {namespace}",
                    reference.name
                ),
            ),
            other => Problem::new(
                SECRET_UNREADABLE,
                format!(
                    "cannot read Secret {}: {}",
                    reference.name,
                    short_kube_error(&other)
                ),
            ),
        })?;
    from_secret(&secret, reference)
}

/// The credentials held by `secret` under the keys `reference` names.
fn from_secret(secret: &Secret, reference: &CredentialsSecretRef) -> Result<Credentials, Problem> {
    let read = |key: &str| -> Result<Option<String>, Problem> {
        match secret.data.as_ref().and_then(|d| d.get(key)) {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.0.clone()).map(Some).map_err(|_| {
                Problem::new(
                    SECRET_UNREADABLE,
                    format!("key {key} of Secret {} is not UTF-8", reference.name),
                )
            }),
        }
    };
    // A key the WPA names explicitly must exist: silently connecting without it would
    // only surface later as a confusing authentication failure.
    let named = [
        &reference.username_key,
        &reference.password_key,
        &reference.authorization_key,
    ];
    if let Some(key) = named
        .into_iter()
        .flatten()
        .find(|key| secret.data.as_ref().is_none_or(|d| !d.contains_key(*key)))
    {
        return Err(Problem::new(
            SECRET_KEY_MISSING,
            format!("Secret {} has no key {key}", reference.name),
        ));
    }
    let credentials = Credentials {
        username: read(reference.username_key())?,
        password: read(reference.password_key())?,
        authorization: read(reference.authorization_key())?,
    };
    if credentials.username.is_none()
        && credentials.password.is_none()
        && credentials.authorization.is_none()
    {
        return Err(Problem::new(
            SECRET_KEY_MISSING,
            format!(
                "Secret {} has none of the keys {}, {} or {}",
                reference.name,
                reference.username_key(),
                reference.password_key(),
                reference.authorization_key()
            ),
        ));
    }
    Ok(credentials)
}

/// kube errors can embed request bodies; keep just the status line.
fn short_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        _ => "request failed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(data: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn reference(password_key: Option<&str>) -> CredentialsSecretRef {
        CredentialsSecretRef {
            name: "broker".to_string(),
            username_key: None,
            password_key: password_key.map(str::to_string),
            authorization_key: None,
        }
    }

    #[test]
    fn reads_the_default_keys() {
        let creds = from_secret(
            &secret(&[("username", b"u"), ("password", b"p")]),
            &reference(None),
        )
        .expect("credentials");
        assert_eq!(creds.username.as_deref(), Some("u"));
        assert_eq!(creds.password.as_deref(), Some("p"));
    }

    #[test]
    fn a_named_key_must_exist() {
        let problem = from_secret(&secret(&[("password", b"p")]), &reference(Some("pw")))
            .expect_err("missing key");
        assert_eq!(problem.reason, SECRET_KEY_MISSING);
        assert!(problem.message.contains("no key pw"), "{}", problem.message);
    }

    #[test]
    fn a_secret_without_any_key_is_refused() {
        let problem =
            from_secret(&secret(&[("other", b"x")]), &reference(None)).expect_err("no keys");
        assert_eq!(problem.reason, SECRET_KEY_MISSING);
    }

    #[test]
    fn values_that_are_not_utf8_are_refused_without_echoing_them() {
        let problem = from_secret(&secret(&[("password", &[0xff, 0xfe])]), &reference(None))
            .expect_err("not UTF-8");
        assert_eq!(problem.reason, SECRET_UNREADABLE);
        assert!(!problem.message.contains('\u{fffd}'));
    }
}
