//! A plan or a credit pack as a client wrote it, and the rules that turn it into the catalog's
//! [`Plan`] and [`Pack`]. Both faces of the server write through here: the API converts its JSON
//! bodies (`http::catalog`) into these inputs and the dashboard its forms, so a plan is held to
//! the same rules whichever way it comes in.
//!
//! A refusal names the field at fault as API.md's bodies spell it (`price.amount`,
//! `items[2].amount`, `limits[0].match[1]`), which is what the API answers in `param` and what the
//! dashboard uses to put the message next to the input it is about.

use super::catalog::{Interval, Limit, Pack, PackItem, Plan, Price};
use super::ids::{AMOUNT_MAX, Pattern, parse_amount, parse_limit, parse_slug};
use super::name::Name;
use super::time::{Period, Ts};
use std::collections::HashSet;
use std::fmt::Display;

/// A price in the currency's smallest unit; `interval` is for plans only (`None`: free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceInput {
    pub amount: u64,
    pub currency: String,
    pub interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInput {
    pub id: String,
    /// The id when `None`.
    pub name: Option<String>,
    pub patterns: Vec<String>,
    pub limit: u64,
    pub unit: String,
    pub period: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    /// May be `None` when the id comes from elsewhere (the path of a PUT).
    pub id: Option<String>,
    pub name: String,
    /// Free (0 usd, no interval) when `None`.
    pub price: Option<PriceInput>,
    pub limits: Vec<LimitInput>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemInput {
    /// `item_N` (its position from 1) when `None`.
    pub id: Option<String>,
    pub pattern: String,
    pub amount: u64,
    pub unit: String,
    pub low_balance_threshold: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInput {
    /// May be `None` when the id comes from elsewhere (the path of a PUT).
    pub id: Option<String>,
    pub name: String,
    /// 0 usd when `None`.
    pub price: Option<PriceInput>,
    pub expires_in_days: Option<u32>,
    pub stripe_price_id: Option<String>,
    pub archived: Option<bool>,
    pub items: Vec<ItemInput>,
}

/// Why a plan or a pack as written is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogInputError {
    /// Neither the path nor the body gives an id.
    #[error("missing required parameter 'id'")]
    IdMissing,
    /// `param` holds a value the rules refuse; `problem` says what is wrong with it, as the end
    /// of a sentence that starts with the field's name.
    #[error("{param} {problem}")]
    Invalid { param: String, problem: String },
}

impl CatalogInputError {
    fn invalid(param: &str, problem: impl Display) -> CatalogInputError {
        CatalogInputError::Invalid {
            param: param.to_owned(),
            problem: problem.to_string(),
        }
    }

    /// The field at fault, as API.md's bodies spell it.
    pub fn param(&self) -> &str {
        match self {
            CatalogInputError::IdMissing => "id",
            CatalogInputError::Invalid { param, .. } => param,
        }
    }
}

/// Items and limits per plan or pack.
const PARTS_MAX: usize = 100;
const NAME_BYTES_MAX: usize = 200;
const EXPIRES_IN_DAYS_MAX: u32 = 36_500;
const STRIPE_PRICE_ID_BYTES_MAX: usize = 255;

fn display_name(param: &str, text: &str) -> Result<String, CatalogInputError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.len() > NAME_BYTES_MAX {
        return Err(CatalogInputError::invalid(
            param,
            "must be 1 to 200 characters",
        ));
    }
    Ok(trimmed.to_owned())
}

