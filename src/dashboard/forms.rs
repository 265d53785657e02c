//! The plan and credit-pack forms: what was typed, turned into the catalog's inputs
//! ([`crate::engine::catalog_input`]) so that `plan_from` and `pack_from` validate them exactly as
//! they validate the API's JSON, and their errors put back next to the field they are about.

use crate::actors::EngineError;
use crate::engine::catalog::CatalogRejection;
use crate::engine::catalog::{Pack, Plan};
use crate::engine::catalog_input::{
    CatalogInputError, ItemInput, LimitInput, PackInput, PlanInput, PriceInput,
};
use crate::http::error::ApiError;
use std::collections::BTreeMap;

/// Rows a form may hold; the API refuses more than 100 anyway.
pub const ROWS_MAX: usize = 100;

/// The fields of a submitted form, in the order they came, repeated names kept.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the submitting button asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Save,
    AddRow,
    RemoveRow(usize),
}

impl Op {
    pub fn parse(text: &str) -> Op {
        match text {
            "add_row" => Op::AddRow,
            t => t
                .strip_prefix("remove_row:")
                .and_then(|i| i.parse().ok())
                .map_or(Op::Save, Op::RemoveRow),
        }
    }
}

/// Errors by field key (`name`, `price`, `item.0.amount`, …, and `form` for the whole form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors(pub BTreeMap<String, String>);

impl Errors {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.entry(key.into()).or_insert_with(|| message.into());
    }
}

/// A price typed in the currency's main unit ("15", "15.5", "15.00") in its smallest unit.
pub fn parse_money(text: &str) -> Result<u64, &'static str> {
    const WORDS: &str = "must be an amount like 15.00 (0 for free)";
    let text = text.trim();
    let (whole, cents) = match text.split_once('.') {
        Some((w, c)) => (w, c),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(cents) || cents.len() > 2 {
        return Err(WORDS);
    }
    let whole: u64 = whole.parse().map_err(|_| WORDS)?;
    let cents: u64 = format!("{cents:0<2}").parse().map_err(|_| WORDS)?;
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(cents))
        .ok_or(WORDS)
}

/// The smallest unit back in the main unit, as typed.
pub fn format_money(amount: u64) -> String {
    format!("{}.{:02}", amount / 100, amount % 100)
}

fn parse_whole(text: &str) -> Result<u64, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is required");
    }
    text.parse().map_err(|_| "must be a whole number, like 10")
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemRow {
    pub id: String,
    pub pattern: String,
    pub amount: String,
    pub unit: String,
    /// `lowBalanceThreshold`: blank for none.
    pub low: String,
}

impl ItemRow {
    fn is_blank(&self) -> bool {
        [&self.id, &self.pattern, &self.amount, &self.unit, &self.low]
            .iter()
            .all(|f| f.trim().is_empty())
    }
}

/// The credit-pack form as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackForm {
    pub id: String,
    pub name: String,
    pub price: String,
    pub currency: String,
    /// "never" or "days".
    pub expires: String,
    pub expires_days: String,
    pub stripe_price_id: String,
    pub items: Vec<ItemRow>,
}

impl PackForm {
    pub fn blank() -> PackForm {
        PackForm {
            id: String::new(),
            name: String::new(),
            price: String::new(),
            currency: "usd".into(),
            expires: "never".into(),
            expires_days: String::new(),
            stripe_price_id: String::new(),
            items: vec![ItemRow::default()],
        }
    }

