//! Reports (R1): takings, aged receivables and what each client owes and holds. The database
//! sums records of one currency by group; these functions say how those sums combine. Money of
//! different currencies is never added: every sum here is keyed by its currency (M6).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// Longest takings range, in days (both ends counted): a year, leap day included. A longer range
/// is refused rather than left to grow with the years of payments it would read.
pub const TAKINGS_DAYS_MAX: i64 = 366;

/// R1: takings of one group (a day, a method or a location, in one currency).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takings {
    /// Sum of the group's non-void payments.
    pub received: Decimal,
    pub payments: i64,
    /// Sum of the group's successful refunds.
    pub refunded: Decimal,
    pub refunds: i64,
}

impl Takings {
    /// R1: payments minus successful refunds; negative on a day that only gave money back.
    pub fn net(&self) -> Decimal {
        self.received - self.refunded
    }
}

/// R1: what one write of a payment or refund changes in the takings of one (day, method,
/// location, currency). Takings are kept as sums per such day and place, so that a report reads
/// a few rows per day asked about, not every payment (docs/rules.md, "How reports stay fast").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TakingsChange {
    pub date: NaiveDate,
    pub method: String,
    pub location: String,
    pub currency: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub received: Decimal,
    pub payments: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub refunded: Decimal,
    pub refunds: i64,
}

/// Where a payment's money counts in takings: its payment date, method, location and currency.
/// A refund counts at its payment's method and location, on the refund's own date.
#[derive(Debug, Clone, Copy)]
pub struct TakingsPlace<'a> {
    pub date: NaiveDate,
    pub method: &'a str,
    pub location: &'a str,
    pub currency: &'a str,
}

impl TakingsChange {
    fn at(place: TakingsPlace<'_>) -> TakingsChange {
        TakingsChange {
            date: place.date,
            method: place.method.to_owned(),
            location: place.location.to_owned(),
            currency: place.currency.to_owned(),
            received: Decimal::ZERO,
            payments: 0,
            refunded: Decimal::ZERO,
            refunds: 0,
        }
    }

    /// A payment of `amount` recorded (and not void): received on its day.
    pub fn payment_recorded(place: TakingsPlace<'_>, amount: Decimal) -> TakingsChange {
        TakingsChange { received: amount, payments: 1, ..TakingsChange::at(place) }
    }

    /// A payment voided: it leaves the takings of its day (V2: void payments are not takings).
    pub fn payment_voided(place: TakingsPlace<'_>, amount: Decimal) -> TakingsChange {
        TakingsChange { received: -amount, payments: -1, ..TakingsChange::at(place) }
    }

    /// A refund of `amount` succeeded (recorded as such, or settled so later): refunded on the
    /// refund's date, at its payment's method and location.
    pub fn refund_succeeded(place: TakingsPlace<'_>, amount: Decimal) -> TakingsChange {
        TakingsChange { refunded: amount, refunds: 1, ..TakingsChange::at(place) }
    }

    /// The (day, method, location, currency) this change is summed under.
    pub fn key(&self) -> (NaiveDate, &str, &str, &str) {
        (self.date, &self.method, &self.location, &self.currency)
    }

    fn changes_nothing(&self) -> bool {
        self.received.is_zero() && self.payments == 0 && self.refunded.is_zero() && self.refunds == 0
    }

    /// Adds `other` (of the same key) to this change.
    pub fn add(&mut self, other: &TakingsChange) {
        self.received += other.received;
        self.payments += other.payments;
        self.refunded += other.refunded;
        self.refunds += other.refunds;
    }
}

/// R1: changes summed by key, in key order, leaving out keys whose changes cancel out.
pub fn sum_takings_changes<'a>(changes: impl IntoIterator<Item = &'a TakingsChange>) -> Vec<TakingsChange> {
    let mut by_key: BTreeMap<(NaiveDate, String, String, String), TakingsChange> = BTreeMap::new();
    for change in changes {
        let key = (change.date, change.method.clone(), change.location.clone(), change.currency.clone());
        match by_key.get_mut(&key) {
            Some(sum) => sum.add(change),
            None => drop(by_key.insert(key, change.clone())),
        }
    }
    by_key.into_values().filter(|sum| !sum.changes_nothing()).collect()
}

/// Sums of payments or refunds of one group, as the database counted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSum<K> {
    pub group: K,
    pub amount: Decimal,
    pub count: i64,
}

/// R1: takings by group. `payments` are sums of non-void payments and `refunds` of successful
/// refunds, each by group (the group includes the currency, so no two currencies meet). A
/// payment counts on its payment date, a refund on its refund date (docs/rules.md, R1): a refund
/// lowers the takings of the day the money went back, not the day it came in. Groups come out
/// in key order.
pub fn takings<K: Ord + Clone>(payments: Vec<GroupSum<K>>, refunds: Vec<GroupSum<K>>) -> Vec<(K, Takings)> {
    let mut by_group: BTreeMap<K, Takings> = BTreeMap::new();
    for sum in payments {
        let takings = by_group.entry(sum.group).or_default();
        takings.received += sum.amount;
        takings.payments += sum.count;
    }
    for sum in refunds {
        let takings = by_group.entry(sum.group).or_default();
        takings.refunded += sum.amount;
        takings.refunds += sum.count;
    }
    by_group.into_iter().collect()
}

