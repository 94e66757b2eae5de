//! Parsing of identity fields: login names, phone numbers, time zones, names, passwords.
//! Each function returns the normalized value or a message for a 422.

/// An email address, trimmed and lower-cased.
pub fn normalize_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace)
        && email.matches('@').count() == 1;
    if valid {
        Ok(email)
    } else {
        Err("is not an email address".into())
    }
}

/// A phone number in E.164 form; numbers without a country code are read as Chinese.
pub fn normalize_phone(raw: &str) -> Result<String, String> {
    let number = phonenumber::parse(Some(phonenumber::country::Id::CN), raw.trim())
        .map_err(|_| "is not a phone number".to_string())?;
    if !number.is_valid() {
        return Err("is not a valid phone number".into());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// A login as typed: an email if it has an `@`, otherwise a phone number.
pub fn normalize_login(raw: &str) -> Option<String> {
    if raw.contains('@') {
        normalize_email(raw).ok()
    } else {
        normalize_phone(raw).ok()
    }
}

/// An IANA time zone name such as `Asia/Shanghai`.
pub fn time_zone(raw: &str) -> Result<String, String> {
    raw.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| "is not an IANA time zone such as Asia/Shanghai".into())
}

/// A display name: trimmed, 1 to 100 characters.
pub fn display_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    match name.chars().count() {
        0 => Err("must not be empty".into()),
        n if n > 100 => Err("must be at most 100 characters".into()),
        _ if name.chars().any(char::is_control) => {
            Err("must not contain control characters".into())
        }
        _ => Ok(name.to_string()),
    }
}

/// A new password: long enough, not absurdly long.
pub fn password(raw: &str, min_length: usize) -> Result<(), String> {
    let length = raw.chars().count();
    if length < min_length {
        Err(format!("must be at least {min_length} characters"))
    } else if raw.len() > 1024 {
        Err("must be at most 1024 bytes".into())
    } else {
        Ok(())
    }
}