    pub fn from_pack(pack: &Pack) -> PackForm {
        PackForm {
            id: pack.id.to_string(),
            name: pack.name.clone(),
            price: format_money(pack.price.amount),
            currency: pack.price.currency.clone(),
            expires: if pack.expires_in_days.is_some() {
                "days"
            } else {
                "never"
            }
            .into(),
            expires_days: pack
                .expires_in_days
                .map(|d| d.to_string())
                .unwrap_or_default(),
            stripe_price_id: pack.stripe_price_id.clone().unwrap_or_default(),
            items: pack
                .items
                .iter()
                .map(|i| ItemRow {
                    id: i.id.to_string(),
                    pattern: i.pattern.to_string(),
                    amount: i.amount.to_string(),
                    unit: i.unit.to_string(),
                    low: i
                        .low_balance_threshold
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    pub fn from_fields(f: &Fields) -> PackForm {
        let (ids, patterns) = (f.all("item_id"), f.all("item_match"));
        let (amounts, units) = (f.all("item_amount"), f.all("item_unit"));
        let lows = f.all("item_low");
        let rows = patterns.len().min(ROWS_MAX);
        let at = |v: &[&str], i: usize| v.get(i).copied().unwrap_or("").to_owned();
        PackForm {
            id: f.get("id").trim().to_owned(),
            name: f.get("name").to_owned(),
            price: f.get("price").to_owned(),
            currency: f.get("currency").trim().to_owned(),
            expires: if f.get("expires") == "days" {
                "days"
            } else {
                "never"
            }
            .into(),
            expires_days: f.get("expires_days").to_owned(),
            stripe_price_id: f.get("stripe_price_id").trim().to_owned(),
            items: (0..rows)
                .map(|i| ItemRow {
                    id: at(&ids, i).trim().to_owned(),
                    pattern: at(&patterns, i).trim().to_owned(),
                    amount: at(&amounts, i),
                    unit: at(&units, i).trim().to_owned(),
                    low: at(&lows, i).trim().to_owned(),
                })
                .collect(),
        }
    }

    /// Adds or removes an item row; a form keeps at least one.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::AddRow if self.items.len() < ROWS_MAX => self.items.push(ItemRow::default()),
            Op::RemoveRow(i) if i < self.items.len() => {
                self.items.remove(i);
                if self.items.is_empty() {
                    self.items.push(ItemRow::default());
                }
            }
            _ => {}
        }
    }

    /// The catalog input this form stands for, or the errors of fields that are not even
    /// numbers. Blank item rows are left out; `rows` maps each input item back to its row.
    pub fn to_input(&self, archived: Option<bool>) -> Result<(PackInput, Vec<usize>), Errors> {
        let mut errors = Errors::default();
        let amount = parse_money(&self.price)
            .map_err(|e| errors.add("price", format!("Price {e}")))
            .unwrap_or(0);
        let expires_in_days = if self.expires == "days" {
            match self.expires_days.trim().parse::<u32>() {
                Ok(d) => Some(d),
                Err(_) => {
                    errors.add(
                        "expires_days",
                        "Days must be a whole number from 1 to 36500",
                    );
                    None
                }
            }
        } else {
            None
        };
        let mut rows = Vec::new();
        let mut items = Vec::new();
        for (i, row) in self.items.iter().enumerate() {
            if row.is_blank() {
                continue;
            }
            let amount = parse_whole(&row.amount)
                .map_err(|e| errors.add(format!("item.{i}.amount"), format!("Amount {e}")))
                .unwrap_or(0);
            let low_balance_threshold = if row.low.trim().is_empty() {
                None
            } else {
                parse_whole(&row.low)
                    .map_err(|e| {
                        errors.add(
                            format!("item.{i}.lowBalanceThreshold"),
                            format!("Low-balance alert {e}"),
                        )
                    })
                    .ok()
            };
            rows.push(i);
            items.push(ItemInput {
                id: (!row.id.is_empty()).then(|| row.id.clone()),
                pattern: row.pattern.clone(),
                amount,
                unit: row.unit.clone(),
                low_balance_threshold,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let body = PackInput {
            id: Some(self.id.clone()),
            name: self.name.clone(),
            price: Some(PriceInput {
                amount,
                currency: self.currency.clone(),
                interval: None,
            }),
            expires_in_days,
            stripe_price_id: (!self.stripe_price_id.is_empty())
                .then(|| self.stripe_price_id.clone()),
            archived,
            items,
        };
        Ok((body, rows))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitRow {
    pub id: String,
    pub name: String,
    /// Patterns separated by commas or spaces.
    pub patterns: String,
    pub limit: String,
    pub unit: String,
    pub period: String,
}

impl LimitRow {
    fn is_blank(&self) -> bool {
        [
            &self.id,
            &self.name,
            &self.patterns,
            &self.limit,
            &self.unit,
        ]
        .iter()
        .all(|f| f.trim().is_empty())
    }
}

/// The plan form as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanForm {
    pub id: String,
    pub name: String,
    pub price: String,
    pub currency: String,
    /// "", "month" or "year".
    pub interval: String,
    pub limits: Vec<LimitRow>,
}

impl PlanForm {
    pub fn blank() -> PlanForm {
        PlanForm {
            id: String::new(),
            name: String::new(),
            price: "0.00".into(),
            currency: "usd".into(),
            interval: "month".into(),
            limits: vec![LimitRow {
                period: "month".into(),
                ..LimitRow::default()
            }],
        }
    }

    pub fn from_plan(plan: &Plan) -> PlanForm {
        PlanForm {
            id: plan.id.to_string(),
            name: plan.name.clone(),
            price: format_money(plan.price.amount),
            currency: plan.price.currency.clone(),
            interval: plan
                .price
                .interval
                .map(|i| i.as_str().to_owned())
                .unwrap_or_default(),
            limits: plan
                .limits
                .iter()
                .map(|l| LimitRow {
                    id: l.id.to_string(),
                    name: l.name.clone(),
                    patterns: l
                        .patterns
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    limit: l.limit.to_string(),
                    unit: l.unit.to_string(),
                    period: l.period.as_str().to_owned(),
                })
                .collect(),
        }
    }

    pub fn from_fields(f: &Fields) -> PlanForm {
        let (ids, names, patterns) = (f.all("limit_id"), f.all("limit_name"), f.all("limit_match"));
        let (limits, units, periods) = (
            f.all("limit_amount"),
            f.all("limit_unit"),
            f.all("limit_period"),
        );
        let rows = ids.len().min(ROWS_MAX);
        let at = |v: &[&str], i: usize| v.get(i).copied().unwrap_or("").to_owned();
        PlanForm {
            id: f.get("id").trim().to_owned(),
            name: f.get("name").to_owned(),
            price: f.get("price").to_owned(),
            currency: f.get("currency").trim().to_owned(),
            interval: f.get("interval").to_owned(),
            limits: (0..rows)
                .map(|i| LimitRow {
                    id: at(&ids, i).trim().to_owned(),
                    name: at(&names, i),
                    patterns: at(&patterns, i),
                    limit: at(&limits, i),
                    unit: at(&units, i).trim().to_owned(),
                    period: at(&periods, i),
                })
                .collect(),
        }
    }

    /// Adds or removes a limit row; a plan may have none.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::AddRow if self.limits.len() < ROWS_MAX => self.limits.push(LimitRow {
                period: "month".into(),
                ..LimitRow::default()
            }),
            Op::RemoveRow(i) if i < self.limits.len() => {
                self.limits.remove(i);
            }
            _ => {}
        }
    }

    pub fn to_input(&self) -> Result<(PlanInput, Vec<usize>), Errors> {
        let mut errors = Errors::default();
        let amount = parse_money(&self.price)
            .map_err(|e| errors.add("price", format!("Price {e}")))
            .unwrap_or(0);
        let mut rows = Vec::new();
        let mut limits = Vec::new();
        for (i, row) in self.limits.iter().enumerate() {
            if row.is_blank() {
                continue;
            }
            let limit = parse_whole(&row.limit)
                .map_err(|e| errors.add(format!("limit.{i}.limit"), format!("Limit {e}")))
                .unwrap_or(0);
            rows.push(i);
            limits.push(LimitInput {
                id: row.id.clone(),
                name: (!row.name.trim().is_empty()).then(|| row.name.clone()),
                patterns: row
                    .patterns
                    .split([',', ' '])
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
                limit,
                unit: row.unit.clone(),
                period: row.period.clone(),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let body = PlanInput {
            id: Some(self.id.clone()),
            name: self.name.clone(),
            price: Some(PriceInput {
                amount,
                currency: self.currency.clone(),
                interval: (!self.interval.is_empty()).then(|| self.interval.clone()),
            }),
            limits,
        };
        Ok((body, rows))
    }
}

/// The words to put before an API message about a field.
fn label(field: &str) -> &'static str {
    match field {
        "id" => "Id",
        "name" => "Name",
        "price" => "Price",
        "currency" => "Currency",
        "interval" => "Billing interval",
        "expires_days" => "Expiry",
        "stripe_price_id" => "Stripe price id",
        "items" => "Items",
        "limits" => "Limits",
        "match" => "Model or category",
        "amount" => "Amount",
        "unit" => "Unit",
        "lowBalanceThreshold" => "Low-balance alert",
        "limit" => "Limit",
        "period" => "Period",
        _ => "This field",
    }
}

/// Where a refusal of the catalog's rules belongs on the form, and its message in words. `rows`
/// maps the index of an item (or limit) in the input back to its row on the form.
pub fn place(error: &CatalogInputError, rows: &[usize]) -> Errors {
    let mut errors = Errors::default();
    let param = error.param();
    let whole = error.to_string();
    let what = match error {
        CatalogInputError::Invalid { problem, .. } => problem.as_str(),
        CatalogInputError::IdMissing => whole.as_str(),
    };
    let top = |name: &str| match name {
        "price.amount" => "price",
        "price.currency" => "currency",
        "price.interval" => "interval",
        "expiresInDays" => "expires_days",
        "stripePriceId" => "stripe_price_id",
        "id" => "id",
        "name" => "name",
        "items" => "items",
        "limits" => "limits",
        _ => "form",
    };
    // "items[2].amount" or "limits[0].match[1]".
    let row_field = param.split_once('[').and_then(|(list, rest)| {
        let (index, field) = rest.split_once("].")?;
        let index: usize = index.parse().ok()?;
        let field = field.split('[').next().unwrap_or(field);
        let row = rows.get(index).copied().unwrap_or(index);
        let kind = if list == "items" { "item" } else { "limit" };
        Some((format!("{kind}.{row}.{field}"), field.to_owned()))
    });
    match row_field {
        Some((key, field)) => errors.add(key, format!("{} {what}", label(&field))),
        None => {
            let key = top(param);
            let message = if key == "form" {
                whole.clone()
            } else {
                format!("{} {what}", label(key))
            };
            errors.add(key, message);
        }
    }
    errors
}

/// Where the engine's refusal of a valid plan or pack belongs: a taken id next to the id, anything
/// else above the form, in the API's words.
pub fn place_refusal(error: EngineError) -> Errors {
    let key = match &error {
        EngineError::Catalog(CatalogRejection::PlanExists(_) | CatalogRejection::PackExists(_)) => {
            "id"
        }
        _ => "form",
    };
    let mut errors = Errors::default();
    errors.add(key, ApiError::from(error).message);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::catalog_input::{pack_from, plan_from};

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn creator_bundle() -> Fields {
        fields(&[
            ("csrf", "t"),
            ("id", "cpk_creator_bundle"),
            ("name", "Creator Bundle"),
            ("price", "15"),
            ("currency", "usd"),
            ("expires", "days"),
            ("expires_days", "90"),
            ("stripe_price_id", ""),
            ("item_id", ""),
            ("item_match", "image.dall-e-3"),
            ("item_amount", "10"),
            ("item_unit", "count"),
            ("item_id", ""),
            ("item_match", ""),
            ("item_amount", ""),
            ("item_unit", ""),
            ("item_id", "veo"),
            ("item_match", "video.veo-3"),
            ("item_amount", "5"),
            ("item_unit", "seconds"),
        ])
    }

    #[test]
    fn money_is_typed_in_the_main_unit() {
        assert_eq!(parse_money("15"), Ok(1500));
        assert_eq!(parse_money(" 15.5 "), Ok(1550));
        assert_eq!(parse_money("0.07"), Ok(7));
        assert_eq!(parse_money("0"), Ok(0));
        for bad in [
            "",
            "15.005",
            "-1",
            "1e3",
            "$15",
            "15.",
            ".5",
            "99999999999999999999",
        ] {
            if bad == "15." {
                assert_eq!(parse_money(bad), Ok(1500));
                continue;
            }
            assert!(parse_money(bad).is_err(), "{bad}");
        }
        assert_eq!(format_money(1500), "15.00");
        assert_eq!(format_money(7), "0.07");
    }

    #[test]
    fn the_creator_bundle_form_becomes_the_pack_the_api_would_make() {
        let form = PackForm::from_fields(&creator_bundle());
        let (input, rows) = form.to_input(None).unwrap();
        assert_eq!(rows, [0, 2], "the blank middle row is left out");
        let pack = pack_from(None, input).unwrap();
        assert_eq!(pack.id, "cpk_creator_bundle");
        assert_eq!(pack.price.amount, 1500);
        assert_eq!(pack.expires_in_days, Some(90));
        assert_eq!(pack.stripe_price_id, None);
        assert_eq!(pack.items.len(), 2);
        assert_eq!(pack.items[0].id, "item_1");
        assert_eq!(pack.items[1].id, "veo");
        assert_eq!(pack.items[1].pattern.to_string(), "video.veo-3");
        assert_eq!(pack.items[1].unit, "seconds");
        // And back: the edit form shows what was saved.
        let again = PackForm::from_pack(&pack);
        assert_eq!(again.price, "15.00");
        assert_eq!(again.expires, "days");
        assert_eq!(again.items[1].amount, "5");
    }

    #[test]
    fn a_zero_amount_is_refused_by_the_api_rules_next_to_its_row() {
        let mut f = creator_bundle();
        f.0[18].1 = "0".into(); // the third row's amount
        let form = PackForm::from_fields(&f);
        let (input, rows) = form.to_input(None).unwrap();
        let error = pack_from(None, input).unwrap_err();
        let errors = place(&error, &rows);
        assert_eq!(
            errors.get("item.2.amount"),
            Some("Amount must be a positive integer")
        );
    }

    #[test]
    fn a_malformed_model_key_is_refused_next_to_its_row() {
        let mut f = creator_bundle();
        f.0[9].1 = "Image/DALL-E".into();
        let (input, rows) = PackForm::from_fields(&f).to_input(None).unwrap();
        let errors = place(&pack_from(None, input).unwrap_err(), &rows);
        let message = errors.get("item.0.match").unwrap();
        assert!(
            message.starts_with("Model or category must be a model key"),
            "{message}"
        );
    }

    #[test]
    fn fields_that_are_not_numbers_are_refused_before_the_api_rules() {
        let mut f = creator_bundle();
        f.0[3].1 = "fifteen".into();
        f.0[6].1 = "ninety".into();
        f.0[10].1 = "ten".into();
        let errors = PackForm::from_fields(&f).to_input(None).unwrap_err();
        assert!(errors.get("price").unwrap().starts_with("Price must be"));
        assert!(errors.get("expires_days").is_some());
        assert_eq!(
            errors.get("item.0.amount"),
            Some("Amount must be a whole number, like 10")
        );
    }

    #[test]
    fn errors_without_a_row_land_on_their_field() {
        let mut f = creator_bundle();
        f.0[6].1 = "0".into();
        let (input, rows) = PackForm::from_fields(&f).to_input(None).unwrap();
        let errors = place(&pack_from(None, input).unwrap_err(), &rows);
        assert_eq!(
            errors.get("expires_days"),
            Some("Expiry must be null (never) or 1 to 36500 days")
        );
        let exists = EngineError::Catalog(CatalogRejection::PackExists("x".into()));
        assert_eq!(
            place_refusal(exists).get("id"),
            Some("a credit pack with id 'x' exists already")
        );
        assert_eq!(
            place_refusal(EngineError::Overloaded).get("form"),
            Some("the server is overloaded; retry later")
        );
    }

    #[test]
    fn rows_are_added_and_removed_keeping_what_was_typed() {
        let mut form = PackForm::from_fields(&creator_bundle());
        form.apply(Op::parse("add_row"));
        assert_eq!(form.items.len(), 4);
        form.apply(Op::parse("remove_row:1"));
        assert_eq!(form.items.len(), 3);
        assert_eq!(form.items[1].pattern, "video.veo-3");
        form.apply(Op::parse("remove_row:99"));
        assert_eq!(form.items.len(), 3);
        assert_eq!(Op::parse("save"), Op::Save);
        assert_eq!(Op::parse(""), Op::Save);
        let mut one = PackForm::blank();
        one.apply(Op::RemoveRow(0));
        assert_eq!(one.items.len(), 1, "a pack form keeps one row");
    }

    #[test]
    fn the_plan_form_becomes_the_plan_the_api_would_make() {
        let f = fields(&[
            ("id", "pro"),
            ("name", "Pro"),
            ("price", "9"),
            ("currency", "usd"),
            ("interval", "month"),
            ("limit_id", "images"),
            ("limit_name", "Images"),
            ("limit_match", "image.*, video.veo-3"),
            ("limit_amount", "40"),
            ("limit_unit", "count"),
            ("limit_period", "month"),
        ]);
        let (input, _) = PlanForm::from_fields(&f).to_input().unwrap();
        let plan = plan_from(None, input).unwrap();
        assert_eq!(plan.price.amount, 900);
        assert_eq!(plan.limits[0].patterns.len(), 2);
        assert_eq!(
            PlanForm::from_plan(&plan).limits[0].patterns,
            "image.*, video.veo-3"
        );
        let mut bad = f.clone();
        bad.0[10].1 = "fortnight".into();
        let (input, rows) = PlanForm::from_fields(&bad).to_input().unwrap();
        let errors = place(&plan_from(None, input).unwrap_err(), &rows);
        assert_eq!(
            errors.get("limit.0.period"),
            Some("Period must be lifetime, day, week, month or year")
        );
        let mut bad = f;
        bad.0[7].1 = "image.*, NOPE".into();
        let (input, rows) = PlanForm::from_fields(&bad).to_input().unwrap();
        let errors = place(&plan_from(None, input).unwrap_err(), &rows);
        assert!(errors.get("limit.0.match").is_some(), "{errors:?}");
    }
}
