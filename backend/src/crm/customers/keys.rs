//! The keys customers are found and matched by: normalized names, company names without their
//! legal suffix, pinyin (full and initials), phones in E.164, lower-cased emails, and the search
//! terms the projection indexes. The projection, search and duplicate detection all use these
//! functions, so a value is normalized the same way when it is stored and when it is looked for.

use pinyin::ToPinyin;

/// Namespace of name terms (the name's suffixes, its pinyin and initials).
pub const NAME_TERM: &str = "n:";
/// Namespace of phone terms (national and international digits).
pub const PHONE_TERM: &str = "p:";
/// Namespace of email terms.
pub const EMAIL_TERM: &str = "e:";
/// Separates the term from the document id in a search cursor (`term`, separator, `doc`); no
/// term holds it, so the cursor splits back at its last one.
pub const TERM_SEPARATOR: char = '\u{1}';
/// Most name terms one customer puts into the index.
const MAX_TERMS: usize = 64;
/// Longest normalized name that is indexed.
const MAX_INDEXED_CHARS: usize = 40;

/// Chinese legal-form suffixes that do not tell two companies apart, longest first.
const COMPANY_SUFFIXES: [&str; 7] = [
    "股份有限公司",
    "有限责任公司",
    "集团有限公司",
    "有限公司",
    "分公司",
    "集团",
    "公司",
];

/// Latin legal-form words, stripped only as whole trailing words (so Cisco keeps its `co`).
const LATIN_SUFFIXES: [&str; 12] = [
    "co",
    "ltd",
    "limited",
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "company",
    "llc",
    "gmbh",
    "plc",
    "group",
];

/// Folds full-width ASCII (`ＡＢＣ１２３`) to ASCII and lower-cases it.
fn fold(c: char) -> char {
    let c = match u32::from(c) {
        0xFF01..=0xFF5E => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    };
    c.to_lowercase().next().unwrap_or(c)
}

