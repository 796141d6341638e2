//! Static bearer tokens: upstream's `--token-auth-file`, a CSV file of
//! `token,user,uid[,"group1,group2,…"]` records.

use std::collections::HashMap;
use std::path::Path;

use super::UserInfo;
use crate::error::{Error, Result};

/// Tokens read from a token file.
#[derive(Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, UserInfo>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl StaticTokens {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|message| Error::TokenFile {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses token file contents like upstream: records of at least 3 fields (a record with
    /// fewer is an error), leading spaces of fields trimmed, records with an empty token
    /// skipped, a later duplicate token replacing an earlier one, the optional fourth field
    /// split on commas into groups.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut tokens = HashMap::new();
        let mut record_num = 0usize;
        for (line_no, record) in parse_csv(text)? {
            if record.len() < 3 {
                return Err(format!(
                    "must have at least 3 columns (token, user name, user uid), found {} on line {line_no}",
                    record.len()
                ));
            }
            record_num += 1;
            if record[0].is_empty() {
                tracing::warn!(record = record_num, "empty token in token file");
                continue;
            }
            let mut user = UserInfo {
                name: record[1].clone(),
                uid: record[2].clone(),
                ..Default::default()
            };
            if let Some(groups) = record.get(3) {
                user.groups = groups.split(',').map(str::to_string).collect();
            }
            user.add_authenticated_group();
            if tokens.insert(record[0].clone(), user).is_some() {
                tracing::warn!(record = record_num, "duplicate token in token file");
            }
        }
        Ok(StaticTokens { tokens })
    }

    /// The user a token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.tokens.get(token).cloned()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A small RFC 4180 reader with Go `encoding/csv` behaviour for what token files use:
/// quoted fields with `""` escapes (spanning lines), leading spaces trimmed, blank lines
/// skipped. Returns (1-based line of the record's start, fields).
fn parse_csv(text: &str) -> std::result::Result<Vec<(usize, Vec<String>)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    loop {
        // Skip blank lines.
        while let Some(&c) = chars.peek() {
            if c == '\n' {
                line += 1;
                chars.next();
            } else if c == '\r' {
                chars.next();
            } else {
                break;
            }
        }
        if chars.peek().is_none() {
            break;
        }
        let start_line = line;
        let mut record = Vec::new();
        loop {
            // One field.
            while chars.peek() == Some(&' ') || chars.peek() == Some(&'\t') {
                chars.next();
            }
            let mut field = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!(
                                "unterminated quoted field starting on line {start_line}"
                            ));
                        }
                        Some('"') => {
                            if chars.peek() == Some(&'"') {
                                chars.next();
                                field.push('"');
                            } else {
                                break;
                            }
                        }
                        Some('\n') => {
                            line += 1;
                            field.push('\n');
                        }
                        Some(c) => field.push(c),
                    }
                }
                match chars.peek() {
                    None | Some(',') | Some('\n') | Some('\r') => {}
                    Some(_) => {
                        return Err(format!(
                            "extraneous character after quoted field on line {line}"
                        ));
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '\n' || c == '\r' {
                        break;
                    }
                    if c == '"' {
                        return Err(format!("bare \" in non-quoted field on line {line}"));
                    }
                    field.push(c);
                    chars.next();
                }
            }
            record.push(field);
            match chars.next() {
                Some(',') => continue,
                Some('\r') => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    line += 1;
                    break;
                }
                Some('\n') => {
                    line += 1;
                    break;
                }
                None => break,
                Some(_) => {}
            }
        }
        out.push((start_line, record));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_format() {
        let text = "abc,alice,1\n\n  def , bob,2,\"system:masters,dev\"\r\n,empty,3\nabc,carol,4\n";
        let t = StaticTokens::parse(text).unwrap();
        assert_eq!(t.len(), 2);
        let carol = t.authenticate("abc").unwrap();
        assert_eq!(carol.name, "carol");
        assert_eq!(carol.uid, "4");
        assert_eq!(carol.groups, vec!["system:authenticated"]);
        let bob = t.authenticate("def ").unwrap();
        assert_eq!(bob.name, "bob");
        assert_eq!(
            bob.groups,
            vec!["system:masters", "dev", "system:authenticated"]
        );
        assert!(t.authenticate("def").is_none());
        assert!(t.authenticate("").is_none());
    }

    #[test]
    fn rejects_malformed() {
        assert!(StaticTokens::parse("abc,alice\n").is_err());
        assert!(StaticTokens::parse("abc,\"alice,1\n").is_err());
        assert!(StaticTokens::parse("a\"bc,alice,1\n").is_err());
        assert!(StaticTokens::parse("\"abc\"x,alice,1\n").is_err());
        assert!(StaticTokens::parse("").unwrap().is_empty());
        // Quoted token with escaped quotes.
        let t = StaticTokens::parse("\"a\"\"b\",u,1").unwrap();
        assert_eq!(t.authenticate("a\"b").unwrap().name, "u");
    }
}
