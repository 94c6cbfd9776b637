//! A verified token's claims as authorization sees them: the request principal
//! (`iss/sub`), audiences, presenter (`azp`), and every claim flattened to its path and
//! values, so that `request.auth.claims[a][b]` finds nested claims and a list claim matches
//! when any element does. Also the claim values copied to headers (`outputClaimToHeaders`).

use serde_json::{Map, Value};

/// Claims whose string value is a space-separated list, whatever the rule says (Istio's
/// default `spaceDelimitedClaims`).
const SPACE_DELIMITED: [&str; 2] = ["scope", "permission"];

/// How deep nested claims are followed.
const MAX_DEPTH: usize = 8;

/// A claim's path and its values.
pub type Claim = (Vec<String>, Vec<String>);

/// `ISSUER/SUBJECT`, Istio's request principal.
pub fn principal(claims: &Map<String, Value>) -> String {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    format!("{}/{}", text("iss"), text("sub"))
}

/// The token's `aud`: one string or a list of them.
pub fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The token's `azp`.
pub fn presenter(claims: &Map<String, Value>) -> Option<String> {
    claims.get("azp").and_then(Value::as_str).map(str::to_owned)
}

/// Every claim with a value, by path. Scalars become their text; a list gives each scalar
/// element; an object's members are claims one level down. A space-delimited claim's string
/// also gives each word.
pub fn flatten(claims: &Map<String, Value>, space_delimited: &[String]) -> Vec<Claim> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    flatten_into(claims, space_delimited, &mut path, &mut out);
    out
}

fn flatten_into(
    object: &Map<String, Value>,
    space_delimited: &[String],
    path: &mut Vec<String>,
    out: &mut Vec<Claim>,
) {
    if path.len() >= MAX_DEPTH {
        return;
    }
    for (name, value) in object {
        path.push(name.clone());
        let mut values = Vec::new();
        match value {
            Value::Object(members) => flatten_into(members, space_delimited, path, out),
            Value::Array(list) => values.extend(list.iter().filter_map(scalar)),
            other => {
                if let Some(text) = scalar(other) {
                    let split = path.len() == 1
                        && (SPACE_DELIMITED.contains(&name.as_str())
                            || space_delimited.iter().any(|c| c == name));
                    if split && text.contains(' ') {
                        values.extend(text.split(' ').filter(|w| !w.is_empty()).map(str::to_owned));
                    }
                    values.push(text);
                }
            }
        }
        if !values.is_empty() {
            out.push((path.clone(), values));
        }
        path.pop();
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The value `outputClaimToHeaders` copies: the claim at `path` (`a.b` for nested claims)
/// when it is a string, an integer or a boolean.
pub fn header_value(claims: &Map<String, Value>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    fn values<'c>(flat: &'c [Claim], path: &[&str]) -> Option<&'c [String]> {
        flat.iter()
            .find(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn principal_is_issuer_slash_subject() {
        let c = claims(r#"{"iss":"https://idp.example.com","sub":"alice"}"#);
        assert_eq!(principal(&c), "https://idp.example.com/alice");
        assert_eq!(principal(&claims(r#"{"iss":"idp"}"#)), "idp/");
    }

    #[test]
    fn audiences_and_presenter() {
        assert_eq!(audiences(&claims(r#"{"aud":"a"}"#)), ["a"]);
        assert_eq!(audiences(&claims(r#"{"aud":["a","b"]}"#)), ["a", "b"]);
        assert!(audiences(&claims(r#"{}"#)).is_empty());
        assert_eq!(
            presenter(&claims(r#"{"azp":"web"}"#)).as_deref(),
            Some("web")
        );
    }

    #[test]
    fn claims_flatten_with_lists_nesting_and_space_delimited_words() {
        let c = claims(
            r#"{"groups":["dev","ops"],"org":{"team":"payments","level":3},
                "scope":"read write","roles":"a b","admin":true,"n":null}"#,
        );
        let flat = flatten(&c, &["roles".to_owned()]);
        assert_eq!(
            values(&flat, &["groups"]),
            Some(&["dev".to_owned(), "ops".to_owned()][..])
        );
        assert_eq!(
            values(&flat, &["org", "team"]),
            Some(&["payments".to_owned()][..])
        );
        assert_eq!(
            values(&flat, &["org", "level"]),
            Some(&["3".to_owned()][..])
        );
        assert_eq!(values(&flat, &["admin"]), Some(&["true".to_owned()][..]));
        let scope = values(&flat, &["scope"]).unwrap();
        assert!(scope.contains(&"read".to_owned()) && scope.contains(&"read write".to_owned()));
        assert!(values(&flat, &["roles"]).unwrap().contains(&"b".to_owned()));
        assert_eq!(values(&flat, &["org"]), None);
        assert_eq!(values(&flat, &["n"]), None);
    }

    #[test]
    fn header_values_are_strings_integers_and_booleans_only() {
        let c = claims(r#"{"sub":"alice","n":7,"f":1.5,"ok":false,"l":["x"],"o":{"k":"v"}}"#);
        assert_eq!(header_value(&c, "sub").as_deref(), Some("alice"));
        assert_eq!(header_value(&c, "n").as_deref(), Some("7"));
        assert_eq!(header_value(&c, "ok").as_deref(), Some("false"));
        assert_eq!(header_value(&c, "o.k").as_deref(), Some("v"));
        assert_eq!(header_value(&c, "f"), None);
        assert_eq!(header_value(&c, "l"), None);
        assert_eq!(header_value(&c, "missing"), None);
    }
}