/// A name as it is compared: full-width folded, lower case, letters and digits only (spaces,
/// punctuation and brackets such as `（北京）` vanish).
pub fn normalize_name(name: &str) -> String {
    name.chars()
        .map(fold)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// A company name without its legal-form suffix (有限公司, Co., Ltd., ...), for the "close
/// name" duplicate check: `星辰科技有限公司` and `星辰科技股份有限公司` share a key.
pub fn company_key(name: &str) -> String {
    let folded: String = name.chars().map(fold).collect();
    let mut words: Vec<&str> = folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    while words.len() > 1 && words.last().is_some_and(|w| LATIN_SUFFIXES.contains(w)) {
        words.pop();
    }
    let mut key = words.concat();
    loop {
        let before = key.len();
        for suffix in COMPANY_SUFFIXES {
            if key.len() > suffix.len() && key.ends_with(suffix) {
                key.truncate(key.len() - suffix.len());
                break;
            }
        }
        if key.len() == before {
            return key;
        }
    }
}

/// The pinyin of a normalized name, one syllable per Chinese character; other characters
/// (Latin letters, digits) come through as they are, grouped into words.
fn syllables(normalized: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut word = String::new();
    for (c, pinyin) in normalized.chars().zip(normalized.to_pinyin()) {
        match pinyin {
            Some(p) => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                out.push(p.plain().to_string());
            }
            None => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The full pinyin and the initials of a name: `张三` gives `zhangsan` and `zs`.
pub fn pinyin_of(name: &str) -> (String, String) {
    let syllables = syllables(&normalize_name(name));
    let full = syllables.concat();
    let initials = syllables.iter().filter_map(|s| s.chars().next()).collect();
    (full, initials)
}

/// A phone number in E.164 (`+8613812345678`), read as a Chinese number unless it says
/// otherwise; `None` when it is not a phone number at all.
pub fn phone_e164(raw: &str) -> Option<String> {
    let parsed = phonenumber::parse(Some(phonenumber::country::Id::CN), raw).ok()?;
    phonenumber::is_valid(&parsed)
        .then(|| parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// The digits a phone is matched by: its E.164 digits and its national number, so `138 1234
/// 5678`, `+86 138-1234-5678` and `008613812345678` all meet. An unparseable number keeps its
/// digits.
pub fn phone_keys(raw: &str) -> Vec<String> {
    match phonenumber::parse(Some(phonenumber::country::Id::CN), raw) {
        Ok(parsed) if phonenumber::is_valid(&parsed) => {
            let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
            let national = parsed.national().value().to_string();
            let mut keys = vec![e164.trim_start_matches('+').to_string(), national];
            keys.dedup();
            keys
        }
        _ => {
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            if digits.is_empty() {
                Vec::new()
            } else {
                vec![digits]
            }
        }
    }
}

/// An email as it is compared.
pub fn email_key(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// What a search string looks for: digits alone (with `+`, spaces, dashes) are a phone, a string
/// with `@` an email, anything else a name.
pub fn search_term(q: &str) -> Option<String> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    if q.contains('@') {
        return Some(format!("{EMAIL_TERM}{}", email_key(q)));
    }
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    if digits.len() >= 3
        && q.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')'))
    {
        // A partial number is searched as typed; a whole one by its national number.
        let national = phonenumber::parse(Some(phonenumber::country::Id::CN), q)
            .ok()
            .filter(phonenumber::is_valid)
            .map(|p| p.national().value().to_string());
        return Some(format!("{PHONE_TERM}{}", national.unwrap_or(digits)));
    }
    let name = normalize_name(q);
    (!name.is_empty()).then(|| format!("{NAME_TERM}{name}"))
}

/// The fields of a customer that its search terms and match keys come from.
pub struct Searchable<'a> {
    /// The name.
    pub name: &'a str,
    /// The customer's own phones and its contacts' phones.
    pub phones: Vec<&'a str>,
    /// The customer's own emails and its contacts' emails.
    pub emails: Vec<&'a str>,
    /// The names of its contacts.
    pub contact_names: Vec<&'a str>,
}

/// The index terms of a customer; a search for a prefix of any of them finds it. Name terms are
/// every suffix of the name starting at a Chinese character or a word, the pinyin from every
/// syllable on, and the initials; so `星辰`, `xingchen` and `xc` all find 北京星辰科技有限公司.
pub fn terms(of: &Searchable<'_>) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    let push_name = |terms: &mut Vec<String>, name: &str| {
        // Word starts are found in the name as written (spaces and punctuation separate Latin
        // words; every Chinese character starts one), then indexed in the normalized name.
        // Suffixes that start inside the legal form (有限公司, Co., Ltd.) are not indexed: they
        // would match half the company.
        let mut chars: Vec<char> = Vec::new();
        let mut starts: Vec<usize> = Vec::new();
        let mut previous_separates = true;
        for c in name.chars().map(fold) {
            if !c.is_alphanumeric() {
                previous_separates = true;
                continue;
            }
            if previous_separates || !c.is_ascii_alphanumeric() {
                starts.push(chars.len());
            }
            previous_separates = !c.is_ascii_alphanumeric();
            chars.push(c);
        }
        chars.truncate(MAX_INDEXED_CHARS);
        let normalized: String = chars.iter().collect();
        if normalized.is_empty() {
            return;
        }
        let meaningful = company_key(&normalized).chars().count().max(1);
        for start in starts.into_iter().filter(|s| *s < meaningful) {
            terms.push(format!(
                "{NAME_TERM}{}",
                chars[start..].iter().collect::<String>()
            ));
        }
        let meaningful_syllables = syllables(&company_key(&normalized)).len().max(1);
        let syllables = syllables(&normalized);
        if syllables.len() > 1 || syllables.first().is_some_and(|s| s != &normalized) {
            for start in 0..syllables.len().min(meaningful_syllables) {
                terms.push(format!("{NAME_TERM}{}", syllables[start..].concat()));
            }
            let initials: String = syllables.iter().filter_map(|s| s.chars().next()).collect();
            terms.push(format!("{NAME_TERM}{initials}"));
        }
    };
    push_name(&mut terms, of.name);
    for name in &of.contact_names {
        push_name(&mut terms, name);
    }
    // Name terms are capped; phone, email and company terms never are (duplicate checks and
    // phone search depend on them).
    terms.truncate(MAX_TERMS);
    let company = company_key(of.name);
    for phone in &of.phones {
        for key in phone_keys(phone) {
            terms.push(format!("{PHONE_TERM}{key}"));
        }
    }
    for email in &of.emails {
        terms.push(format!("{EMAIL_TERM}{}", email_key(email)));
    }
    if !company.is_empty() {
        terms.push(format!("{NAME_TERM}{company}"));
    }
    let mut seen = std::collections::HashSet::new();
    terms.retain(|t| seen.insert(t.clone()));
    terms.sort();
    terms
}

/// A phone number as a non-owner sees it: the first three and last four digits, the rest
/// starred (`138****5678`).
pub fn mask_phone(raw: &str) -> String {
    let digits: Vec<char> = raw.chars().filter(char::is_ascii_digit).collect();
    let national: Vec<char> = match phone_e164(raw).and_then(|e| {
        phonenumber::parse(None, &e)
            .ok()
            .map(|p| p.national().value().to_string())
    }) {
        Some(n) => n.chars().collect(),
        None => digits,
    };
    let n = national.len();
    if n <= 4 {
        return "*".repeat(n.max(4));
    }
    let head = if n >= 11 { 3 } else { (n - 4).min(2) };
    let tail = 4.min(n - head);
    let mut out: String = national[..head].iter().collect();
    out.push_str(&"*".repeat(n - head - tail));
    out.extend(&national[n - tail..]);
    out
}
