//! A container's settings as the binaries read them: flags and environment
//! variables.

use k8s_openapi::api::core::v1::Container;

/// `--flag=value` or `--flag value` in `args`.
pub(super) fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&prefix) {
            Some(v)
        } else if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

pub(super) fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// Is the boolean setting `name` of `container` on? Flags read from the
/// environment take `true`/`false`.
pub(super) fn env_flag(container: &Container, name: &str) -> bool {
    env_value(container, name).is_some_and(|v| v == "true")
}
