//! Property tests: random sequences of ledger operations, applied to a small in-memory ledger
//! through the real rule functions, must keep M4, M5 and P7 after every step, whatever is
//! accepted or refused.

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::credit_note::{self, CreditBy, CreditRequest, CreditableLine};
use super::invoice::{InvoiceFacts, InvoiceStatus};
use super::money::Currency;
use super::payment::{self, PaymentFacts};

#[derive(Debug, Clone)]
enum Op {
    Allocate { payment: usize, invoice: usize, cents: i64 },
    Remove { allocation: usize },
    Refund { payment: usize, cents: i64 },
    VoidPayment { payment: usize },
    Credit { invoice: usize, cents: i64 },
    VoidCredit { credit: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, -500..6000i64).prop_map(|(payment, invoice, cents)| Op::Allocate { payment, invoice, cents }),
        2 => (0..12usize).prop_map(|allocation| Op::Remove { allocation }),
        2 => (0..3usize, -500..6000i64).prop_map(|(payment, cents)| Op::Refund { payment, cents }),
        1 => (0..3usize).prop_map(|payment| Op::VoidPayment { payment }),
        2 => (0..3usize, -500..4000i64).prop_map(|(invoice, cents)| Op::Credit { invoice, cents }),
        1 => (0..6usize).prop_map(|credit| Op::VoidCredit { credit }),
    ]
}

struct Allocation {
    payment: usize,
    invoice: usize,
    amount: Decimal,
    active: bool,
}

struct Credit {
    invoice: usize,
    total: Decimal,
    issued: bool,
}

struct Ledger {
    payments: Vec<PaymentFacts>,
    invoices: Vec<InvoiceFacts>,
    allocations: Vec<Allocation>,
    credits: Vec<Credit>,
}

fn cents(n: i64) -> Decimal {
    Decimal::new(n, 2)
}

impl Ledger {
    fn new() -> Ledger {
        let payment = |amount: i64| PaymentFacts {
            client: "c".into(),
            currency: super::Currency::AUD,
            amount: cents(amount),
            allocated: Decimal::ZERO,
            refunded: Decimal::ZERO,
            refund_pending: Decimal::ZERO,
            void: false,
        };
        let invoice = |total: i64| InvoiceFacts {
            status: InvoiceStatus::Open,
            numbered: true,
            line_count: 1,
            total: cents(total),
            paid: Decimal::ZERO,
            credited: Decimal::ZERO,
            active_allocations: 0,
            issued_credit_notes: 0,
        };
        Ledger {
            payments: vec![payment(10_000), payment(5_000), payment(2_550)],
            invoices: vec![invoice(7_500), invoice(3_000), invoice(12_345)],
            allocations: Vec::new(),
            credits: Vec::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Allocate { payment, invoice, cents: c } => {
                let effect =
                    payment::allocate(&self.payments[payment], &self.invoices[invoice], "c", super::Currency::AUD, cents(c));
                if let Ok(effect) = effect {
                    self.payments[payment].allocated = effect.payment_allocated;
                    let inv = &mut self.invoices[invoice];
                    inv.paid = effect.invoice_paid;
                    inv.active_allocations += 1;
                    inv.status = effect.invoice_status;
                    self.allocations.push(Allocation { payment, invoice, amount: effect.amount, active: true });
                }
            }
            Op::Remove { allocation } => {
                let Some(a) = self.allocations.get(allocation) else { return };
                let (p, i, amount, active) = (a.payment, a.invoice, a.amount, a.active);
                if let Ok(effect) = payment::remove_allocation(&self.payments[p], &self.invoices[i], amount, !active) {
                    self.payments[p].allocated = effect.payment_allocated;
                    let inv = &mut self.invoices[i];
                    inv.paid = effect.invoice_paid;
                    inv.active_allocations -= 1;
                    inv.status = effect.invoice_status;
                    self.allocations[allocation].active = false;
                }
            }
            Op::Refund { payment, cents: c } => {
                if payment::check_refund(&self.payments[payment], cents(c)).is_ok() {
                    self.payments[payment].refunded += cents(c);
                }
            }
            Op::VoidPayment { payment } => {
                if payment::check_void(&self.payments[payment]).is_ok() {
                    self.payments[payment].void = true;
                }
            }
            Op::Credit { invoice, cents: c } => {
                let inv = &self.invoices[invoice];
                let line = CreditableLine {
                    quantity: Decimal::ONE,
                    subtotal: inv.total,
                    tax: Decimal::ZERO,
                    total: inv.total,
                    credited: inv.credited,
                };
                let request = [CreditRequest { line: 0, by: CreditBy::Amount(cents(c)) }];
                if let Ok(effect) = credit_note::issue(inv, &[line], "model", &request, Currency::AUD) {
                    let inv = &mut self.invoices[invoice];
                    inv.credited = effect.invoice_credited;
                    inv.issued_credit_notes += 1;
                    inv.status = effect.invoice_status;
                    self.credits.push(Credit { invoice, total: effect.total, issued: true });
                }
            }
            Op::VoidCredit { credit } => {
                let Some(c) = self.credits.get(credit) else { return };
                let (i, total, issued) = (c.invoice, c.total, c.issued);
                if let Ok((credited, status)) = credit_note::void(&self.invoices[i], total, !issued) {
                    let inv = &mut self.invoices[i];
                    inv.credited = credited;
                    inv.issued_credit_notes -= 1;
                    inv.status = status;
                    self.credits[credit].issued = false;
                }
            }
        }
    }

    /// M4, M5, P7, I3, V1 against the records, recomputed from scratch.
    fn check(&self) -> Result<(), String> {
        for (p, facts) in self.payments.iter().enumerate() {
            let active: Decimal = self.allocations.iter().filter(|a| a.payment == p && a.active).map(|a| a.amount).sum();
            if facts.allocated != active {
                return Err(format!("payment {p}: allocated {} but active allocations sum to {active}", facts.allocated));
            }
            if facts.allocated + facts.refunded > facts.amount {
                return Err(format!("P7 broken on payment {p}: {facts:?}"));
            }
            if facts.unallocated() != facts.amount - facts.allocated - facts.refunded {
                return Err(format!("M5 broken on payment {p}"));
            }
            if facts.void && (facts.allocated > Decimal::ZERO || facts.refunded > Decimal::ZERO) {
                return Err(format!("V1 broken on payment {p}"));
            }
        }
        for (i, facts) in self.invoices.iter().enumerate() {
            let paid: Decimal = self.allocations.iter().filter(|a| a.invoice == i && a.active).map(|a| a.amount).sum();
            let credited: Decimal = self.credits.iter().filter(|c| c.invoice == i && c.issued).map(|c| c.total).sum();
            if facts.paid != paid || facts.credited != credited {
                return Err(format!("invoice {i}: stored sums differ from its records"));
            }
            let balance = facts.total - paid - credited;
            if balance < Decimal::ZERO || facts.balance() != balance {
                return Err(format!("M4 broken on invoice {i}: balance {balance}"));
            }
            let paid_status = facts.status == InvoiceStatus::Paid;
            if paid_status != balance.is_zero() {
                return Err(format!("I3 broken on invoice {i}: status {:?} with balance {balance}", facts.status));
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn m4_m5_p7_hold_after_every_operation(ops in proptest::collection::vec(op(), 1..80)) {
        let mut ledger = Ledger::new();
        for (step, op) in ops.iter().enumerate() {
            ledger.apply(op);
            if let Err(broken) = ledger.check() {
                prop_assert!(false, "after step {} ({:?}): {}", step, op, broken);
            }
        }
    }
}
