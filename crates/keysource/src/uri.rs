//! PKCS#11 URIs (RFC 7512): which token, and which key on it.
//!
//! `pkcs11:token=grantkeeper;object=master-key?module-path=/usr/lib/softhsm/libsofthsm2.so`.
//! Path attributes select the token (`token`, `manufacturer`, `model`, `serial`, `slot-id`)
//! and the key (`object`, its label; `id`, its CKA_ID; `type`, which must be `secret-key` if
//! given). Query attributes name the module (`module-path`) and where the PIN is
//! (`pin-source=file:/path`). Values are percent-decoded. `pin-value` is refused: a URI is
//! shown in `keys list` and in messages, a PIN must never be. Vendor attributes (`x-...`) are
//! ignored; any other unknown attribute is an error, as the RFC asks.

use std::path::PathBuf;

/// A parsed PKCS#11 URI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub slot_id: Option<u64>,
    /// The key's label (CKA_LABEL).
    pub object: Option<String>,
    /// The key's CKA_ID.
    pub id: Option<Vec<u8>>,
    pub module_path: Option<PathBuf>,
    /// A file holding the PIN (`pin-source=file:...` or a path).
    pub pin_source: Option<PathBuf>,
}

fn decode(value: &str, what: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{what} has a broken percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn text(value: &str, what: &str) -> Result<String, String> {
    String::from_utf8(decode(value, what)?).map_err(|_| format!("{what} is not UTF-8"))
}

/// Percent-encodes what RFC 7512 does not allow as is in a path attribute's value.
fn encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~:[]@!$'()*+,=&".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Pkcs11Uri {
    /// Parses `text`; the error says what is wrong, without quoting values.
    pub fn parse(uri_text: &str) -> Result<Pkcs11Uri, String> {
        let rest = uri_text
            .strip_prefix("pkcs11:")
            .ok_or("a PKCS#11 URI starts with pkcs11:")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or("each attribute of a PKCS#11 URI is name=value")?;
            let slot = |current: &mut Option<String>| -> Result<(), String> {
                if current.is_some() {
                    return Err(format!("the attribute {name} is given twice"));
                }
                *current = Some(text(value, name)?);
                Ok(())
            };
            match name {
                "token" => slot(&mut uri.token)?,
                "manufacturer" => slot(&mut uri.manufacturer)?,
                "model" => slot(&mut uri.model)?,
                "serial" => slot(&mut uri.serial)?,
                "object" => slot(&mut uri.object)?,
                "id" => uri.id = Some(decode(value, name)?),
                "slot-id" => {
                    uri.slot_id = Some(
                        text(value, name)?
                            .parse()
                            .map_err(|_| "slot-id must be a number".to_owned())?,
                    );
                }
                "type" => {
                    if text(value, name)? != "secret-key" {
                        return Err("the key must be of type secret-key (an AES key)".into());
                    }
                }
                // Library and slot descriptions select nothing more here.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-manufacturer"
                | "slot-description" => {}
                _ if name.starts_with("x-") => {}
                _ => return Err(format!("unknown PKCS#11 URI attribute {name}")),
            }
        }
        for attribute in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or("each query attribute of a PKCS#11 URI is name=value")?;
            match name {
                "module-path" => uri.module_path = Some(PathBuf::from(text(value, name)?)),
                "pin-source" => {
                    let source = text(value, name)?;
                    let path = source.strip_prefix("file:").unwrap_or(&source);
                    // file:///etc/pin and file:/etc/pin alike.
                    let path = path.strip_prefix("//").unwrap_or(path);
                    uri.pin_source = Some(PathBuf::from(path));
                }
                "pin-value" => {
                    return Err(
                        "pin-value is refused: keep the PIN in a file (vault.pkcs11_pin_file or \
                         pin-source) or in GRANTKEEPER_VAULT__PKCS11_PIN"
                            .into(),
                    );
                }
                "module-name" => {}
                _ if name.starts_with("x-") => {}
                _ => return Err(format!("unknown PKCS#11 URI query attribute {name}")),
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err("the URI must name the key: object=LABEL (or id=...)".into());
        }
        Ok(uri)
    }

    /// The URI's path attributes in a fixed order, without the query: which token and key, for
    /// `keys list`. Two spellings of one key give one label.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name}={}", encode(v.as_bytes())));
            }
        }
        if let Some(slot) = self.slot_id {
            parts.push(format!("slot-id={slot}"));
        }
        if let Some(object) = &self.object {
            parts.push(format!("object={}", encode(object.as_bytes())));
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02X}")).collect();
            parts.push(format!("id={hex}"));
        }
        format!("pkcs11:{}", parts.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_attributes() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=grant%20keeper;object=master;type=secret-key;id=%01%02\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/gk/pin",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("grant keeper"));
        assert_eq!(uri.object.as_deref(), Some("master"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(
            uri.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(
            uri.pin_source.as_deref(),
            Some(std::path::Path::new("/etc/gk/pin"))
        );
        assert_eq!(
            uri.label(),
            "pkcs11:token=grant%20keeper;object=master;id=%01%02"
        );
        // Another order and spelling of the same key: the same label.
        let again =
            Pkcs11Uri::parse("pkcs11:id=%01%02;object=mas%74er;token=grant%20keeper").unwrap();
        assert_eq!(again.label(), uri.label());
    }

    #[test]
    fn what_is_refused() {
        for (bad, says) in [
            ("token=a;object=b", "starts with pkcs11:"),
            ("pkcs11:token=a", "must name the key"),
            (
                "pkcs11:token=a;object=b;colour=red",
                "unknown PKCS#11 URI attribute colour",
            ),
            ("pkcs11:object=b;type=private", "secret-key"),
            ("pkcs11:object=b?pin-value=1234", "pin-value is refused"),
            ("pkcs11:object=%zz", "percent-encoding"),
            ("pkcs11:object=b;object=c", "given twice"),
            ("pkcs11:object=b;slot-id=x", "slot-id"),
        ] {
            let e = Pkcs11Uri::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("1234"));
        }
        assert!(Pkcs11Uri::parse("pkcs11:object=b;x-vendor=1?x-q=2").is_ok());
    }
}