fn id_of(path_id: Option<String>, body_id: Option<String>) -> Result<Name, CatalogInputError> {
    let id = match (path_id, body_id) {
        (Some(p), Some(b)) if p != b => {
            return Err(CatalogInputError::invalid(
                "id",
                "must match the id in the path",
            ));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return Err(CatalogInputError::IdMissing),
    };
    parse_slug(&id).map_err(|e| CatalogInputError::invalid("id", e))
}

fn price(input: Option<PriceInput>, recurring: bool) -> Result<Price, CatalogInputError> {
    let Some(input) = input else {
        return Ok(Price {
            amount: 0,
            currency: "usd".into(),
            interval: None,
        });
    };
    if input.amount > AMOUNT_MAX {
        return Err(CatalogInputError::invalid(
            "price.amount",
            "must be at most 9007199254740991",
        ));
    }
    let currency = input.currency.to_ascii_lowercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(CatalogInputError::invalid(
            "price.currency",
            "must be a three-letter ISO currency code",
        ));
    }
    let interval = match input.interval.as_deref() {
        None => None,
        Some(_) if !recurring => {
            return Err(CatalogInputError::invalid(
                "price.interval",
                "is not allowed on a credit pack",
            ));
        }
        Some("month") => Some(Interval::Month),
        Some("year") => Some(Interval::Year),
        Some(_) => {
            return Err(CatalogInputError::invalid(
                "price.interval",
                "must be month, year or null",
            ));
        }
    };
    Ok(Price {
        amount: input.amount,
        currency,
        interval,
    })
}

fn unit(param: &str, text: &str) -> Result<Name, CatalogInputError> {
    parse_slug(text).map_err(|e| CatalogInputError::invalid(param, e))
}

