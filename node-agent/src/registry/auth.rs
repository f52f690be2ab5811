//! Registry credentials for pushes: the shared `dockerconfigjson` reader
//! (`dcs_support::registry_credentials`), its errors as the agent's.

use std::path::Path;

pub use dcs_support::registry_credentials::Credentials;

use super::RegistryError;

/// The credentials for `registry` (`host[:port]`) in the file, if any.
pub fn load_credentials(file: &Path, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    dcs_support::registry_credentials::load_credentials(file, registry).map_err(|e| {
        RegistryError::Credentials {
            path: e.path,
            reason: e.reason,
        }
    })
}