/// R1: how far past its due date an OPEN invoice's balance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgingBucket {
    /// Not past due: due on or after the day asked about.
    Current,
    Days1To30,
    Days31To60,
    Days61To90,
    Over90,
}

/// R1: the bucket of an invoice due on `due` as of `as_of`. Days past due = `as_of` - `due`
/// in calendar days; due on `as_of` is current (I4: overdue means due before today).
pub fn aging_bucket(due: NaiveDate, as_of: NaiveDate) -> AgingBucket {
    match (as_of - due).num_days() {
        days if days <= 0 => AgingBucket::Current,
        1..=30 => AgingBucket::Days1To30,
        31..=60 => AgingBucket::Days31To60,
        61..=90 => AgingBucket::Days61To90,
        _ => AgingBucket::Over90,
    }
}

/// R1: balances of OPEN invoices of one currency by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aging {
    pub current: Decimal,
    pub days_1_to_30: Decimal,
    pub days_31_to_60: Decimal,
    pub days_61_to_90: Decimal,
    pub over_90: Decimal,
    /// OPEN invoices counted.
    pub invoices: i64,
}

impl Aging {
    pub fn total(&self) -> Decimal {
        self.current + self.days_1_to_30 + self.days_31_to_60 + self.days_61_to_90 + self.over_90
    }

    /// R1: adds `balance` of `invoices` OPEN invoices due on `due`, as of `as_of`.
    pub fn add(&mut self, due: NaiveDate, as_of: NaiveDate, balance: Decimal, invoices: i64) {
        let bucket = match aging_bucket(due, as_of) {
            AgingBucket::Current => &mut self.current,
            AgingBucket::Days1To30 => &mut self.days_1_to_30,
            AgingBucket::Days31To60 => &mut self.days_31_to_60,
            AgingBucket::Days61To90 => &mut self.days_61_to_90,
            AgingBucket::Over90 => &mut self.over_90,
        };
        *bucket += balance;
        self.invoices += invoices;
    }
}

/// R1: aged receivables of one currency, in total and by client, from the balances of OPEN
/// invoices summed by (client, due date). Clients come out with the most owed first (then by
/// key, so pages are stable).
pub fn aged_receivables(balances: Vec<(String, NaiveDate, Decimal, i64)>, as_of: NaiveDate) -> (Aging, Vec<(String, Aging)>) {
    let mut total = Aging::default();
    let mut by_client: BTreeMap<String, Aging> = BTreeMap::new();
    for (client, due, balance, invoices) in balances {
        total.add(due, as_of, balance, invoices);
        by_client.entry(client).or_default().add(due, as_of, balance, invoices);
    }
    let mut clients: Vec<(String, Aging)> = by_client.into_iter().filter(|(_, aging)| aging.total() != Decimal::ZERO).collect();
    clients.sort_by(|(a_key, a), (b_key, b)| b.total().cmp(&a.total()).then_with(|| a_key.cmp(b_key)));
    (total, clients)
}

/// B1 for every client at once, in one currency: what each owes on OPEN invoices and holds as
/// unallocated credit of non-void payments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPosition {
    pub owing: Decimal,
    pub credit: Decimal,
}

/// Which amount orders the client positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionOrder {
    Owing,
    Credit,
}