/// The plan `input` describes. `path_id` is the id a PUT names in its path: the input's id must
/// then be absent or the same.
pub fn plan_from(path_id: Option<String>, input: PlanInput) -> Result<Plan, CatalogInputError> {
    let id = id_of(path_id, input.id)?;
    let name = display_name("name", &input.name)?;
    let price = price(input.price, true)?;
    if input.limits.len() > PARTS_MAX {
        return Err(CatalogInputError::invalid(
            "limits",
            "may hold at most 100 limits",
        ));
    }
    let mut seen = HashSet::new();
    let mut limits = Vec::with_capacity(input.limits.len());
    for (i, l) in input.limits.into_iter().enumerate() {
        let at = |field: &str| format!("limits[{i}].{field}");
        let id = parse_slug(&l.id).map_err(|e| CatalogInputError::invalid(&at("id"), e))?;
        if !seen.insert(id.clone()) {
            return Err(CatalogInputError::invalid(
                &at("id"),
                "repeats another limit's id",
            ));
        }
        if l.patterns.is_empty() {
            return Err(CatalogInputError::invalid(
                &at("match"),
                "must hold at least one pattern",
            ));
        }
        let patterns = l
            .patterns
            .iter()
            .enumerate()
            .map(|(j, p)| {
                Pattern::parse(p)
                    .map_err(|e| CatalogInputError::invalid(&format!("limits[{i}].match[{j}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limit =
            parse_limit(l.limit).map_err(|e| CatalogInputError::invalid(&at("limit"), e))?;
        let period = Period::parse(&l.period).ok_or_else(|| {
            CatalogInputError::invalid(&at("period"), "must be lifetime, day, week, month or year")
        })?;
        let name = match l.name {
            Some(n) => display_name(&at("name"), &n)?,
            None => id.to_string(),
        };
        limits.push(Limit {
            id,
            name,
            patterns,
            limit,
            unit: unit(&at("unit"), &l.unit)?,
            period,
        });
    }
    Ok(Plan {
        id,
        name,
        price,
        limits,
        created_at: Ts(0),
        updated_at: Ts(0),
    })
}

/// The credit pack `input` describes. `path_id` is the id a PUT names in its path: the input's
/// id must then be absent or the same.
pub fn pack_from(path_id: Option<String>, input: PackInput) -> Result<Pack, CatalogInputError> {
    let id = id_of(path_id, input.id)?;
    let name = display_name("name", &input.name)?;
    let price = price(input.price, false)?;
    if input
        .expires_in_days
        .is_some_and(|d| d == 0 || d > EXPIRES_IN_DAYS_MAX)
    {
        return Err(CatalogInputError::invalid(
            "expiresInDays",
            "must be null (never) or 1 to 36500 days",
        ));
    }
    if let Some(stripe) = &input.stripe_price_id {
        if stripe.is_empty() || stripe.len() > STRIPE_PRICE_ID_BYTES_MAX {
            return Err(CatalogInputError::invalid(
                "stripePriceId",
                "must be 1 to 255 characters",
            ));
        }
    }
    if input.items.is_empty() || input.items.len() > PARTS_MAX {
        return Err(CatalogInputError::invalid(
            "items",
            "must hold 1 to 100 items",
        ));
    }
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(input.items.len());
    for (i, item) in input.items.into_iter().enumerate() {
        let at = |field: &str| format!("items[{i}].{field}");
        let pattern = Pattern::parse(&item.pattern)
            .map_err(|e| CatalogInputError::invalid(&at("match"), e))?;
        let amount =
            parse_amount(item.amount).map_err(|e| CatalogInputError::invalid(&at("amount"), e))?;
        let unit = unit(&at("unit"), &item.unit)?;
        let id = match item.id {
            Some(id) => parse_slug(&id).map_err(|e| CatalogInputError::invalid(&at("id"), e))?,
            None => Name::from(format!("item_{}", i + 1)),
        };
        if !seen.insert(id.clone()) {
            return Err(CatalogInputError::invalid(
                &at("id"),
                "repeats another item's id",
            ));
        }
        let low_balance_threshold = item.low_balance_threshold;
        if low_balance_threshold.is_some_and(|n| n == 0 || n > amount) {
            return Err(CatalogInputError::invalid(
                &at("lowBalanceThreshold"),
                "must be from 1 to the item's amount",
            ));
        }
        items.push(PackItem {
            id,
            pattern,
            amount,
            unit,
            low_balance_threshold,
        });
    }
    Ok(Pack {
        id,
        name,
        price,
        expires_in_days: input.expires_in_days,
        stripe_price_id: input.stripe_price_id,
        archived: input.archived.unwrap_or(false),
        items,
        created_at: Ts(0),
        updated_at: Ts(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(limits: Vec<LimitInput>) -> PlanInput {
        PlanInput {
            id: Some("pro".into()),
            name: " Pro ".into(),
            price: None,
            limits,
        }
    }

    fn limit(patterns: &[&str]) -> LimitInput {
        LimitInput {
            id: "images".into(),
            name: None,
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            limit: 40,
            unit: "count".into(),
            period: "month".into(),
        }
    }

    #[test]
    fn a_plan_is_made_with_its_defaults_and_a_name_trimmed() {
        let made = plan_from(None, plan(vec![limit(&["image.*"])])).unwrap();
        assert_eq!(made.name, "Pro");
        assert_eq!(
            (made.price.amount, made.price.currency.as_str()),
            (0, "usd")
        );
        assert_eq!(made.limits[0].name, "images", "a limit is named by its id");
    }

    #[test]
    fn a_refusal_names_the_field_as_the_api_body_spells_it() {
        let error = plan_from(None, plan(vec![limit(&["image.*", "NOPE"])])).unwrap_err();
        assert_eq!(error.param(), "limits[0].match[1]");
        assert!(error.to_string().starts_with("limits[0].match[1] must be"));
        let error = plan_from(Some("other".into()), plan(vec![])).unwrap_err();
        assert_eq!(error.to_string(), "id must match the id in the path");
        let no_id = PlanInput {
            id: None,
            ..plan(vec![])
        };
        let error = plan_from(None, no_id).unwrap_err();
        assert_eq!(error, CatalogInputError::IdMissing);
        assert_eq!(error.param(), "id");
    }

    #[test]
    fn a_pack_price_has_no_interval() {
        let pack = PackInput {
            id: Some("cpk".into()),
            name: "Pack".into(),
            price: Some(PriceInput {
                amount: 100,
                currency: "USD".into(),
                interval: Some("month".into()),
            }),
            expires_in_days: None,
            stripe_price_id: None,
            archived: None,
            items: vec![],
        };
        let error = pack_from(None, pack).unwrap_err();
        assert_eq!(
            error.to_string(),
            "price.interval is not allowed on a credit pack"
        );
    }
}
