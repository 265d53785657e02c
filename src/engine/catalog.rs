//! Plans and credit packs: one catalog per app, shared by live and test mode.

use super::ids::{ModelKey, Pattern};
use super::name::Name;
use super::time::{Period, Ts};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interval {
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// In the currency's smallest unit; 0 for a free plan.
    pub amount: u64,
    pub currency: String,
    /// `None` for a one-off price (a credit pack) or a free plan.
    pub interval: Option<Interval>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub id: Name,
    pub name: String,
    pub patterns: Vec<Pattern>,
    pub limit: u64,
    pub unit: Name,
    pub period: Period,
}

impl Limit {
    pub fn covers(&self, model: &ModelKey) -> bool {
        self.patterns.iter().any(|p| p.covers(model))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: Name,
    pub name: String,
    pub price: Price,
    pub limits: Vec<Limit>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackItem {
    pub id: Name,
    pub pattern: Pattern,
    pub amount: u64,
    pub unit: Name,
    /// `credits.low` fires when a balance of this item drops to this or below.
    pub low_balance_threshold: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pack {
    pub id: Name,
    pub name: String,
    pub price: Price,
    pub expires_in_days: Option<u32>,
    pub stripe_price_id: Option<String>,
    pub archived: bool,
    pub items: Vec<PackItem>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// A change to the catalog, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogChange {
    PlanPut(Plan),
    PlanDeleted(String),
    PackPut(Pack),
}

/// An immutable catalog value: readers hold an `Arc` of it, writers swap in a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub plans: BTreeMap<Name, Arc<Plan>>,
    pub packs: BTreeMap<Name, Arc<Pack>>,
}

impl Catalog {
    pub fn apply(&mut self, change: &CatalogChange) {
        match change {
            CatalogChange::PlanPut(plan) => {
                self.plans.insert(plan.id.clone(), Arc::new(plan.clone()));
            }
            CatalogChange::PlanDeleted(id) => {
                self.plans.remove(id.as_str());
            }
            CatalogChange::PackPut(pack) => {
                self.packs.insert(pack.id.clone(), Arc::new(pack.clone()));
            }
        }
    }

    /// Every plan and pack as changes that rebuild this catalog: how a snapshot stores it.
    pub fn as_changes(&self) -> Vec<CatalogChange> {
        let plans = self
            .plans
            .values()
            .map(|p| CatalogChange::PlanPut(Plan::clone(p)));
        let packs = self
            .packs
            .values()
            .map(|p| CatalogChange::PackPut(Pack::clone(p)));
        plans.chain(packs).collect()
    }

    pub fn from_changes(changes: &[CatalogChange]) -> Catalog {
        let mut catalog = Catalog::default();
        changes.iter().for_each(|c| catalog.apply(c));
        catalog
    }

    pub fn is_empty(&self) -> bool {
        self.plans.is_empty() && self.packs.is_empty()
    }
}

impl Serialize for Catalog {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_changes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Catalog {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<CatalogChange>::deserialize(deserializer).map(|c| Catalog::from_changes(&c))
    }
}

/// A request to change the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogCommand {
    CreatePlan(Plan),
    PutPlan(Plan),
    DeletePlan(String),
    CreatePack(Pack),
    PutPack(Pack),
    ArchivePack(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogRejection {
    #[error("a plan with id '{0}' exists already")]
    PlanExists(String),
    #[error("a credit pack with id '{0}' exists already")]
    PackExists(String),
    #[error("no plan with id '{0}'")]
    PlanNotFound(String),
    #[error("no credit pack with id '{0}'")]
    PackNotFound(String),
    #[error("plan '{0}' has active subscriptions; move them to another plan first")]
    PlanInUse(String),
}

/// Decides a catalog change. `in_use` tells whether an active subscription, in either mode, is on a
/// plan. A replaced plan or pack keeps its `created_at`.
pub fn decide_catalog(
    catalog: &Catalog,
    command: CatalogCommand,
    now: Ts,
    in_use: impl Fn(&str) -> bool,
) -> Result<CatalogChange, CatalogRejection> {
    Ok(match command {
        CatalogCommand::CreatePlan(plan) if catalog.plans.contains_key(&plan.id) => {
            return Err(CatalogRejection::PlanExists(plan.id.into()));
        }
        CatalogCommand::CreatePlan(mut plan) | CatalogCommand::PutPlan(mut plan) => {
            plan.created_at = catalog.plans.get(&plan.id).map_or(now, |p| p.created_at);
            plan.updated_at = now;
            CatalogChange::PlanPut(plan)
        }
        CatalogCommand::DeletePlan(id) => {
            if !catalog.plans.contains_key(id.as_str()) {
                return Err(CatalogRejection::PlanNotFound(id));
            }
            if in_use(&id) {
                return Err(CatalogRejection::PlanInUse(id));
            }
            CatalogChange::PlanDeleted(id)
        }
        CatalogCommand::CreatePack(pack) if catalog.packs.contains_key(&pack.id) => {
            return Err(CatalogRejection::PackExists(pack.id.into()));
        }
        CatalogCommand::CreatePack(mut pack) | CatalogCommand::PutPack(mut pack) => {
            pack.created_at = catalog.packs.get(&pack.id).map_or(now, |p| p.created_at);
            pack.updated_at = now;
            CatalogChange::PackPut(pack)
        }
        CatalogCommand::ArchivePack(id) => {
            let pack = catalog
                .packs
                .get(id.as_str())
                .ok_or(CatalogRejection::PackNotFound(id))?;
            let mut pack = Pack::clone(pack);
            pack.archived = true;
            pack.updated_at = now;
            CatalogChange::PackPut(pack)
        }
    })
}
