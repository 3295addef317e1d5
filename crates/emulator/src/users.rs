//! Emulated Google accounts. Any email is an account; everything else about it (the stable
//! `sub`, the names, the picture) is derived from the email, so it is the same in every run and
//! after every restart without being stored.

use crate::util;

/// The accounts the consent page offers without typing.
pub(crate) const TEST_USERS: [&str; 3] =
    ["alice@example.com", "bob@example.com", "carol@example.com"];

/// Emails compare case-insensitively; the emulator keys accounts by the lowercase form.
pub(crate) fn normalise_email(email: &str) -> Option<String> {
    let e = email.trim().to_ascii_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.len() <= 254
        && !e.contains(char::is_whitespace)
        && !domain.contains('@');
    ok.then_some(e)
}

/// The 21-digit Google account id of an email, as stable as the email itself.
pub(crate) fn sub_for(email: &str) -> String {
    let digest = util::sha256(format!("grantkeeper-emulator/sub/{email}").as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
    let n = u128::from_be_bytes(first) % 100_000_000_000_000_000_000u128;
    format!("1{n:020}")
}

pub(crate) struct Profile {
    pub(crate) sub: String,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) given_name: String,
    pub(crate) family_name: String,
    pub(crate) picture: String,
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Profile {
    /// `alice.smith@example.com` is Alice Smith; `bob@example.com` is Bob Example.
    pub(crate) fn for_email(email: &str, base: &str) -> Profile {
        let (local, domain) = email.split_once('@').unwrap_or((email, "example.com"));
        let mut parts = local
            .split(['.', '_', '-', '+'])
            .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
        let given_name = capitalise(parts.next().unwrap_or("User"));
        let family_name = capitalise(
            parts
                .next()
                .unwrap_or_else(|| domain.split('.').next().unwrap_or("User")),
        );
        let sub = sub_for(email);
        Profile {
            name: format!("{given_name} {family_name}"),
            picture: format!("{base}/avatar/{sub}"),
            sub,
            email: email.to_owned(),
            given_name,
            family_name,
        }
    }
}

/// A small SVG avatar: the picture claim points here, so no outside host is ever involved.
pub(crate) fn avatar_svg(sub: &str) -> String {
    let digest = util::sha256(sub.as_bytes());
    let hue = u32::from(digest.first().copied().unwrap_or(0)) * 360 / 256;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"96\" height=\"96\" viewBox=\"0 0 96 96\">\
         <rect width=\"96\" height=\"96\" rx=\"48\" fill=\"hsl({hue},55%,45%)\"/>\
         <circle cx=\"48\" cy=\"38\" r=\"16\" fill=\"#fff\"/>\
         <ellipse cx=\"48\" cy=\"80\" rx=\"28\" ry=\"20\" fill=\"#fff\"/></svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subs_are_stable_21_digit_ids() {
        let a = sub_for("alice@example.com");
        assert_eq!(a, sub_for("alice@example.com"));
        assert_ne!(a, sub_for("bob@example.com"));
        assert_eq!(a.len(), 21);
        assert!(a.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn every_sub_gets_an_avatar() {
        // Enough subs that the first digest byte takes its high values too.
        for i in 0..2000 {
            let svg = avatar_svg(&sub_for(&format!("user{i}@example.com")));
            assert!(svg.starts_with("<svg") && svg.contains("hsl("));
        }
    }

    #[test]
    fn names_come_from_the_email() {
        let p = Profile::for_email("alice.smith@example.com", "http://e");
        assert_eq!(p.name, "Alice Smith");
        let p = Profile::for_email("bob@example.com", "http://e");
        assert_eq!(
            (p.given_name.as_str(), p.family_name.as_str()),
            ("Bob", "Example")
        );
        assert_eq!(
            normalise_email(" Bob@Example.COM "),
            Some("bob@example.com".into())
        );
        assert_eq!(normalise_email("nope"), None);
    }
}