/// B1 by client from sums of one currency: `owing` per client (OPEN invoice balances) and
/// `credit` per client (unallocated amounts of non-void payments). Clients with neither are left
/// out; the rest are ordered by the chosen amount, largest first unless `ascending`, then by
/// client key so that equal amounts keep one order across pages.
pub fn client_positions(
    owing: Vec<(String, Decimal)>,
    credit: Vec<(String, Decimal)>,
    order: PositionOrder,
    ascending: bool,
) -> Vec<(String, ClientPosition)> {
    let mut by_client: BTreeMap<String, ClientPosition> = BTreeMap::new();
    for (client, amount) in owing {
        by_client.entry(client).or_default().owing += amount;
    }
    for (client, amount) in credit {
        by_client.entry(client).or_default().credit += amount;
    }
    let mut positions: Vec<(String, ClientPosition)> =
        by_client.into_iter().filter(|(_, p)| p.owing != Decimal::ZERO || p.credit != Decimal::ZERO).collect();
    let amount = |p: &ClientPosition| match order {
        PositionOrder::Owing => p.owing,
        PositionOrder::Credit => p.credit,
    };
    positions.sort_by(|(a_key, a), (b_key, b)| {
        let by_amount = if ascending { amount(a).cmp(&amount(b)) } else { amount(b).cmp(&amount(a)) };
        by_amount.then_with(|| a_key.cmp(b_key))
    });
    positions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn r1_buckets_change_exactly_after_30_60_and_90_days_past_due() {
        let as_of = day("2026-06-30");
        let cases = [
            (0, AgingBucket::Current, "due today is not past due (I4)"),
            (-5, AgingBucket::Current, "due later"),
            (1, AgingBucket::Days1To30, "one day past due"),
            (30, AgingBucket::Days1To30, "30 days"),
            (31, AgingBucket::Days31To60, "31 days"),
            (60, AgingBucket::Days31To60, "60 days"),
            (61, AgingBucket::Days61To90, "61 days"),
            (90, AgingBucket::Days61To90, "90 days"),
            (91, AgingBucket::Over90, "91 days"),
            (4000, AgingBucket::Over90, "years"),
        ];
        for (days_past_due, bucket, why) in cases {
            let due = as_of - chrono::Duration::days(days_past_due);
            assert_eq!(aging_bucket(due, as_of), bucket, "{why}");
        }
    }

    #[test]
    fn r1_takings_net_refunds_against_payments_of_the_same_group_only() {
        let sum = |group: (&'static str, &'static str), amount: &str, count| GroupSum { group, amount: amount.parse().unwrap(), count };
        let rows = takings(
            vec![sum(("2026-01-01", "AUD"), "100.00", 2), sum(("2026-01-01", "NZD"), "50.00", 1)],
            vec![sum(("2026-01-01", "AUD"), "10.50", 1), sum(("2026-01-02", "AUD"), "5.00", 1)],
        );
        let net: Vec<_> = rows.iter().map(|(group, t)| (*group, t.net().to_string())).collect();
        assert_eq!(
            net,
            vec![(("2026-01-01", "AUD"), "89.50".to_owned()), (("2026-01-01", "NZD"), "50.00".to_owned()), (("2026-01-02", "AUD"), "-5.00".to_owned())],
            "a refund counts on its own day and never against another currency (M6)"
        );
    }

    #[test]
    fn r1_takings_changes_sum_by_day_and_place_and_cancelled_ones_drop_out() {
        let d = |text: &str| text.parse::<Decimal>().unwrap();
        let cash = TakingsPlace { date: day("2026-01-01"), method: "cash", location: "main", currency: "AUD" };
        let card = TakingsPlace { method: "card", ..cash };
        let later = TakingsPlace { date: day("2026-01-05"), ..cash };
        let changes = [
            TakingsChange::payment_recorded(cash, d("40.00")),
            TakingsChange::payment_recorded(card, d("25.00")),
            TakingsChange::payment_voided(card, d("25.00")),
            TakingsChange::payment_recorded(cash, d("10.00")),
            TakingsChange::refund_succeeded(later, d("5.00")),
        ];
        let sums = sum_takings_changes(&changes);
        assert_eq!(sums.len(), 2, "the voided card payment cancels out: {sums:?}");
        assert_eq!((sums[0].key(), sums[0].received, sums[0].payments), ((day("2026-01-01"), "cash", "main", "AUD"), d("50.00"), 2));
        assert_eq!((sums[1].key(), sums[1].refunded, sums[1].refunds, sums[1].received), ((day("2026-01-05"), "cash", "main", "AUD"), d("5.00"), 1, Decimal::ZERO));
        let stored: Vec<TakingsChange> = serde_json::from_str(&serde_json::to_string(&changes).unwrap()).unwrap();
        assert_eq!(stored, changes, "changes keep every field when stored with their audit event");
    }

    #[test]
    fn r1_aged_receivables_sum_by_client_most_owed_first() {
        let as_of = day("2026-06-30");
        let d = |text: &str| text.parse::<Decimal>().unwrap();
        let (total, clients) = aged_receivables(
            vec![
                ("a".into(), day("2026-06-30"), d("10.00"), 1),
                ("a".into(), day("2026-05-01"), d("5.00"), 1),
                ("b".into(), day("2026-01-01"), d("40.00"), 2),
            ],
            as_of,
        );
        assert_eq!((total.current, total.days_31_to_60, total.over_90, total.total(), total.invoices), (d("10.00"), d("5.00"), d("40.00"), d("55.00"), 4));
        assert_eq!(clients.iter().map(|(c, a)| (c.as_str(), a.total())).collect::<Vec<_>>(), vec![("b", d("40.00")), ("a", d("15.00"))]);
    }

    #[test]
    fn b1_client_positions_leave_out_clients_with_nothing_and_order_by_the_amount_asked() {
        let d = |text: &str| text.parse::<Decimal>().unwrap();
        let owing = vec![("a".into(), d("5.00")), ("b".into(), d("7.00")), ("z".into(), d("0"))];
        let credit = vec![("c".into(), d("9.00")), ("a".into(), d("1.00"))];
        let keys = |order, ascending| client_positions(owing.clone(), credit.clone(), order, ascending).into_iter().map(|(c, _)| c).collect::<Vec<_>>();
        assert_eq!(keys(PositionOrder::Owing, false), ["b", "a", "c"]);
        assert_eq!(keys(PositionOrder::Credit, false), ["c", "a", "b"]);
        assert_eq!(keys(PositionOrder::Owing, true), ["c", "a", "b"]);
    }
}
